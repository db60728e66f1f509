"""The bench's stateless floor on the real broker and ClickHouse server: it drains the whole
topic through the worker's decoder and row builder, inserts every sample once and commits every
offset; a topic holding a message the worker would reject is refused, not measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.bench.floor import stateless_floor
from devtools.sim.run import publish
from pipeline.adapters.kafka import QUICK_CLIENT, make_producer
from pipeline.bootstrap import executor
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


def _committed(settings: Settings, group: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, **QUICK_CLIENT
    )
    try:
        parts = consumer.partitions_for_topic(settings.usage_topic) or set()
        return sum(consumer.committed(TopicPartition(settings.usage_topic, p)) or 0 for p in parts)
    finally:
        consumer.close()


def test_the_floor_inserts_every_sample_once_and_commits_every_offset(
    settings: Settings, config: Config, tmp_path: Path
) -> None:
    sim = publish(settings, config, Period.parse("2026-10"), nodes=2, interval_s=3600, seed=5)
    scratch = settings.isolated(settings.worker_id.rsplit("-", 1)[-1] + "z", tmp_path / "z")
    floor = stateless_floor(settings, scratch, config)
    assert floor.samples == sim.samples > 0
    assert floor.samples_per_s > 0
    assert set(floor.cpu_us_per_sample) >= {"worker", "total"}
    ex = executor(scratch)
    try:
        ((rows, ids),) = ex.execute(
            "SELECT count(), uniqExact(event_source, event_id) FROM usage_raw"
        )
    finally:
        ex.execute(f"DROP DATABASE IF EXISTS {scratch.clickhouse_database}")
        ex.close()
    assert rows == ids == sim.samples
    assert _committed(settings, f"{scratch.worker_id}-floor") == sim.messages


def test_a_topic_with_a_rejected_message_is_refused(
    settings: Settings, config: Config, tmp_path: Path
) -> None:
    publish(settings, config, Period.parse("2026-10"), nodes=2, interval_s=3600, seed=5)
    producer = make_producer(settings.kafka_bootstrap)
    producer.send(settings.usage_topic, key=b"acme", value=b"{not json").get(timeout=30)
    producer.close()
    scratch = settings.isolated(settings.worker_id.rsplit("-", 1)[-1] + "y", tmp_path / "y")
    try:
        with pytest.raises(RuntimeError, match="bench message rejected"):
            stateless_floor(settings, scratch, config)
    finally:
        ex = executor(scratch)
        ex.execute(f"DROP DATABASE IF EXISTS {scratch.clickhouse_database}")
        ex.close()
