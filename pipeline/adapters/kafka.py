"""Kafka through kafka-python: topics, a durable keyed producer, and consumer-group lag."""

from __future__ import annotations

from typing import Any


def _kafka() -> Any:
    try:
        import kafka
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("kafka-python is not installed: pip install kafka-python") from exc
    return kafka


# The usage topic is the source of truth for replays and audits: records keep their event-time
# timestamps (a simulated month lies in the past), so time-based retention is switched off.
TOPIC_CONFIG = {"retention.ms": "-1"}


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java clients, kafka-python) gives ``key``:
    ``murmur2(key) & 0x7fffffff`` modulo the partition count."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def ensure_topics(
    bootstrap: str, topics: dict[str, int], config: dict[str, str] | None = None
) -> list[str]:
    """Create missing topics (name -> partitions), kept without time-based retention unless
    ``config`` says otherwise; returns those created."""
    kafka = _kafka()
    from kafka.admin import NewTopic

    admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, client_id="gpumeter-admin")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(n, p, 1, topic_configs=dict(config or TOPIC_CONFIG))
            for n, p in topics.items()
            if n not in existing
        ]
        if new:
            admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()


# Short-lived clients (lag checks, admin reads) must not hang on a broker that just restarted:
# kafka-python's default request timeout is ~5 minutes.
QUICK_CLIENT = {
    "request_timeout_ms": 10_000,
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 2_000,
}


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """acks=all and idempotence: a broker failover neither loses nor duplicates a send."""
    kafka = _kafka()
    conf: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "max_request_size": 2 * 1024 * 1024,
        "retries": 10,
        "enable_idempotence": True,
        "client_id": "gpumeter-producer",
    }
    conf.update(overrides)
    return kafka.KafkaProducer(**conf)


def partition_lags(bootstrap: str, group: str, topic: str) -> list[tuple[int, int, int]]:
    """``(partition, committed offset, end offset)`` of a topic for a consumer group."""
    kafka = _kafka()
    from kafka.structs import TopicPartition

    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **QUICK_CLIENT
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        wait = QUICK_CLIENT["request_timeout_ms"]  # without one, retriable errors loop for ever
        ends = consumer.end_offsets(tps, timeout_ms=wait)
        return [
            (tp.partition, consumer.committed(tp, timeout_ms=wait) or 0, ends[tp]) for tp in tps
        ]
    finally:
        consumer.close()


def partition_count(bootstrap: str, topic: str) -> int | None:
    """How many partitions ``topic`` has; ``None`` when it does not exist yet."""
    kafka = _kafka()
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, **QUICK_CLIENT)
    try:
        parts = consumer.partitions_for_topic(topic)
        return len(parts) if parts else None
    finally:
        consumer.close()


def group_lag(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(committed offsets summed, messages not yet committed by the group) for a topic."""
    rows = partition_lags(bootstrap, group, topic)
    return sum(c for _, c, _ in rows), sum(max(0, e - c) for _, c, e in rows)


def group_members(bootstrap: str, group: str, topic: str) -> list[tuple[str, str, list[int]]]:
    """``(member id, host, partitions of ``topic`` assigned to it)`` of each member of a
    consumer group."""
    kafka = _kafka()
    admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        info = admin.describe_groups([group]).get(group, {})
    finally:
        admin.close()
    out = []
    for m in info.get("members") or []:
        assignment = m.get("member_assignment")
        owned = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
        parts = sorted(int(p) for a in owned if a.get("topic") == topic for p in a["partitions"])
        out.append((str(m.get("member_id", "")), str(m.get("client_host", "")).lstrip("/"), parts))
    return sorted(out, key=lambda r: (r[1], r[2], r[0]))


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    kafka = _kafka()
    from kafka.structs import TopicPartition

    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, **QUICK_CLIENT)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps, timeout_ms=QUICK_CLIENT["request_timeout_ms"])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        consumer.close()
