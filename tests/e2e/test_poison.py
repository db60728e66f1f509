"""One bad event never stops metering (issue 9), on the real stack.

A foreign producer (plain kafka-python, no gpumeter code) sends to one tenant's partition: the
event that once stopped the worker for good (``project_id = "a|b"``, now a valid name that must
be kept byte for byte), an event with a control character, one on an unknown region, one whose
row no ClickHouse DateTime can hold (``processing_error``), and ordinary events between and
after them. The worker must count every valid one to the micro-second, dead-letter each bad one
with its reason, and never exit.

A second test points the worker at a ClickHouse database that does not exist: a permanent
error, which the worker must report with the server's message and exit 78 on, at once.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.supervise import drain_once, start_worker, stop_worker
from pipeline import dlq
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import ensure_topics
from pipeline.adapters.store import Store
from pipeline.billing.trace import trace_line
from pipeline.bootstrap import billing_run, ledger
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

START = datetime(2026, 10, 7, 9, 55, tzinfo=UTC)  # 5 min before 10:00 and 5 after
BILLED_AT = datetime(2026, 11, 2, tzinfo=UTC)  # inside the draft grace: drafts, no Stripe


def event(i: int, start: datetime = START, **data: Any) -> dict[str, Any]:
    d = {
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
        **data,
    }
    return {
        "specversion": "1.0",
        "id": f"ev-{i}",
        "source": "//kcat/foreign",
        "type": "gpu.usage.v1",
        "data": d,
    }


def produce(settings: Settings, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    ensure_topics(
        settings.kafka_bootstrap,
        {settings.usage_topic: settings.topic_partitions, settings.dlq_topic: 1},
    )
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for v in values:
        producer.send(settings.usage_topic, key=b"acme-ai", value=v)
    producer.flush()
    producer.close()


def test_poison_events_are_dead_lettered_and_the_partition_goes_on(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_past_age_days": 30_000})
    ex = server_executor(settings)
    migrate(ex)
    values = [
        json.dumps(event(1, project_id="a|b")).encode(),  # stopped the worker before issue 9
        json.dumps(event(2)).encode(),
        json.dumps(event(3, project_id="bad\u0000name")).encode(),  # control character
        json.dumps(event(4, region="mars-1")).encode(),  # no partner has it
        json.dumps(event(5, start=datetime(1969, 12, 31, 22, tzinfo=UTC))).encode(),
        json.dumps([event(6), event(7, project_id='Ünïcødé|"q"\\')]).encode(),
        b'{"specversion": "1.0", "id": "x", "data": ',  # truncated
        json.dumps(event(8)).encode(),
    ]
    produce(settings, values)
    text = drain_once(settings, settings.out_dir / "worker.log")
    assert "exiting" not in text and "batch processing failed" not in text

    rows = ex.execute(
        "SELECT project_id, toUInt32(hour), usage_us FROM usage_hourly FINAL "
        "WHERE tenant_id = 'acme-ai' ORDER BY project_id, hour"
    )
    h9 = int(START.replace(minute=0).timestamp())
    five = 300_000_000
    by_project: dict[str, int] = {}
    for project, _hour, usage in rows:
        by_project[project] = by_project.get(project, 0) + int(usage)
    assert by_project == {
        "": 3 * 2 * five,  # events 2, 6 and 8
        'Ünïcødé|"q"\\': 2 * five,  # event 7
        "a|b": 2 * five,  # event 1
    }
    assert {int(r[1]) for r in rows} == {h9, h9 + 3600}  # every event: 5 min in each hour
    assert all(int(usage) % five == 0 for _, _, usage in rows)
    ids = ex.execute("SELECT event_id, project_id FROM usage_raw FINAL ORDER BY event_id")
    assert ids == [
        ("ev-1", "a|b"),
        ("ev-2", ""),
        ("ev-6", ""),
        ("ev-7", 'Ünïcødé|"q"\\'),
        ("ev-8", ""),
    ]
    # the names come back byte for byte through billing's lineage and `invoices trace`
    st = Store(ex)
    billing_run(settings, Config.load(settings.config_dir), st, clock=lambda: BILLED_AT).run(
        Period.parse("2026-10")
    )
    lg = ledger(st)
    (inv,) = lg.invoices("2026-10", "acme-ai")
    traced: dict[str, set[str]] = {}
    for line in lg.lines(inv.invoice_id, inv.revision):
        if line["kind"] == "usage":
            tr = trace_line(lg, st, f"{inv.invoice_id}/{line['line_key']}")
            for r in tr.rows:
                traced.setdefault(r["project_id"], set())
            for e in tr.events:
                traced.setdefault(e["project_id"], set()).add(e["event_id"])
    assert traced == {
        "": {"ev-2", "ev-6", "ev-8"},
        'Ünïcødé|"q"\\': {"ev-7"},
        "a|b": {"ev-1"},
    }

    dead = sorted((d.source.rsplit("/", 1)[1], d.reason) for d in dlq.read_dead_letters(settings))
    assert dead == [
        ("2", "invalid_data"),
        ("3", "unknown_region"),
        ("4", "processing_error"),
        ("6", "malformed_json"),
    ]
    ex.close()
    drop_database(settings)


def test_a_permanent_clickhouse_error_stops_the_worker_loudly(settings: Settings) -> None:
    broken = settings.model_copy(update={"clickhouse_database": "gpumeter_no_such_database"})
    produce(broken, [json.dumps(event(1)).encode()])
    log = broken.out_dir / "worker.log"
    worker = start_worker(broken, log)
    try:
        deadline = time.monotonic() + 120
        while worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert worker.returncode == 78
    finally:
        stop_worker(worker)
    text = log.read_text()
    assert "ClickHouse refuses the worker's writes" in text
    assert "gpumeter_no_such_database" in text  # the server's own message


def test_a_partition_count_other_than_the_topics_is_refused_at_start(settings: Settings) -> None:
    """With a wrong ``GPUMETER_TOPIC_PARTITIONS`` the worker would dead-letter most messages as
    ``wrong_partition``; it refuses to start instead, and says which setting to change."""
    ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: 2})
    wrong = settings.model_copy(update={"topic_partitions": 4})
    log = wrong.out_dir / "worker.log"
    worker = start_worker(wrong, log)
    try:
        assert worker.wait(120) == 78
    finally:
        stop_worker(worker)
    text = log.read_text()
    assert f"topic {settings.usage_topic} has 2 partitions but GPUMETER_TOPIC_PARTITIONS=4" in text


def test_a_message_in_another_partition_than_its_key_is_dead_lettered(settings: Settings) -> None:
    """A producer with another partitioner than Kafka's murmur2 (librdkafka's default is
    CRC32) would put a tenant in two partitions, owned by two workers writing diverging
    absolute values for the same hourly key. The worker refuses such a message as
    ``wrong_partition``; the same tenant's messages in the right partition are counted."""
    from kafka import KafkaProducer

    from pipeline.adapters.kafka import default_partition

    ex = server_executor(settings)
    migrate(ex)
    ensure_topics(
        settings.kafka_bootstrap,
        {settings.usage_topic: settings.topic_partitions, settings.dlq_topic: 1},
    )
    home = default_partition(b"acme-ai", settings.topic_partitions)
    other = (home + 1) % settings.topic_partitions
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    producer.send(
        settings.usage_topic, key=b"acme-ai", value=json.dumps(event(1)).encode(), partition=other
    )
    producer.send(settings.usage_topic, key=b"acme-ai", value=json.dumps(event(2)).encode())
    producer.flush()
    producer.close()
    drain_once(settings, settings.out_dir / "worker.log")
    ids = ex.execute("SELECT event_id FROM usage_raw FINAL")
    assert ids == [("ev-2",)]
    dead = [(d.reason, d.source.split("/")[-2]) for d in dlq.read_dead_letters(settings)]
    assert dead == [("wrong_partition", str(other))]
    ex.close()
    drop_database(settings)
