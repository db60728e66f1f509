"""``gpumeter dlq``: list, count and re-submit dead-lettered usage events."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.clickhouse import Executor
from pipeline.adapters.kafka import make_producer
from pipeline.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # in the dead-letter topic
    offset: int
    timestamp_ms: int  # the original record's time, kept on re-submission
    reason: str
    detail: str
    source: str  # topic/partition/offset it came from
    key: bytes | None
    value: bytes | None


def read_dead_letters(settings: Settings) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic, from the beginning (no consumer group)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        parts = consumer.partitions_for_topic(settings.dlq_topic) or set()
        tps = [TopicPartition(settings.dlq_topic, p) for p in sorted(parts)]
        if not tps:
            return
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {tp.partition for tp in tps if ends[tp] > 0}
        for rec in consumer:
            doc: dict[str, Any] = json.loads(rec.value)
            yield DeadLetter(
                rec.partition,
                rec.offset,
                doc.get("timestamp_ms") or rec.timestamp,
                doc["reason"],
                doc.get("detail", ""),
                f"{doc.get('topic')}/{doc.get('partition')}/{doc.get('offset')}",
                base64.b64decode(doc["key_b64"]) if doc.get("key_b64") else None,
                base64.b64decode(doc["value_b64"]) if doc.get("value_b64") else None,
            )
            if rec.offset >= ends[TopicPartition(rec.topic, rec.partition)] - 1:
                remaining.discard(rec.partition)
            if not remaining:
                break
    finally:
        consumer.close()


def count_by_reason(letters: Iterator[DeadLetter]) -> Counter[str]:
    return Counter(d.reason for d in letters)


def resubmit(
    settings: Settings, ex: Executor, reason: str | None, dry_run: bool = False
) -> tuple[int, int]:
    """Send dead letters' original bytes back to the usage topic (after the cause was fixed,
    e.g. a tenant added to config). Each dead letter is re-submitted at most once; whole
    batch messages are re-sent once even if several of their events were dead-lettered.
    Returns (re-submitted, skipped as already done)."""
    done = {
        (int(p), int(o))
        for p, o in ex.execute(
            "SELECT dlq_partition, dlq_offset FROM dlq_resubmissions FINAL WHERE dlq_topic = %(t)s",
            {"t": settings.dlq_topic},
        )
    }
    todo = [
        d
        for d in read_dead_letters(settings)
        if (reason is None or d.reason == reason) and d.value is not None
    ]
    fresh = [d for d in todo if (d.partition, d.offset) not in done]
    if dry_run or not fresh:
        return len(fresh), len(todo) - len(fresh)
    producer = make_producer(settings.kafka_bootstrap)
    failures: list[BaseException] = []
    sent_sources: set[str] = set()
    try:
        for d in fresh:
            if d.source in sent_sources:  # one message, several dead-lettered events
                continue
            sent_sources.add(d.source)
            producer.send(
                settings.usage_topic, key=d.key, value=d.value, timestamp_ms=d.timestamp_ms
            ).add_errback(failures.append)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(
            f"{len(failures)} re-submissions not acknowledged by Kafka; "
            "nothing was recorded, run again"
        )
    now = datetime.now(UTC)
    ex.insert(
        "dlq_resubmissions",
        ["dlq_topic", "dlq_partition", "dlq_offset", "reason", "resubmitted_at"],
        [(settings.dlq_topic, d.partition, d.offset, d.reason, now) for d in fresh],
    )
    return len(fresh), len(todo) - len(fresh)
