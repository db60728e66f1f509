"""ClickHouse sink for the stream worker.

Write order (the contract, numbered as in :func:`pipeline.worker.app.process_batch`):

1. The agent takes a batch of Kafka messages and decodes them; rejects go to the dead-letter
   topic and the agent waits until Kafka has acknowledged them.
2. The batch is folded into the Faust tables (dedupe memory and hourly aggregates, each
   aggregate carrying the version of the last sample in it); the table changes go to the
   changelog topics.
3. :meth:`ClickHouseSink.flush` writes the batch's raw samples, then the ABSOLUTE value and
   version of every hourly key the batch touched. It retries with backoff until ClickHouse
   has the rows: while ClickHouse is down the agent waits and nothing is acknowledged.
4. Only then does the agent hand the batch back to Faust, which acknowledges its messages.
5. Faust commits the acknowledged offsets at its next commit, after flushing the changelog
   producer.

A crash before step 5 replays the batch from the last committed offset: the versions make
the replay a no-op for the counts, and step 3 writes the same absolute values again, which
``ReplacingMergeTree(version)`` collapses. Nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.aggregate import Agg
from pipeline.domain.events import UsageSample
from pipeline.domain.hours import HOUR_US, US_PER_SECOND
from pipeline.domain.usage import HourlyKey

log = logging.getLogger("gpumeter.sink")

RAW_COLUMNS = (
    "tenant_id",
    "event_source",
    "event_id",
    "hour",
    "project_id",
    "job_id",
    "cluster",
    "region",
    "provider",
    "node",
    "gpu_uuid",
    "gpu_model",
    "mig_profile",
    "gpu_count",
    "start_us",
    "end_us",
    "sm_activity_pct",
    "kafka_partition",
    "kafka_offset",
    "ingested_at",
    "late",
)
HOURLY_COLUMNS = (
    "tenant_id",
    "hour",
    "project_id",
    "gpu_model",
    "mig_profile",
    "region",
    "provider",
    "cluster",
    "usage_us",
    "busy_us",
    "samples",
    "version",
    "updated_at",
    "late_us",
)


def raw_row(
    s: UsageSample, partition: int, offset: int, now: datetime, late: bool = False
) -> tuple[Any, ...]:
    hour = datetime.fromtimestamp((s.start_us - s.start_us % HOUR_US) // US_PER_SECOND, UTC)
    return (
        s.tenant_id,
        s.source,
        s.id,
        hour,
        s.project_id,
        s.job_id,
        s.cluster,
        s.region,
        s.provider,
        s.node,
        s.gpu_uuid,
        s.gpu_model,
        s.mig_profile,
        s.gpu_count,
        s.start_us,
        s.end_us,
        s.sm_activity_pct,
        partition,
        offset,
        now,
        int(late),
    )


def hourly_row(key: str, agg: Agg, now: datetime) -> tuple[Any, ...]:
    k = HourlyKey.decode(key)
    return (
        k.tenant_id,
        datetime.fromtimestamp(k.hour_s, UTC),
        k.project_id,
        k.gpu_model,
        k.mig_profile,
        k.region,
        k.provider,
        k.cluster,
        agg.usage_us,
        agg.busy_us,
        agg.samples,
        agg.version,
        now,
        agg.late_us,
    )


class ClickHouseSink:
    def __init__(self, executor: Executor, max_backoff_s: float = 10.0) -> None:
        self.ex = executor
        self.max_backoff_s = max_backoff_s
        self.rows_written = 0
        self.flushes = 0
        self.outage_retries = 0

    def _write(self, raw: Sequence[tuple[Any, ...]], hourly: Sequence[tuple[Any, ...]]) -> None:
        self.ex.insert("usage_raw", RAW_COLUMNS, raw)
        self.ex.insert("usage_hourly", HOURLY_COLUMNS, hourly)

    async def flush(
        self, raw: Sequence[tuple[Any, ...]], dirty: dict[str, Agg], now: datetime
    ) -> None:
        """Step 3: write until ClickHouse has the rows (retries forever, with backoff)."""
        hourly = [hourly_row(k, a, now) for k, a in sorted(dirty.items())]
        delay = 0.25
        started = time.monotonic()
        while True:
            try:
                await asyncio.to_thread(self._write, raw, hourly)
                break
            except Exception as exc:  # noqa: BLE001 - retried until it works; never dropped
                self.outage_retries += 1
                log.warning(
                    "ClickHouse write failed (%s: %s); %d rows held, retrying in %.1fs "
                    "(waiting %.0fs so far)",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                    len(raw) + len(hourly),
                    delay,
                    time.monotonic() - started,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        self.rows_written += len(raw) + len(hourly)
        self.flushes += 1
