"""One batch of Kafka messages -> dead letters, table updates and ClickHouse rows.

Framework-free (no Kafka client) so that it can be unit-tested in memory; the runtime in
:mod:`pipeline.worker.runtime` feeds it. Steps are numbered as in the write-order
contract of :mod:`pipeline.worker.sink`.

**Poison messages**: everything done to a message before it touches state is pure (decode,
key check, splitting into hours, building its rows), so a failure there would repeat on every
replay. It dead-letters that message (or that one sample) with ``processing_error`` and the
exception text, and the batch goes on; a sample is folded only once its rows are known to
build. Only I/O failures (Kafka, the state store, ClickHouse) stop the batch.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pipeline.adapters.kafka import default_partition
from pipeline.domain.aggregate import MAX_SAMPLES_PER_MESSAGE, Agg, FoldResult, fold
from pipeline.domain.dedupe import HorizonSeen, needs_recall, next_floor
from pipeline.domain.errors import RejectReason
from pipeline.domain.events import DecodeLimits, DedupeKey, Reject, UsageSample, decode_message
from pipeline.domain.hours import HOUR_US, US_PER_SECOND, to_us
from pipeline.domain.reference import ReferenceData
from pipeline.domain.usage import Contribution, HourlyKey, contributions
from pipeline.worker.metrics import STAGES, WorkerMetrics
from pipeline.worker.sink import ClickHouseSink, key_columns, now_seconds, raw_head

HOMES_HELD = 65_536  # message keys whose partition is remembered


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: datetime | None = None  # broker/producer time: validation is deterministic on replay


class Tables(Protocol):
    """Dedupe memory and hourly aggregates, as the framework stores them."""

    seen: MutableMapping[DedupeKey, int]

    def bind(self, msg: Message) -> None: ...

    def floor(self, msg: Message) -> int:
        """The dedupe memory's floor for ``msg``'s partition (:mod:`pipeline.domain.dedupe`)."""
        ...

    def expire(self, msg: Message, floor_us: int) -> int:
        """Raise ``msg``'s partition floor, dropping the buckets below it; returns how many."""
        ...

    def holds(self, key: HourlyKey) -> bool:
        """Whether the bound partition's state has ``key``'s aggregate."""
        ...

    def preload(self, recalled: dict[HourlyKey, Agg]) -> None:
        """Aggregates read back from ClickHouse, which :meth:`load` returns when not held."""
        ...

    def load(self, key: HourlyKey) -> Agg: ...

    def store(self, key: HourlyKey, agg: Agg) -> None: ...

    def flush(self) -> int | None:
        """Write the dedupe memory's changed buckets; returns how many."""
        ...


