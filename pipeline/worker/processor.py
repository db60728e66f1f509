"""One batch of Kafka messages -> dead letters, table updates and ClickHouse rows.

Framework-free (no Faust import) so that it can be unit-tested with plain dicts; the Faust
agent in :mod:`pipeline.worker.app` feeds it. Steps are numbered as in the write-order
contract of :mod:`pipeline.worker.sink`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pipeline.domain.aggregate import MAX_SAMPLES_PER_MESSAGE, Agg, FoldResult, fold
from pipeline.domain.errors import RejectReason
from pipeline.domain.events import DecodeLimits, Reject, UsageSample, decode_message
from pipeline.domain.hours import US_PER_SECOND, to_us
from pipeline.domain.reference import ReferenceData
from pipeline.worker.sink import ClickHouseSink, raw_row


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: datetime | None = None  # broker/producer time: validation is deterministic on replay
    handle: Any = None  # the framework's event, to bind table writes to its partition


class Tables(Protocol):
    """Dedupe memory and hourly aggregates, as the framework stores them."""

    seen: MutableMapping[str, int]

    def bind(self, msg: Message) -> None: ...

    def load(self, key: str) -> Agg: ...

    def store(self, key: str, agg: Agg) -> None: ...

    def flush(self) -> None: ...


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
    ) -> None:
        self.ref = ref
        self.tables = tables
        self.sink = sink
        self.send_dead_letter = send_dead_letter
        self.clock = clock
        self.limits = limits or DecodeLimits()
        self.grace_us = grace_s * US_PER_SECOND
        self.stats = BatchStats()

    async def process(self, batch: list[Message]) -> None:
        now = self.clock()
        res = FoldResult()
        raw_rows = []
        key_owner: dict[str, Message] = {}
        for msg in batch:
            # 1. decode; rejects to the dead-letter topic, acknowledged by Kafka
            samples, rejects = decode_message(
                msg.value or b"", self.ref, msg.timestamp or now, self.limits
            )
            samples, rejects = self._check_key(msg, samples, rejects)
            for rej in rejects:
                await self.send_dead_letter(msg.key, dead_letter(msg, rej, now))
                self.stats.dead_letters += 1
                self.stats.by_reason[rej.reason.value] = (
                    self.stats.by_reason.get(rej.reason.value, 0) + 1
                )
            if not samples:
                continue
            # 2. fold into the tables (dedupe memory + hourly aggregates with versions)
            self.tables.bind(msg)
            before = set(res.dirty)
            n_acc = len(res.accepted)
            fold(
                [(s, msg.offset, i) for i, s in enumerate(samples)],
                self.tables.seen,
                self.tables.load,
                res,
                arrival_us=to_us(msg.timestamp or now),
                grace_us=self.grace_us,
            )
            for s, late in zip(res.accepted[n_acc:], res.late[n_acc:], strict=True):
                raw_rows.append(raw_row(s, msg.partition, msg.offset, now, late))
            for k in res.dirty.keys() - before:
                key_owner[k] = msg
        self.tables.flush()  # the dedupe memory's changed buckets, once each
        for k, agg in res.dirty.items():
            self.tables.bind(key_owner[k])
            self.tables.store(k, agg)
        # 3. ClickHouse has the rows before anything is acknowledged
        await self.sink.flush(raw_rows, res.dirty, now)
        self.stats.messages += len(batch)
        self.stats.samples += len(res.accepted)
        self.stats.duplicates += res.duplicates
        self.stats.replayed += res.replayed_contributions
        # 4./5. returning hands the batch back to the framework, which acks and commits

    def _check_key(
        self, msg: Message, samples: list[UsageSample], rejects: list[Reject]
    ) -> tuple[list[UsageSample], list[Reject]]:
        if len(samples) >= MAX_SAMPLES_PER_MESSAGE:
            return [], rejects + [Reject(RejectReason.MESSAGE_TOO_LARGE, f"{len(samples)} samples")]
        key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        ok, bad = [], list(rejects)
        for s in samples:
            if s.tenant_id != key:
                bad.append(
                    Reject(
                        RejectReason.KEY_MISMATCH,
                        f"message key {key!r} but event {s.id!r} has tenant_id {s.tenant_id!r}",
                    )
                )
            else:
                ok.append(s)
        return ok, bad
