"""The real usage sources through the real Kafka, worker and ClickHouse (issue 13).

* DCGM: recorded exposition texts (both hostname spellings, MIG instances with and without
  pods, a GPU shared by two pods, a hand-over, a counter reset, malformed lines) served over
  HTTP to the real collector, whose scrape instants are known (injected clock); every hourly
  key in ClickHouse equals the intervals observed to the micro-second, a resend of every
  message changes nothing, unattributed usage is on its topic.
* Slurm: a running snapshot and the final accounting (mixed gres forms, requeued job,
  unknown account, DST night) imported through the CLI, the final one twice: exact totals.
* Kafka stopped while collecting (a private broker), then restarted: exact totals.
* The collector SIGKILLed at random moments and restarted: every GPU's intervals are
  contiguous, none lost, none counted twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from devtools.supervise import drain_once, settings_env
from pipeline import cli, dlq
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import ensure_topics
from pipeline.bootstrap import collector_outlet
from pipeline.collectors import loop
from pipeline.collectors.dcgm import DcgmSource, namespace_tenants
from pipeline.collectors.reference import load_collector_reference, resolve_site
from pipeline.collectors.spool import Spool
from pipeline.config import Config
from pipeline.domain.hours import HOUR_US, split_by_hour, to_us
from pipeline.settings import REPO_ROOT, Settings
from tests.fake_exporter import recorded, serving
from tests.private_kafka import PrivateKafka, private_kafka  # noqa: F401 - fixture
from tests.services import drop_database, server_executor

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kafka,
    pytest.mark.clickhouse,
    pytest.mark.slow,
    pytest.mark.collectors,
]
CLUSTER = "northwind-us-east-1-c1"
PLACE = ("us-east-1", "northwind-cloud", CLUSTER)
U0 = "GPU-5fd4a7b0-3c11-8e2a-41f2-6b9e0c1d2a01"
U1 = "GPU-9b2e61c4-7d0a-4f55-b8e3-1a2c3d4e5f02"

Interval = tuple[str, str, str, str, int, int, int]  # tenant, project, model, mig, count, s, e


def hourly(intervals: list[Interval], place: tuple[str, str, str]) -> dict[tuple, int]:
    """The hourly keys ``intervals`` make, computed here from first principles."""
    out: dict[tuple, int] = defaultdict(int)
    for tenant, project, model, mig, count, s, e in intervals:
        for hour_us, us in split_by_hour(s, e):
            out[(tenant, hour_us // 1_000_000, project, model, mig, *place)] += count * us
    return dict(out)


def query(settings: Settings, sql: str) -> list[Any]:
    ex = server_executor(settings)
    try:
        return list(ex.execute(sql))
    finally:
        ex.close()


def migrated(settings: Settings) -> None:
    ex = server_executor(settings)
    migrate(ex)
    ex.close()


@pytest.fixture(autouse=True)
def _drop_database(settings: Settings) -> Any:
    yield
    drop_database(settings)


def stored(settings: Settings) -> dict[tuple, int]:
    rows = query(
        settings,
        "SELECT tenant_id, toUInt32(hour), project_id, gpu_model, mig_profile, region, "
        "provider, cluster, usage_us FROM usage_hourly FINAL",
    )
    return {tuple(int(v) if i == 1 else v for i, v in enumerate(r[:8])): int(r[8]) for r in rows}


def raw_intervals(settings: Settings) -> dict[str, list[tuple[int, int]]]:
    rows = query(
        settings, "SELECT DISTINCT gpu_uuid, event_id, start_us, end_us FROM usage_raw FINAL"
    )
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for gpu, _id, s, e in rows:
        out[gpu].append((int(s), int(e)))
    return {g: sorted(v) for g, v in out.items()}


def topic_events(settings: Settings, topic: str) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
        enable_auto_commit=False,
    )
    try:
        return [e for m in c for e in json.loads(m.value)]
    finally:
        c.close()


def run_worker(settings: Settings) -> None:
    drain_once(settings, settings.out_dir / "worker.log")


def topics(settings: Settings) -> None:
    ensure_topics(
        settings.kafka_bootstrap,
        {
            settings.usage_topic: settings.topic_partitions,
            settings.dlq_topic: 1,
            settings.unattributed_topic: 1,
        },
    )


class FakeTime:
    """Scrape instants chosen by the test: round k of the loop reads ``times[k]``."""

    def __init__(self, times: list[int], on_round: Any = None) -> None:
        self.times, self.k, self.on_round = times, 0, on_round

    def now(self) -> int:
        return self.times[min(self.k, len(self.times) - 1)]

    def sleep(self, _s: float) -> None:
        self.k += 1
        if self.on_round:
            self.on_round(self.k)


def dcgm_loop(
    settings: Settings,
    config: Config,
    urls: list[str],
    clock: FakeTime,
    scrapes: int,
    drain_s: float = 30.0,
) -> loop.LoopStats:
    ref = config.reference
    cref = load_collector_reference(settings.config_dir, ref)
    site = resolve_site("dcgm", CLUSTER, None, None, ref, cref)
    sources = [DcgmSource(u, ref, namespace_tenants(CLUSTER, ref, cref)) for u in urls]
    outlet = collector_outlet(settings, settings.collector_state_dir / "dcgm")
    try:
        return loop.run(
            site,
            sources,
            outlet,
            loop.LoopOptions(interval_s=60, scrapes=scrapes, drain_budget_s=drain_s),
            clock.now,
            clock.sleep,
        )
    finally:
        outlet.close()


def test_dcgm_scrapes_land_in_clickhouse_to_the_microsecond(
    settings: Settings, config: Config
) -> None:
    migrated(settings)
    topics(settings)
    h = to_us(datetime.now(UTC)) // HOUR_US * HOUR_US
    t1, t2, t3 = h - 120_000_000, h + 90_500_001, h + 300_250_000
    with serving({"/a": recorded("node-a"), "/b": recorded("node-b")}) as ex:
        stats = dcgm_loop(
            settings, config, [ex.url("/a"), ex.url("/b")], FakeTime([t1, t2, t3]), scrapes=3
        )
    assert stats.samples == 10 and stats.source_errors == 0 and stats.invalid == 0
    # a producer resend of every message: same identities, counted once
    from kafka import KafkaConsumer, KafkaProducer

    c = KafkaConsumer(
        settings.usage_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=4000,
    )
    again = [(m.key, m.value) for m in c]
    c.close()
    p = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for k, v in again:
        p.send(settings.usage_topic, key=k, value=v)
    p.flush()
    p.close()
    run_worker(settings)

    m12, m23 = t1 + (t2 - t1) // 2, t2 + (t3 - t2) // 2
    expected = [
        ("acme-ai", "acme-ai", "H100", "", 1, t1, t3),
        ("borealis-labs", "borealis-labs", "H100", "", 1, t1 + (t2 - t1) // 2, t3),  # hand-over
        ("team-llm-pretraining", "llm-pretraining", "H100", "3g.40gb", 1, t1, t3),
        ("cobalt-robotics", "cobalt-robotics", "L40S", "", 1, t1, m12),  # time-sliced
        ("cobalt-robotics", "cobalt-robotics", "L40S", "", 1, t2, m23),
        ("delta-genomics", "delta-genomics", "L40S", "", 1, m12, t2),
        ("delta-genomics", "delta-genomics", "L40S", "", 1, m23, t3),
    ]
    assert stored(settings) == hourly(expected, PLACE)
    raw = raw_intervals(settings)
    assert raw[U0] == [(t1, t2), (t2, t3)] and raw[U1] == [(m12, t2), (t2, t3)]
    assert sum(len(v) for v in raw.values()) == 10
    assert list(dlq.read_dead_letters(settings)) == []
    unatt: dict[str, int] = defaultdict(int)
    for e in topic_events(settings, settings.unattributed_topic):
        assert e["type"] == "gpu.unattributed.v1"
        unatt[e["data"]["reason"]] += e["data"]["usage_us"]
    assert dict(unatt) == {"idle": (m12 - t1) + (t3 - t1), "unmapped_namespace": t3 - t1}


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text).replace(tzinfo=UTC))


def test_sacct_running_then_final_imported_twice(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings.model_copy(update={"max_past_age_days": 30_000})
    migrated(settings)
    topics(settings)
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    fix = REPO_ROOT / "tests" / "fixtures" / "sacct"
    args = ["--cluster", "fjord-hpc", "--timezone", "Europe/Oslo", "--wait", "120"]
    for name in ("running.txt", "final.txt", "final.txt"):
        assert cli.main(["import", "sacct", str(fix / name), *args]) == 0
    out = capsys.readouterr()
    assert "unattributed unknown_account 'physics-lab': 12.0000 GPU-hours" in out.err
    assert "unattributed unknown_gpu_model 'gres/gpu:mi300x': 4.0000 GPU-hours" in out.err
    run_worker(settings)

    expected = [
        (
            "team-llm-pretraining",
            "llm",
            "A100",
            "",
            4,
            at("2026-10-07T07:40"),
            at("2026-10-07T10:10:30"),
        ),
        ("team-vision", "vision", "A100", "", 2, at("2026-10-08T06:10"), at("2026-10-08T11:00:05")),
        ("acme-ai", "acme-ai", "H100", "", 1, at("2026-10-09T08:00"), at("2026-10-09T08:45")),
        ("acme-ai", "acme-ai", "H100", "", 1, at("2026-10-09T09:05"), at("2026-10-09T10:20")),
        (
            "team-llm-pretraining",
            "llm",
            "A100",
            "1g.10gb",
            2,
            at("2026-10-24T23:30"),
            at("2026-10-25T02:30"),
        ),
        (
            "borealis-labs",
            "borealis-labs",
            "L40S",
            "",
            1,
            at("2026-10-12T21:50"),
            at("2026-10-12T22:20"),
        ),
        (
            "team-vision",
            "team-vision",
            "A100",
            "",
            4,
            at("2026-10-15T08:15"),
            at("2026-10-15T08:45"),
        ),
    ]
    assert stored(settings) == hourly(expected, ("eu-north-1", "fjord-compute", "fjord-hpc"))
    assert list(dlq.read_dead_letters(settings)) == []
    reasons = {e["data"]["reason"] for e in topic_events(settings, settings.unattributed_topic)}
    assert reasons == {"unknown_account", "unknown_gpu_model"}


def collector_cmd(url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        "collect",
        "dcgm",
        "--url",
        url,
        "--cluster",
        CLUSTER,
        *extra,
    ]


def assert_contiguous(settings: Settings, at_least: int) -> dict[str, list[tuple[int, int]]]:
    """Every GPU's intervals follow each other without a hole or an overlap, and ClickHouse's
    hourly total is exactly their sum."""
    raw = raw_intervals(settings)
    assert set(raw) == {U0, U1}
    for gpu, spans in raw.items():
        assert len(spans) >= at_least, (gpu, spans)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), (gpu, spans)
    assert sum(stored(settings).values()) == sum(v[-1][1] - v[0][0] for v in raw.values())
    return raw


def test_kafka_stopped_while_collecting_then_restarted(
    settings: Settings,
    private_kafka: PrivateKafka,  # noqa: F811
) -> None:
    settings = settings.model_copy(update={"kafka_bootstrap": private_kafka.bootstrap})
    migrated(settings)
    topics(settings)
    env = {**os.environ, **settings_env(settings)}
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.out_dir / "collector.log"
    with serving({"/a": recorded("node-a")[1:2]}) as ex, log_path.open("ab") as log:
        proc = subprocess.Popen(
            collector_cmd(ex.url("/a"), "--interval", "0.5", "--scrapes", "70"),
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            time.sleep(8)
            private_kafka.stop()  # while the collector scrapes on
            time.sleep(8)
            private_kafka.start()
            assert proc.wait(180) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()
    assert "no Kafka broker answers" in text and "Kafka reachable again" in text
    assert "collect dcgm: scrapes=70 samples=138" in text
    spool = Spool(
        settings.collector_state_dir / f"dcgm-{CLUSTER}" / "spool", settings.spool_max_bytes
    )
    assert spool.pending_bytes() == 0  # everything spooled during the outage was sent
    run_worker(settings)
    raw = assert_contiguous(settings, at_least=69)
    assert all(len(v) == 69 for v in raw.values())


def test_sigkill_at_any_moment_loses_no_observed_interval(settings: Settings) -> None:
    migrated(settings)
    topics(settings)
    rng = random.Random(13)
    env = {**os.environ, **settings_env(settings)}
    with serving({"/a": recorded("node-a")[1:2]}) as ex:
        cmd = collector_cmd(ex.url("/a"), "--interval", "0.3")
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        log = (settings.out_dir / "collector.log").open("ab")
        for i in range(4):
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
            time.sleep(3.0 + rng.random() * 2.5)  # start-up, then some scrapes
            proc.send_signal(signal.SIGKILL if i < 3 else signal.SIGTERM)
            assert proc.wait(30) in (-signal.SIGKILL, 0)
        log.close()
    run_worker(settings)
    assert_contiguous(settings, at_least=8)