def dead_letter(msg: Message, rej: Reject, now: datetime) -> bytes:
    """The dead-letter record: reason code, detail, where it came from and the original bytes."""
    return json.dumps(
        {
            "reason": rej.reason.value,
            "detail": rej.detail,
            "index": rej.index,
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "timestamp_ms": None
            if msg.timestamp is None
            else int(msg.timestamp.timestamp() * 1000),
            "key_b64": None if msg.key is None else base64.b64encode(msg.key).decode(),
            "value_b64": None if msg.value is None else base64.b64encode(msg.value).decode(),
            "dead_lettered_at": now.isoformat(),
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True, slots=True)
class Ready:
    """A sample that passed step 1: its index among the message's samples (for its
    version), its hourly parts and its raw row without the ``late`` flag."""

    sample: UsageSample
    index: int
    parts: list[Contribution]
    head: tuple[Any, ...]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass
class BatchStats:
    messages: int = 0
    samples: int = 0
    duplicates: int = 0
    replayed: int = 0
    dead_letters: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class BatchProcessor:
    def __init__(
        self,
        ref: ReferenceData,
        tables: Tables,
        sink: ClickHouseSink,
        send_dead_letter: Callable[[bytes | None, bytes], Awaitable[None]],
        clock: Callable[[], datetime],
        limits: DecodeLimits | None = None,
        grace_s: int = 3600,
        metrics: WorkerMetrics | None = None,
        horizon_s: int = 2 * 86_400,
        partitions: int | None = None,
    ) -> None:
        self.ref = ref
        self.tables = tables
        self.sink = sink
        self.send_dead_letter = send_dead_letter
        self.clock = clock
        self.limits = limits or DecodeLimits()
        self.grace_us = grace_s * US_PER_SECOND
        self.horizon_us = horizon_s * US_PER_SECOND
        # the usage topic's partition count: a message must sit where murmur2 puts its key
        self.partitions = partitions
        self.stats = BatchStats()
        self.metrics = metrics
        # key -> its partition: murmur2 runs in Python, and a stream has few distinct keys
        # (tenants); cleared when full, so hostile keys cannot grow it
        self._homes: dict[bytes, int] = {}

    async def process(self, batch: list[Message]) -> None:
        started = time.perf_counter()
        stage = dict.fromkeys(STAGES, 0.0)
        now = self.clock()
        now_s = now_seconds(now)  # the rows' ingested_at
        res = FoldResult()
        raw_rows: list[tuple[Any, ...]] = []
        key_owner: dict[HourlyKey, Message] = {}
        checked: set[HourlyKey] = set()
        prepared: list[tuple[Message, list[Ready]]] = []
        for msg in batch:
            # 1. decode and build rows (pure); rejects to the dead-letter topic, acknowledged
            ready, rejects = self._prepare(msg, now, now_s, checked, stage)
            for rej in rejects:
                await self.send_dead_letter(msg.key, dead_letter(msg, rej, now))
                self.stats.dead_letters += 1
                self.stats.by_reason[rej.reason.value] = (
                    self.stats.by_reason.get(rej.reason.value, 0) + 1
                )
                if self.metrics is not None:
                    self.metrics.dead_letters.labels(rej.reason.value).inc()
            if ready:
                prepared.append((msg, ready))
        # 2a. identities below their partition's dedupe floor: where ClickHouse holds them
        t = time.perf_counter()
        floors: dict[int, int] = {}
        last: dict[int, Message] = {}  # per partition: its last message (binds state writes)
        marks: dict[int, int] = {}  # per partition: the newest record time in the batch
        for msg, _ in prepared:
            if msg.partition not in floors:
                floors[msg.partition] = self.tables.floor(msg)
            last[msg.partition] = msg
            if msg.timestamp is not None:
                marks[msg.partition] = max(marks.get(msg.partition, 0), to_us(msg.timestamp))
        old = {
            r.sample.dedupe_key
            for msg, ready in prepared
            for r in ready
            if r.sample.start_us < floors[msg.partition]  # cheap pre-check: start < floor
            and needs_recall(r.sample.dedupe_key, floors[msg.partition])
        }
        seen = HorizonSeen(self.tables.seen, floors, await self.sink.recall(old) if old else {})
        # hourly aggregates of whole hours below the floor are not held (dropped with the
        # floor's rise): their last value and version are read back from ClickHouse
        gone: set[HourlyKey] = set()
        for msg, ready in prepared:
            below = floors[msg.partition]
            for r in ready:
                if r.sample.start_us >= below:  # the floor is a whole hour: no part below
                    continue
                self.tables.bind(msg)
                for c in r.parts:
                    hour_us = c.key.hour_s * US_PER_SECOND
                    if hour_us + HOUR_US <= below and not self.tables.holds(c.key):
                        gone.add(c.key)
        self.tables.preload(await self.sink.recall_hourly(gone) if gone else {})
        stage["recall"] += time.perf_counter() - t
        for msg, ready in prepared:
            # 2b. fold into the tables (dedupe memory + hourly aggregates with versions)
            t = time.perf_counter()
            self.tables.bind(msg)
            seen.at(msg.partition, msg.offset)
            n_new, n_acc = len(res.new_keys), len(res.accepted)
            fold(
                [(r.sample, msg.offset, r.index) for r in ready],
                seen,
                self.tables.load,
                res,
                arrival_us=to_us(msg.timestamp or now),
                grace_us=self.grace_us,
                parts=[r.parts for r in ready],
            )
            heads = {id(r.sample): r.head for r in ready}
            for s, late in zip(res.accepted[n_acc:], res.late[n_acc:], strict=True):
                raw_rows.append((*heads[id(s)], int(late)))
            for k in res.new_keys[n_new:]:
                key_owner[k] = msg
            stage["fold"] += time.perf_counter() - t
        # 2c. state: the memory's changed buckets (once each), each partition's floor as
        # its watermark moved (dropping the buckets below), the changed aggregates
        t = time.perf_counter()
        buckets = self.tables.flush() or 0
        expired = 0
        now_us = to_us(now)
        for partition, mark in marks.items():
            # the watermark never runs ahead of the wall clock (a producer's clock can)
            floor = next_floor(floors[partition], min(mark, now_us), self.horizon_us)
            if floor is not None:
                expired += self.tables.expire(last[partition], floor)
        for k, agg in res.dirty.items():
            self.tables.bind(key_owner[k])
            self.tables.store(k, agg)
        stage["state"] += time.perf_counter() - t
        if self.metrics is not None:
            self.metrics.dedupe_buckets.inc(buckets)
            self.metrics.dedupe_expired.inc(expired)
            self.metrics.dedupe_recalled.inc(len(old))
        # 3. ClickHouse has the rows before anything is acknowledged
        t = time.perf_counter()
        retries = self.sink.outage_retries
        await self.sink.flush(raw_rows, res.dirty, now)
        stage["insert"] += time.perf_counter() - t
        self.stats.messages += len(batch)
        self.stats.samples += len(res.accepted)
        self.stats.duplicates += res.duplicates
        self.stats.replayed += res.replayed_contributions
        if self.metrics is not None:
            self._record(batch, res, stage, time.perf_counter() - started, retries)
        # 4./5. returning hands the batch back to the framework, which acks and commits

    def _record(
        self,
        batch: list[Message],
        res: FoldResult,
        stage: dict[str, float],
        seconds: float,
        retries_before: int,
    ) -> None:
        """Batch figures into the Prometheus metrics (dead letters are counted as sent)."""
        m = self.metrics
        assert m is not None
        m.messages.inc(len(batch))
        m.samples.inc(len(res.accepted))
        m.duplicates.inc(res.duplicates)
        m.batch_seconds.observe(seconds)
        m.flush_seconds.observe(stage["insert"])
        m.clickhouse_retries.inc(self.sink.outage_retries - retries_before)
        for name, s in stage.items():
            m.stage_seconds.labels(name).inc(s)
        m.last_batch.set_to_current_time()

    def _prepare(
        self,
        msg: Message,
        now: datetime,
        now_s: int,
        checked: set[HourlyKey],
        stage: dict[str, float],
    ) -> tuple[list[Ready], list[Reject]]:
        """Step 1 for one message: its samples with their hourly parts and raw row, and its
        rejects. Pure; a failure dead-letters the message (or the sample) as
        ``processing_error`` instead of failing the batch."""
        if self.partitions and msg.key is not None:
            home = self._homes.get(msg.key)
            if home is None:
                if len(self._homes) >= HOMES_HELD:
                    self._homes.clear()
                home = self._homes[msg.key] = default_partition(msg.key, self.partitions)
            if msg.partition != home:
                return [], [
                    Reject(
                        RejectReason.WRONG_PARTITION,
                        f"key {msg.key[:64]!r} belongs in partition {home} (Kafka's default "
                        f"murmur2 partitioner), not {msg.partition}; with librdkafka (kcat, "
                        "confluent-kafka) set partitioner=murmur2_random",
                    )
                ]
        t = time.perf_counter()
        try:
            samples, rejects = decode_message(
                msg.value or b"", self.ref, msg.timestamp or now, self.limits
            )
        except Exception as exc:  # noqa: BLE001 - deterministic: the message fails alone
            return [], [Reject(RejectReason.PROCESSING_ERROR, _describe(exc))]
        finally:
            stage["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        if len(samples) >= MAX_SAMPLES_PER_MESSAGE:
            return [], rejects + [Reject(RejectReason.MESSAGE_TOO_LARGE, f"{len(samples)} samples")]
        # where each sample stood in a batch message (rejected events leave gaps)
        gaps = {r.index for r in rejects if r.index is not None}
        batch = bool(gaps) or (msg.value or b"").lstrip()[:1] == b"["
        positions = [i for i in range(len(samples) + len(gaps)) if i not in gaps]
        key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        ready: list[Ready] = []
        index = 0  # among the samples whose key matches: the version's index
        for pos, sample in zip(positions, samples, strict=True):
            where = pos if batch else None
            if sample.tenant_id != key:
                rejects.append(
                    Reject(
                        RejectReason.KEY_MISMATCH,
                        f"message key {key!r} but event {sample.id!r} has tenant_id "
                        f"{sample.tenant_id!r}",
                        where,
                    )
                )
                continue
            index += 1
            try:
                parts = contributions(sample)
                for c in parts:
                    if c.key not in checked:
                        key_columns(c.key)
                        checked.add(c.key)
                head = raw_head(sample, msg.partition, msg.offset, now_s)
            except Exception as exc:  # noqa: BLE001 - deterministic: the sample fails alone
                rejects.append(Reject(RejectReason.PROCESSING_ERROR, _describe(exc), where))
                continue
            ready.append(Ready(sample, index - 1, parts, head))
        stage["rows"] += time.perf_counter() - t
        return ready, rejects
