"""The worker's Prometheus endpoint during a real run, parsed with the Prometheus client's own
parser, and ``gpumeter status`` on the same group."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.sim.run import publish
from devtools.supervise import start_worker, stop_worker, wait_drained
from pipeline.adapters.clickhouse import migrate
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings
from pipeline.status import group_status, render
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

FAMILIES = {
    "gpumeter_messages": "counter",
    "gpumeter_samples": "counter",
    "gpumeter_duplicates": "counter",
    "gpumeter_dead_letters": "counter",
    "gpumeter_batch_seconds": "histogram",
    "gpumeter_stage_seconds": "counter",
    "gpumeter_clickhouse_flush_seconds": "histogram",
    "gpumeter_clickhouse_retries": "counter",
    "gpumeter_dedupe_buckets_written": "counter",
    "gpumeter_consumer_lag": "gauge",
    "gpumeter_last_committed_offset": "gauge",
    "gpumeter_last_batch_timestamp_seconds": "gauge",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def families(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def total(fam: object) -> float:
    return sum(s.value for s in fam.samples if s.name.endswith("_total"))  # type: ignore[attr-defined]


def test_metrics_scraped_during_a_real_run_and_status(settings: Settings, config: Config) -> None:
    settings = settings.model_copy(update={"metrics_port": free_port()})
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    ex = server_executor(settings)
    migrate(ex)
    sim = publish(
        settings, config, Period.parse("2026-10"), nodes=3, interval_s=1800, seed=5,
        bad_every=50, progress=False,
    )  # fmt: skip
    worker = start_worker(settings, settings.out_dir / "worker.log")
    try:
        seen_during: dict[str, object] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # scrape while the worker is still consuming
            try:
                seen_during = families(url)
            except OSError:
                time.sleep(0.2)
                continue
            if total(seen_during["gpumeter_messages"]) > 0:
                break
            time.sleep(0.2)
        assert {n: f.type for n, f in seen_during.items() if n in FAMILIES} == FAMILIES  # type: ignore[attr-defined]
        wait_drained(settings, worker, timeout=300, progress=False)
        time.sleep(6)  # one more tick of the 5 s gauges after the last commit
        after = families(url)
        assert total(after["gpumeter_samples"]) == sim.samples
        assert total(after["gpumeter_messages"]) == sim.messages + sim.bad_messages
        dead = {s.labels["reason"]: s.value for s in after["gpumeter_dead_letters"].samples}  # type: ignore[attr-defined]
        assert sum(dead.values()) == sim.bad_messages > 0
        stages = {s.labels["stage"] for s in after["gpumeter_stage_seconds"].samples}  # type: ignore[attr-defined]
        assert stages == {
            "decode",
            "rows",
            "recall",
            "fold",
            "state",
            "insert",
            "checkpoint",
            "commit",
        }
        lags = [s.value for s in after["gpumeter_consumer_lag"].samples]  # type: ignore[attr-defined]
        assert len(lags) == settings.topic_partitions and set(lags) == {0}

        st = group_status(settings, [url], window_s=0.5)
        screen = render(st)
        assert st.lag == 0 and st.healthy, screen
        (w,) = st.workers
        assert w.health == "ok" and w.samples_total == sim.samples
        assert sorted(w.partitions) == list(range(settings.topic_partitions)), screen
    finally:
        stop_worker(worker)
        ex.close()
        drop_database(settings)


def test_status_reports_an_unreachable_worker(settings: Settings) -> None:
    from pipeline.adapters.kafka import ensure_topics

    ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: settings.topic_partitions})
    st = group_status(settings, [f"http://127.0.0.1:{free_port()}/metrics"], window_s=0.1)
    assert [w.health for w in st.workers] == ["unreachable"] and not st.healthy
    assert "unreachable" in render(st)


def test_status_without_workers_is_ok_only_when_nothing_waits(settings: Settings) -> None:
    from pipeline.adapters.kafka import ensure_topics, make_producer

    ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: settings.topic_partitions})
    idle = group_status(settings, window_s=0.1)
    assert (idle.workers, idle.lag, idle.healthy) == ([], 0, True)
    producer = make_producer(settings.kafka_bootstrap)
    producer.send(settings.usage_topic, key=b"acme-ai", value=b"{}")
    producer.flush()
    producer.close()
    waiting = group_status(settings, window_s=0.1)
    assert (waiting.workers, waiting.lag, waiting.healthy) == ([], 1, False)
    assert "workers=0" in render(waiting)
