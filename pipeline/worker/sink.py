"""ClickHouse sink for the stream worker.

Write order (the contract of :mod:`pipeline.worker.runtime`, numbered the same there):

1. The runtime polls a batch of Kafka messages and the processor decodes them; rejects are
   sent to the dead-letter topic.
2. The batch is folded into the worker's state (dedupe memory and hourly aggregates, each
   aggregate carrying the version of the last sample in it): (a) identities below their
   partition's dedupe floor are first recalled from ``usage_raw`` (:meth:`ClickHouseSink.recall`,
   :mod:`pipeline.domain.dedupe`); (b) the fold; (c) the state writes: changed dedupe buckets,
   each partition's raised floor after deleting the buckets below it, changed aggregates.
3. :meth:`ClickHouseSink.flush` writes the batch's raw samples, then the ABSOLUTE value and
   version of every hourly key the batch touched. It retries with backoff until ClickHouse
   has the rows: while ClickHouse is down the worker waits and nothing is committed.
4. The runtime sends each changed state key once to its changelog topic and waits until Kafka
   has acknowledged them and the batch's dead letters.
5. Only then does it commit the batch's offsets.

A crash before step 5 replays the batch from the last committed offset: the versions make
the replay a no-op for the counts, and step 3 writes the same absolute values again, which
``ReplacingMergeTree(version)`` collapses. Nothing is lost and nothing counted twice.

**Failures in step 3** are of two kinds. An I/O failure (ClickHouse unreachable, a timeout, a
server error that may pass: too many parts, memory) is retried with backoff for as long as it
lasts. A *permanent* one (the server refuses what we send: unknown database, table or column,
type mismatch, authentication; or the client cannot serialise a row) would fail the same way
on every retry: :class:`PermanentClickHouseError` is raised with the server's message and the
worker exits non-zero, loudly, instead of retrying silently for ever. Rows themselves cannot
cause one: :func:`raw_row` and :func:`key_columns` check every value against its column's
domain, and the processor dead-letters a sample whose row cannot be built.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import ErrorCodes, ServerException

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.aggregate import Agg
from pipeline.domain.dedupe import Position
from pipeline.domain.events import DedupeBucket, DedupeKey, UsageSample
from pipeline.domain.hours import HOUR_US, US_PER_SECOND
from pipeline.domain.usage import KEY_COLUMNS, HourlyKey

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
    *KEY_COLUMNS,
    "usage_us",
    "busy_us",
    "samples",
    "version",
    "updated_at",
    "late_us",
)


MAX_DATETIME_S = 2**32 - 1  # ClickHouse DateTime: unsigned 32-bit seconds since the epoch


def _datetime(seconds: int) -> int:
    """A ``DateTime`` column's value: whole seconds since the epoch, checked against the
    column's range. Passed as an integer, which the driver sends as is (a ``datetime`` costs a
    time-zone conversion per value) and chdb's ``VALUES`` reads as the same instant."""
    if not 0 <= seconds <= MAX_DATETIME_S:
        raise ValueError(f"hour {seconds}s is outside ClickHouse's DateTime range")
    return seconds


def now_seconds(now: datetime) -> int:
    """A ``DateTime`` column's value for the instant ``now``."""
    return _datetime(int(now.timestamp()))


def _utf8(*values: str) -> None:
    """What the driver does to a String, once for all of a row's strings: raises for a lone
    surrogate (which validated events cannot hold; this guards every other caller)."""
    "".join(values).encode("utf-8")


def key_columns(k: HourlyKey) -> tuple[Any, ...]:
    """The ``usage_hourly`` key columns (:data:`KEY_COLUMNS`) of ``k``, checked."""
    values = k.values()
    _utf8(values[0], *values[2:])
    return (values[0], _datetime(k.hour_s), *values[2:])


