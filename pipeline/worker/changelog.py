"""The state's changelog topics in Kafka: written once per changed key per checkpoint, read back
to the end when a partition is assigned (:mod:`pipeline.worker.runtime`).

One compacted topic per table, ``<worker_id>-<table>-changelog``, with as many partitions as
the usage topic: partition ``p`` of a changelog holds the state of usage partition ``p``. A
record is ``key -> value``; a tombstone (no value) deletes the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.adapters.kafka import QUICK_CLIENT, ensure_topics
from pipeline.settings import Settings
from pipeline.worker.store import PartitionedStore
from pipeline.worker.tables import STATE_TABLES as TABLES

log = logging.getLogger("gpumeter.changelog")

COMPACTED = {"cleanup.policy": "compact", "retention.ms": "-1"}
FETCH_BYTES = 16 * 1024 * 1024


def topic(settings: Settings, table: str) -> str:
    return f"{settings.worker_id}-{table}-changelog"


def ensure(settings: Settings, max_backoff_s: float = 10.0) -> None:
    """Create the changelog topics (compacted) and the dead-letter topic when missing (another
    worker creating them at the same time is no error). A broker that does not answer (a
    restart) is waited for, with backoff, rather than failing the worker's start."""
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    delay = 0.5
    for topics, config in (
        ({topic(settings, t): settings.topic_partitions for t in TABLES}, COMPACTED),
        ({settings.dlq_topic: settings.topic_partitions}, None),
    ):
        while True:
            try:
                ensure_topics(settings.kafka_bootstrap, topics, config=config)
                break
            except TopicAlreadyExistsError:
                break
            except KafkaError as exc:
                names = ", ".join(topics)
                log.warning(
                    "Kafka not reachable to check %s (%s); again in %.1fs", names, exc, delay
                )
                time.sleep(delay)
                delay = min(2 * delay, max_backoff_s)


def end_offsets(
    consumer: Any, topics: Iterable[str], partitions: Iterable[int]
) -> dict[tuple[str, int], int]:
    from kafka.structs import TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in partitions]
    if not tps:
        return {}
    wait = QUICK_CLIENT["request_timeout_ms"]
    return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(tps, wait).items()}


def ends(settings: Settings, partitions: Iterable[int]) -> dict[tuple[str, int], int]:
    """Where each table's changelog partitions end now."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **QUICK_CLIENT)
    try:
        return end_offsets(consumer, [topic(settings, t) for t in TABLES], partitions)
    finally:
        consumer.close()


def recover(
    settings: Settings,
    stores: dict[str, PartitionedStore],
    partitions: list[int],
    remaining: Callable[[int], None],
) -> dict[tuple[str, int], int]:
    """Read partitions ``partitions`` of every table's changelog from the beginning to its end
    into the stores (dropping what they held of them); ``remaining(n)`` is told how many records
    are left, as they are read. Returns each changelog partition's end offset."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=4 * FETCH_BYTES,
        client_id=f"{settings.worker_id}-recovery",
        request_timeout_ms=QUICK_CLIENT["request_timeout_ms"],
    )
    try:
        by_topic = {topic(settings, t): stores[t] for t in TABLES}
        ends = end_offsets(consumer, by_topic, partitions)
        tps = [TopicPartition(t, p) for t, p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for p in partitions:
            for store in stores.values():
                store.drop(p)
                store.hold(p)
        left = {tp: ends[(tp.topic, tp.partition)] - consumer.position(tp) for tp in tps}
        started = time.monotonic()
        while True:
            open_tps = [tp for tp in tps if left[tp] > 0]
            remaining(sum(left[tp] for tp in open_tps))
            if not open_tps:
                break
            for tp, records in consumer.poll(timeout_ms=1000, max_records=100_000).items():
                store = by_topic[tp.topic]
                end = ends[(tp.topic, tp.partition)]
                for r in records:
                    if r.offset < end:
                        store.restore(tp.partition, r.key, r.value)
                left[tp] = end - consumer.position(tp)
        log.info(
            "recovered partitions=%s from changelog: %s in %.1fs",
            ",".join(map(str, partitions)),
            " ".join(
                f"{t}={sum(len(s.keys_in(p)) for p in partitions)}" for t, s in stores.items()
            ),
            time.monotonic() - started,
        )
        return ends
    finally:
        consumer.close()


class Checkpoint:
    """Sends the state's changes and the dead letters, and waits until Kafka has them all."""

    def __init__(self, settings: Settings, producer: Any) -> None:
        self.settings = settings
        self.producer = producer
        self.pending: list[tuple[tuple[str, int | None, bytes | None, bytes | None], Any]] = []
        self.written_to: dict[tuple[str, int], int] = {}  # changelog partition -> end offset
        self.max_backoff_s = 10.0

    def send(
        self, topic: str, partition: int | None, key: bytes | None, value: bytes | None
    ) -> None:
        record = (topic, partition, key, value)
        fut = self.producer.send(topic, key=key, value=value, partition=partition)
        self.pending.append((record, fut))

    def dead_letter(self, key: bytes | None, value: bytes) -> None:
        self.send(self.settings.dlq_topic, None, key, value)

    def state(self, stores: dict[str, PartitionedStore]) -> int:
        """Queue every changed key of every store; returns how many records."""
        n = 0
        for table, store in stores.items():
            name = topic(self.settings, table)
            for partition, changed in store.changes().items():
                for key, value in changed.items():
                    self.send(name, partition, key, value)
                    n += 1
            store.checkpointed()
        return n

    def flush(self) -> None:
        """Until Kafka has acknowledged every record sent: failed sends are sent again (a
        record sent twice is harmless: the changelog keeps a key's last value, the dead-letter
        topic is at-least-once), with backoff while the broker is away."""
        delay = 0.25
        while self.pending:
            self.producer.flush()
            failed = []
            for record, fut in self.pending:
                try:
                    md = fut.get(timeout=0)
                except Exception as exc:  # noqa: BLE001 - sent again until Kafka has it
                    failed.append((record, exc))
                    continue
                if record[1] is not None:
                    key = (md.topic, md.partition)
                    self.written_to[key] = max(self.written_to.get(key, 0), md.offset + 1)
            self.pending = []
            if failed:
                log.warning(
                    "Kafka refused %d checkpoint records (%s); sending again in %.1fs",
                    len(failed),
                    failed[0][1],
                    delay,
                )
                time.sleep(delay)
                delay = min(2 * delay, self.max_backoff_s)
                for (t, p, k, v), _ in failed:
                    self.send(t, p, k, v)
