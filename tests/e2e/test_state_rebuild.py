"""A worker whose state is gone (changelog topics deleted, or a worker from before them) while
its group has committed offsets must not continue from those offsets on an empty state: it
would write hourly values counted from zero over the right ones. It reads the partitions again
from their beginning, so a sample arriving afterwards adds to the full value. Real stack."""

from __future__ import annotations

import json
import time

import pytest

from devtools.sim.run import publish
from devtools.supervise import drain_once
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import make_producer
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings
from pipeline.worker import changelog
from tests.services import server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

HOURLY = (
    "SELECT tenant_id, toUInt32(hour), project_id, gpu_model, mig_profile, region, provider, "
    "cluster, usage_us FROM usage_hourly FINAL"
)


def test_a_worker_without_state_reads_its_partitions_again(
    settings: Settings, config: Config
) -> None:
    from kafka import KafkaAdminClient

    ex = server_executor(settings)
    migrate(ex)
    sim = publish(
        settings, config, Period.parse("2026-10"), nodes=3, interval_s=1800, seed=8,
        progress=False,
    )  # fmt: skip
    drain_once(settings, settings.out_dir / "worker-1.log", timeout=300)
    before = {tuple(r[:8]): int(r[8]) for r in ex.execute(HOURLY)}
    assert sum(before.values()) > 0 and sim.samples > 1000

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:  # the state is lost; the group's offsets stay at the end of the topic
        admin.delete_topics([changelog.topic(settings, t) for t in changelog.TABLES])
    finally:
        admin.close()
    time.sleep(2)

    key = sorted(before)[len(before) // 2]
    tenant, hour_s, project, model, mig, region, provider, cluster = key
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(hour_s) + 60))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(hour_s) + 120))
    event = {
        "specversion": "1.0", "id": "after-the-loss", "source": "//rebuild/n9",
        "type": "gpu.usage.v1",
        "data": {
            "tenant_id": tenant, "project_id": project, "cluster": cluster, "region": region,
            "provider": provider, "node": "n9", "gpu_uuid": "GPU-9", "gpu_model": model,
            "mig_profile": mig, "gpu_count": 1, "start": start, "end": end,
        },
    }  # fmt: skip
    producer = make_producer(settings.kafka_bootstrap)
    try:
        producer.send(settings.usage_topic, key=tenant.encode(), value=json.dumps(event).encode())
        producer.flush()
    finally:
        producer.close()

    log = drain_once(settings, settings.out_dir / "worker-2.log", timeout=300)
    assert "no state in the changelog" in log
    after = {tuple(r[:8]): int(r[8]) for r in ex.execute(HOURLY)}
    ex.close()
    assert after == {**before, key: before[key] + 60_000_000}