def raw_head(s: UsageSample, partition: int, offset: int, now_s: int) -> tuple[Any, ...]:
    """A ``usage_raw`` row (:data:`RAW_COLUMNS`) without its last column, ``late``, which the
    fold decides: built (and so checked) before the sample is folded. ``now_s``: the
    ``ingested_at`` column, :func:`now_seconds` of the batch's clock (once per batch)."""
    _utf8(
        s.tenant_id, s.source, s.id, s.project_id, s.job_id, s.cluster, s.region,
        s.provider, s.node, s.gpu_uuid, s.gpu_model, s.mig_profile,
    )  # fmt: skip
    return (
        s.tenant_id,
        s.source,
        s.id,
        _datetime((s.start_us - s.start_us % HOUR_US) // US_PER_SECOND),
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
        now_s,
    )


def raw_row(
    s: UsageSample, partition: int, offset: int, now: datetime, late: bool = False
) -> tuple[Any, ...]:
    return (*raw_head(s, partition, offset, now_seconds(now)), int(late))


def hourly_row(key: HourlyKey, agg: Agg, now: datetime) -> tuple[Any, ...]:
    return (
        *key_columns(key),
        agg.usage_us,
        agg.busy_us,
        agg.samples,
        agg.version,
        now_seconds(now),
        agg.late_us,
    )


class PermanentClickHouseError(RuntimeError):
    """ClickHouse refuses what the sink sends, and would on every retry."""


# Server error codes that no retry can cure (names as in clickhouse-driver's ErrorCodes).
_PERMANENT_CODES = {
    getattr(ErrorCodes, name)
    for name in (
        "UNKNOWN_DATABASE",
        "UNKNOWN_TABLE",
        "NO_SUCH_COLUMN_IN_TABLE",
        "THERE_IS_NO_COLUMN",
        "UNKNOWN_IDENTIFIER",
        "UNKNOWN_TYPE",
        "TYPE_MISMATCH",
        "CANNOT_CONVERT_TYPE",
        "ILLEGAL_TYPE_OF_ARGUMENT",
        "ILLEGAL_COLUMN",
        "INCORRECT_DATA",
        "CANNOT_PARSE_TEXT",
        "CANNOT_PARSE_DATETIME",
        "CANNOT_PARSE_NUMBER",
        "SYNTAX_ERROR",
        "NOT_IMPLEMENTED",
        "READONLY",
        "UNKNOWN_USER",
        "WRONG_PASSWORD",
        "REQUIRED_PASSWORD",
        "ACCESS_DENIED",
        "AUTHENTICATION_FAILED",
        "NUMBER_OF_COLUMNS_DOESNT_MATCH",
        "ILLEGAL_TYPE_OF_COLUMN_FOR_FILTER",
    )
    if hasattr(ErrorCodes, name)
}
# Raised by the client while serialising rows: the same rows fail the same way every time.
_CLIENT_ERRORS = (TypeError, ValueError, UnicodeError, OverflowError, KeyError, struct.error)


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed write would fail again however often it is retried."""
    if isinstance(exc, ServerException):
        return exc.code in _PERMANENT_CODES
    if isinstance(exc, ClickHouseError):
        return False  # network errors, timeouts, unexpected packets: I/O
    return isinstance(exc, _CLIENT_ERRORS)


class ClickHouseSink:
    def __init__(self, executor: Executor, max_backoff_s: float = 10.0) -> None:
        self.ex = executor
        self.max_backoff_s = max_backoff_s
        self.rows_written = 0
        self.flushes = 0
        self.outage_retries = 0
        self.recalled = 0  # identities looked up below the dedupe memory's floor
        self.recalled_hourly = 0  # aggregates read back for hours below the floor

    def _write(self, raw: Sequence[tuple[Any, ...]], hourly: Sequence[tuple[Any, ...]]) -> None:
        self.ex.insert("usage_raw", RAW_COLUMNS, raw)
        self.ex.insert("usage_hourly", HOURLY_COLUMNS, hourly)

    async def _until_done(self, what: str, refused: str, size: int, call: Callable[[], Any]) -> Any:
        """Run ``call`` in a thread until ClickHouse answers: I/O failures are retried with
        backoff for as long as they last; a failure no retry can cure raises
        :class:`PermanentClickHouseError` with the server's message."""
        delay = 0.25
        started = time.monotonic()
        while True:
            try:
                return await asyncio.to_thread(call)
            except Exception as exc:  # noqa: BLE001 - retried until it works; never dropped
                if is_permanent(exc):
                    raise PermanentClickHouseError(
                        f"ClickHouse refused the {refused} ({type(exc).__name__}): "
                        f"{str(exc).strip()[:2000]}"
                    ) from exc
                self.outage_retries += 1
                log.warning(
                    "ClickHouse %s failed (%s: %s); %d rows held, retrying in %.1fs "
                    "(waiting %.0fs so far)",
                    what,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                    size,
                    delay,
                    time.monotonic() - started,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def flush(
        self, raw: Sequence[tuple[Any, ...]], dirty: dict[HourlyKey, Agg], now: datetime
    ) -> None:
        """Step 3: write until ClickHouse has the rows (retries I/O failures for ever, with
        backoff); raises :class:`PermanentClickHouseError` for a failure no retry can cure."""
        hourly = [hourly_row(k, a, now) for k, a in sorted(dirty.items())]
        await self._until_done(
            "write", "batch", len(raw) + len(hourly), lambda: self._write(raw, hourly)
        )
        self.rows_written += len(raw) + len(hourly)
        self.flushes += 1

    async def recall(self, keys: Collection[DedupeKey]) -> dict[DedupeKey, frozenset[Position]]:
        """Where the raw rows hold these identities: ``key -> {(partition, offset)}``, for the
        dedupe memory's identities below its floor (:mod:`pipeline.domain.dedupe`). Raw rows
        are written before any offset is committed, so an identity accepted in a committed
        batch is always found. Asked in chunks (the query text stays far below ClickHouse's
        ``max_query_size``); retried like a write."""
        found: dict[DedupeKey, set[Position]] = {}
        ordered = sorted(keys, key=lambda k: (k.bucket.tenant_id, k.bucket.source, k.event_id))
        for chunk in recall_chunks(ordered):
            want = set(chunk)
            minutes = [k.bucket.minute_us for k in chunk]
            params = {
                "t": tuple(sorted({k.bucket.tenant_id for k in chunk})),
                "s": tuple(sorted({k.bucket.source for k in chunk})),
                "i": tuple(sorted({k.event_id for k in chunk})),
                "a": (min(minutes) - min(minutes) % HOUR_US) // US_PER_SECOND,
                "b": (max(minutes) - max(minutes) % HOUR_US) // US_PER_SECOND,
            }
            rows = await self._until_done(
                "recall",
                "recall of old identities",
                len(chunk),
                functools.partial(self.ex.execute, RECALL_SQL, params),
            )
            for tenant, source, event_id, start_us, partition, offset in rows:
                start = int(start_us)
                k = DedupeKey(DedupeBucket(tenant, source, start - start % MINUTE_US), event_id)
                if k in want:
                    found.setdefault(k, set()).add((int(partition), int(offset)))
        self.recalled += len(keys)
        return {k: frozenset(v) for k, v in found.items()}

    async def recall_hourly(self, keys: Collection[HourlyKey]) -> dict[HourlyKey, Agg]:
        """The aggregates ClickHouse holds for these keys (those it has none for are left
        out): hours below the dedupe floor, whose aggregates the worker no longer holds.
        Asked per tenant and in chunks of hours; retried like a write."""
        found: dict[HourlyKey, Agg] = {}
        want = set(keys)
        by_tenant: dict[str, list[int]] = {}
        for k in keys:
            by_tenant.setdefault(k.tenant_id, []).append(k.hour_s)
        for tenant, hours in sorted(by_tenant.items()):
            ordered = sorted(set(hours))
            for i in range(0, len(ordered), RECALL_CHUNK):
                chunk = ordered[i : i + RECALL_CHUNK]
                params = {"t": tenant, "h": tuple(chunk)}
                rows = await self._until_done(
                    "recall",
                    "recall of old hourly aggregates",
                    len(chunk),
                    functools.partial(self.ex.execute, RECALL_HOURLY_SQL, params),
                )
                for row in rows:
                    k = HourlyKey(str(row[0]), int(row[1]), *(str(v) for v in row[2:8]))
                    if k in want:
                        found[k] = Agg(*(int(v) for v in row[8:13]))
        self.recalled_hourly += len(keys)
        return found


MINUTE_US = 60 * US_PER_SECOND
# One recall query holds at most this many identities, and at most RECALL_BYTES of their
# UTF-8 text counted twice (escaping adds at most a byte per byte): far below ClickHouse's
# max_query_size (256 KiB), which hostile but valid identities (source up to 512 characters,
# id up to 256) would otherwise exceed, a permanent error. The primary key (tenant_id,
# event_source, event_id, hour) narrows each query to those ranges.
RECALL_CHUNK = 256
RECALL_BYTES = 100_000


def recall_chunks(keys: Sequence[DedupeKey]) -> list[list[DedupeKey]]:
    chunks: list[list[DedupeKey]] = []
    size = 0
    for k in keys:
        b = k.bucket
        cost = 2 * len(f"{b.tenant_id}{b.source}{k.event_id}".encode()) + 16
        if not chunks or len(chunks[-1]) >= RECALL_CHUNK or size + cost > RECALL_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(k)
        size += cost
    return chunks


# key columns in HourlyKey's field order, then the aggregate in Agg's
RECALL_HOURLY_SQL = (
    "SELECT tenant_id, toUInt32(hour), project_id, gpu_model, mig_profile, region, provider, "
    "cluster, usage_us, busy_us, samples, version, late_us FROM usage_hourly FINAL "
    "WHERE tenant_id = %(t)s AND toUInt32(hour) IN %(h)s"
)
RECALL_SQL = (
    "SELECT tenant_id, event_source, event_id, start_us, kafka_partition, kafka_offset "
    "FROM usage_raw WHERE tenant_id IN %(t)s AND event_source IN %(s)s AND event_id IN %(i)s "
    "AND hour >= toDateTime(%(a)s, 'UTC') AND hour <= toDateTime(%(b)s, 'UTC')"
)
