"""The dedupe memory's horizon: a bounded memory that still never counts a copy twice.

The worker remembers each event identity (:class:`~pipeline.domain.events.DedupeKey`) in
buckets by tenant, source and **start minute**. Kept for ever, that memory grows with every
sample. So each Kafka partition has a **floor**: buckets whose start minute is below it are
dropped, and the floor only rises, in whole hours, to ``watermark - horizon`` (the watermark:
the newest record time the partition has seen, never ahead of the wall clock).

An identity below the floor is not looked for in memory. It is **recalled** from ClickHouse's
raw rows (every accepted sample has one, written before its offset is committed), which say at
which Kafka position (partition, offset) it was accepted:

* not there: never accepted, so it is new;
* there at this very message's position: this message is being replayed after a crash (its
  counts are then guarded by the aggregates' versions, as for any replay);
* there at another position: a **duplicate**, skipped.

Within a batch, identities below the floor are remembered in the batch only (two copies in one
batch: the second is a duplicate). The floor is part of the worker's state (persisted with the
memory), so whether an identity is recalled depends only on that state, not on timing: a
replayed batch decides the same way, or recalls more (the floor rose), which is also exact.

Trade-off (documented in the README): an event older than the horizon costs one ClickHouse
lookup per batch instead of a memory read; nothing is refused. The horizon bounds memory at
``horizon x identities per hour`` whatever the stream's length.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from pipeline.domain.events import DedupeKey
from pipeline.domain.hours import HOUR_US

Position = tuple[int, int]  # (Kafka partition, offset) where an identity was accepted
DUPLICATE = -1  # the version a recalled identity has when it was accepted elsewhere (< any)


def next_floor(floor_us: int, watermark_us: int, horizon_us: int) -> int | None:
    """The partition's new floor for ``watermark_us``, or ``None`` while it stays: the start
    of the hour ``horizon_us`` before the watermark, only ever rising."""
    candidate = watermark_us - horizon_us
    candidate -= candidate % HOUR_US
    return candidate if candidate > floor_us else None


class HorizonSeen(MutableMapping[DedupeKey, int]):
    """The dedupe memory as one batch's fold sees it (``DedupeKey -> version first seen``).

    Identities at or above the message's partition floor live in ``memory``; those below it
    are answered from what this batch saw, else from ``recalled`` (where ClickHouse holds
    them). Call :meth:`at` before folding each message."""

    def __init__(
        self,
        memory: MutableMapping[DedupeKey, int],
        floors: Mapping[int, int],
        recalled: Mapping[DedupeKey, frozenset[Position]],
    ) -> None:
        self.memory = memory
        self.floors = floors
        self.recalled = recalled
        self.batch: dict[DedupeKey, int] = {}
        self._position: Position = (-1, -1)
        self._floor = 0

    def at(self, partition: int, offset: int) -> None:
        self._position = (partition, offset)
        self._floor = self.floors.get(partition, 0)

    def below(self, key: DedupeKey) -> bool:
        return key.bucket.minute_us < self._floor

    def get(self, key: DedupeKey, default: Any = None) -> Any:
        if not self.below(key):
            return self.memory.get(key, default)
        version = self.batch.get(key)
        if version is not None:
            return version
        where = self.recalled.get(key)
        if not where or self._position in where:
            return default  # new, or this very message replayed
        return DUPLICATE

    def setdefault(self, key: DedupeKey, default: Any = None) -> Any:
        """The version ``key`` was first seen at, remembering ``default`` if none (one
        lookup where ``get`` then a store would take two)."""
        if not self.below(key):
            return self.memory.setdefault(key, default)
        version = self.get(key)
        if version is None:
            self.batch[key] = default
            return default
        return version

    def __getitem__(self, key: DedupeKey) -> int:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return int(value)

    def __setitem__(self, key: DedupeKey, value: int) -> None:
        if self.below(key):
            self.batch[key] = value
        else:
            self.memory[key] = value

    def __delitem__(self, key: DedupeKey) -> None:
        raise NotImplementedError("the fold never forgets an identity")

    def __iter__(self) -> Iterator[DedupeKey]:
        raise NotImplementedError("not iterable")

    def __len__(self) -> int:
        return len(self.batch)


def needs_recall(key: DedupeKey, floor_us: int) -> bool:
    """Whether the fold will ask ClickHouse about ``key`` (it lies below its floor)."""
    return key.bucket.minute_us < floor_us
