"""The stateless floor: what one Python process does with only the unavoidable per-sample work.

Reads the bench topic with the worker's client and fetch sizes, decodes every message with the
worker's own decoder (:func:`pipeline.domain.events.decode_message`: validation and reference
checks), builds every ``usage_raw`` row with the worker's row builder
(:func:`pipeline.worker.sink.raw_head`), inserts them into a database of its own and commits
the offsets after each insert. Nothing else: no dedupe memory, no hourly aggregates, no
changelog, no recall, no dead letters (the bench topic has none).

This is not a way to run the pipeline (it would double-count a replay); it bounds from above
what any design of one worker process can reach with these libraries on this machine, since
every design must at least consume, validate, build and insert each sample. Its CPU per
sample, with the broker's and ClickHouse's, bounds what the machine's cores can reach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from devtools.bench.cpu import cpu_seconds, per_sample, service_pids
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import QUICK_CLIENT
from pipeline.bootstrap import executor
from pipeline.config import Config
from pipeline.domain.events import DecodeLimits, decode_message
from pipeline.settings import Settings
from pipeline.worker.runtime import POLL_RECORDS
from pipeline.worker.sink import RAW_COLUMNS, now_seconds, raw_head


@dataclass
class Floor:
    samples: int
    seconds: float
    cpu_us_per_sample: dict[str, float]  # this process ("worker"), kafka, clickhouse, total

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


def stateless_floor(topic: Settings, scratch: Settings, config: Config) -> Floor:
    """Drain ``topic``'s usage topic (from the beginning, its own group) into ``scratch``'s
    database, in batches of at most ``scratch.sink_batch_samples`` messages."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    ex = executor(scratch)
    migrate(ex)
    consumer = KafkaConsumer(
        bootstrap_servers=topic.kafka_bootstrap,
        group_id=f"{scratch.worker_id}-floor",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **QUICK_CLIENT,
    )
    services = service_pids()
    limits = DecodeLimits(max_message_bytes=scratch.max_message_bytes)
    try:
        tps = [
            TopicPartition(topic.usage_topic, p)
            for p in consumer.partitions_for_topic(topic.usage_topic) or set()
        ]
        total = sum(consumer.end_offsets(tps).values())
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        before = {k: cpu_seconds(p) for k, p in services.items()}
        mine = time.process_time()
        started = time.monotonic()
        done = samples = 0
        while done < total:
            now = datetime.now(UTC)
            now_s = now_seconds(now)
            rows: list[tuple[object, ...]] = []
            ends: dict[TopicPartition, OffsetAndMetadata] = {}
            batch = 0
            while batch < scratch.sink_batch_samples and done + batch < total:
                polled = consumer.poll(timeout_ms=250, max_records=POLL_RECORDS)
                if not polled:
                    break
                for tp, records in polled.items():
                    for r in records:
                        got, rejects = decode_message(r.value, config.reference, now, limits)
                        if rejects:  # the floor would then skip work the worker does
                            raise RuntimeError(f"bench message rejected: {rejects[0]}")
                        for s in got:
                            rows.append((*raw_head(s, r.partition, r.offset, now_s), 0))
                    batch += len(records)
                    ends[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            ex.insert("usage_raw", RAW_COLUMNS, rows)
            if ends:
                consumer.commit(ends)
            done += batch
            samples += len(rows)
        seconds = time.monotonic() - started
        used = {"worker": time.process_time() - mine}
        used.update({k: cpu_seconds(p) - before[k] for k, p in services.items()})
        return Floor(samples, seconds, per_sample(used, samples))
    finally:
        consumer.close()
        ex.close()
