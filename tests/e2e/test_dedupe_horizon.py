"""The dedupe memory forgets what is older than its horizon, and still never counts a copy
twice (issue 12), on the real stack: the worker's state, its changelog topics, ClickHouse.

A foreign producer sets record times itself. With a one-hour horizon, a record at 14:11 moves
the partition's floor to 13:00 and the bucket of an event that started at 09:55 is deleted.
The worker is then SIGKILLed and a new one starts with nothing in memory, so its memory
(floor included) comes back only from the changelog. A copy of the 09:55 event sent now is
below the floor: it is recalled from ClickHouse and skipped; a never-seen 09:55 event is
counted; a copy of the 14:00 event is still caught by the memory.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.supervise import drain_once, start_worker, wait_drained
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import ensure_topics
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

DAY = datetime(2026, 10, 7, tzinfo=UTC)
TEN_MIN_US = 600_000_000


def event(i: int, start: datetime) -> bytes:
    data: dict[str, Any] = {
        "tenant_id": "acme-ai",
        "cluster": "northwind-us-east-1-c1",
        "region": "us-east-1",
        "provider": "northwind-cloud",
        "node": "foreign-node-1",
        "gpu_uuid": f"GPU-{i}",
        "gpu_model": "H100",
        "gpu_count": 1,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=10)).isoformat(),
    }
    return json.dumps(
        {"specversion": "1.0", "id": f"ev-{i}", "source": "//kcat/foreign",
         "type": "gpu.usage.v1", "data": data}
    ).encode()  # fmt: skip


def produce(settings: Settings, records: list[tuple[bytes, datetime]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for value, at in records:
        producer.send(
            settings.usage_topic,
            key=b"acme-ai",
            value=value,
            timestamp_ms=int(at.timestamp() * 1000),
        )
    producer.flush()
    producer.close()


def test_copies_past_the_horizon_are_not_counted_after_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"dedupe_horizon_s": 3600})
    ex = server_executor(settings)
    migrate(ex)
    ensure_topics(
        settings.kafka_bootstrap,
        {settings.usage_topic: settings.topic_partitions, settings.dlq_topic: 1},
    )
    early, late = DAY.replace(hour=9, minute=55), DAY.replace(hour=14)
    produce(
        settings,
        [
            (event(0, early), DAY.replace(hour=10, minute=6)),
            (event(1, late), late + timedelta(minutes=11)),
        ],
    )
    first = start_worker(settings, tmp_path / "worker-1.log")
    try:
        wait_drained(settings, first, timeout=300, progress=False)
    finally:
        first.kill()  # SIGKILL: nothing is flushed on the way out
        first.wait()

    produce(
        settings,
        [
            (event(0, early), late + timedelta(minutes=12)),  # a copy, below the floor
            (event(2, early), late + timedelta(minutes=12)),  # never seen, below the floor
            (event(1, late), late + timedelta(minutes=13)),  # a copy, still in memory
        ],
    )
    fresh = settings.model_copy(update={"worker_data_dir": tmp_path / "fresh"})
    log = drain_once(fresh, tmp_path / "worker-2.log")

    ids = ex.execute("SELECT event_id FROM usage_raw FINAL ORDER BY event_id")
    assert [r[0] for r in ids] == ["ev-0", "ev-1", "ev-2"]
    total = ex.execute("SELECT sum(usage_us) FROM usage_hourly FINAL WHERE tenant_id = 'acme-ai'")
    assert int(total[0][0]) == 3 * TEN_MIN_US  # each event once, 10 minutes each
    assert "exiting" not in log and "batch processing failed" not in log
    ex.close()
    drop_database(settings)
