"""The worker's state as two key-value tables (bytes to bytes): the dedupe memory
(:class:`BucketedSeen`) and the hourly aggregates, behind
:class:`pipeline.worker.processor.Tables` (:class:`StateTables`). The runtime keeps them in a
:class:`pipeline.worker.store.PartitionedStore` each; tests may pass plain dicts.

The dedupe memory is bounded by its horizon (:mod:`pipeline.domain.dedupe`): each partition's
floor is stored in the same table (key ``["floor", partition]``), and :meth:`StateTables.expire`
deletes the slots below a new floor (a tombstone in the changelog each) before writing it; the
floor is a whole hour, so a slot (one start hour) is below it exactly when its buckets (start
minutes) are. Which slots a partition holds is indexed in memory by start hour, built by one
scan of the partition's keys the first time it expires in this process (and again after a
rebalance).

The hourly aggregates are bounded the same way: when the floor rises, the aggregates of whole
hours below it are deleted too (ClickHouse holds each one's last absolute value and version).
A sample for such an hour (late data, a collector back after days) finds its aggregate read
back from ClickHouse (:meth:`StateTables.preload`, :meth:`ClickHouseSink.recall_hourly`)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from pipeline.domain.aggregate import Agg
from pipeline.domain.events import DedupeBucket, DedupeKey
from pipeline.domain.hours import HOUR_US, US_PER_SECOND
from pipeline.domain.usage import HourlyKey, hourly_key_bytes
from pipeline.worker.processor import Message
from pipeline.worker.store import PartitionedStore

Slot = tuple[str, str, int]  # how the memory is stored: tenant, source, start hour (µs)


PART_IDS = 256  # identities per stored part of a slot: bounds what a batch rewrites per slot
CACHE_IDS = 262_144  # identities held decoded across batches (least recently used go first)
KEEP_IDS = PART_IDS  # only slots this large are kept: smaller ones are cheap to decode again

Part = dict[str, dict[str, int]]  # start minute -> {event id: version}


class BucketedSeen(MutableMapping[DedupeKey, int]):
    """The dedupe memory as ``DedupeKey -> version``, stored in **slots**: one per tenant,
    source and start *hour*, so a node reporting every few minutes costs one changelog record
    per hour and batch, not one per report.

    A slot is stored in **parts** of at most ``part_ids`` identities (JSON
    ``{start minute: {id: version}}``), under the keys ``[tenant, source, hour_us]`` (part 0)
    and ``[tenant, source, hour_us, n]`` (part n): a source sending many events an hour (a
    scheduler reporting every job, or a hostile producer) fills part after part, and a batch
    rewrites only the parts it changed, the newest, so no record grows past a bound whatever a
    source sends (one slot in one record would outgrow Kafka's request size and stop the
    worker). Writes change the decoded parts, and :meth:`flush` writes each changed part once,
    to the changelog partition of the message that changed it.

    **Large decoded slots are kept across batches** (those of at least ``keep_ids``
    identities), up to ``cache_ids`` identities in all (the least recently used slots are
    dropped after a flush, never a changed one before it is written), with an index of the
    parts holding each start minute: a source reporting every few seconds touches its slot in
    every batch, and decoding the whole slot each time cost a batch time in proportion to
    everything the source sent that hour (freshness fell behind in ``make bench``). Small slots
    (a node reporting every few minutes) are decoded again when next needed: keeping them all
    made the bench month's drain ~8 % slower (a larger heap for little saved work). The table
    stays the truth: a slot not held is read from it again, and whatever changes the table
    behind this object's back (a rebalance, a changelog recovery, expiry) calls :meth:`forget`."""

    def __init__(
        self,
        table: Any,
        bind: Any,
        part_ids: int = PART_IDS,
        cache_ids: int = CACHE_IDS,
        keep_ids: int = KEEP_IDS,
    ) -> None:
        self._t = table
        self._bind = bind
        self.part_ids = part_ids
        self.cache_ids = cache_ids
        self.keep_ids = keep_ids
        self._cache: OrderedDict[Slot, list[Part]] = OrderedDict()
        self._sizes: dict[Slot, list[int]] = {}  # identities per cached part
        self._where: dict[Slot, dict[str, list[int]]] = {}  # start minute -> parts holding it
        self._held = 0  # identities in the cached slots
        self._dirty: dict[tuple[Slot, int], Message] = {}
        self.current: Message | None = None

    @staticmethod
    def slot(bucket: DedupeBucket) -> Slot:
        return (bucket.tenant_id, bucket.source, bucket.minute_us - bucket.minute_us % HOUR_US)

    @staticmethod
    def bucket_bytes(slot: Slot, part: int = 0) -> bytes:
        key: list[Any] = list(slot) if part == 0 else [*slot, part]
        return json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode()

    def _parts(self, slot: Slot) -> list[Part]:
        parts = self._cache.get(slot)
        if parts is not None:
            self._cache.move_to_end(slot)
            return parts
        parts = []
        while (raw := self._t.get(self.bucket_bytes(slot, len(parts)))) is not None:
            parts.append(json.loads(raw))
        if not parts:
            parts.append({})
        where: dict[str, list[int]] = {}
        for n, part in enumerate(parts):
            for minute in part:
                where.setdefault(minute, []).append(n)
        sizes = [sum(len(ids) for ids in p.values()) for p in parts]
        self._cache[slot] = parts
        self._sizes[slot] = sizes
        self._where[slot] = where
        self._held += sum(sizes)
        return parts

    def _find(self, key: DedupeKey) -> tuple[Slot, list[Part], int, int | None]:
        """The slot of ``key``, its parts, the part holding ``key`` (else the newest) and the
        version ``key`` was seen at (or None)."""
        slot = self.slot(key.bucket)
        parts = self._parts(slot)
        minute = str(key.bucket.minute_us)
        for n in self._where[slot].get(minute, ()):
            version = parts[n][minute].get(key.event_id)
            if version is not None:
                return slot, parts, n, version
        return slot, parts, len(parts) - 1, None

    def _put(self, slot: Slot, parts: list[Part], n: int, key: DedupeKey, value: int) -> None:
        """Store ``key`` in part ``n`` and mark that part changed."""
        minute = str(key.bucket.minute_us)
        members = parts[n].get(minute)
        if members is None:
            members = parts[n][minute] = {}
            self._where[slot].setdefault(minute, []).append(n)
        members[key.event_id] = value
        if (slot, n) not in self._dirty and self.current is not None:
            self._dirty[(slot, n)] = self.current

    def _add(self, slot: Slot, parts: list[Part], key: DedupeKey, value: int) -> None:
        """Remember ``key`` in the slot's newest part, starting a new one when it is full."""
        sizes = self._sizes[slot]
        if sizes[-1] >= self.part_ids:
            parts.append({})
            sizes.append(0)
        sizes[-1] += 1
        self._held += 1
        self._put(slot, parts, len(parts) - 1, key, value)

    def __getitem__(self, key: DedupeKey) -> int:
        version = self._find(key)[3]
        if version is None:
            raise KeyError(key)
        return version

    def get(self, key: DedupeKey, default: Any = None) -> Any:
        version = self._find(key)[3]
        return default if version is None else version

    def setdefault(self, key: DedupeKey, default: Any = None) -> Any:
        """The version ``key`` was first seen at, remembering ``default`` if none."""
        slot, parts, _, version = self._find(key)
        if version is not None:
            return version
        self._add(slot, parts, key, default)
        return default

    def __setitem__(self, key: DedupeKey, value: int) -> None:
        slot, parts, n, version = self._find(key)
        if version is None:
            self._add(slot, parts, key, value)
        else:
            self._put(slot, parts, n, key, value)

    def __delitem__(self, key: DedupeKey) -> None:
        raise NotImplementedError("the dedupe memory only grows")

    def __iter__(self) -> Any:
        raise NotImplementedError("not iterable")

    def __len__(self) -> int:
        return len(self._cache)

    def flush(self, written: Callable[[int, int, bytes], None] | None = None) -> int:
        """Write each changed part once; ``written(partition, hour_us, key)`` is told of
        each."""
        count = len(self._dirty)
        for (slot, n), msg in self._dirty.items():
            self._bind(msg)
            key = self.bucket_bytes(slot, n)
            self._t[key] = json.dumps(
                self._cache[slot][n], ensure_ascii=False, separators=(",", ":")
            ).encode()
            if written is not None:
                written(msg.partition, slot[2], key)
        self._dirty.clear()
        for slot in [s for s, sizes in self._sizes.items() if sum(sizes) < self.keep_ids]:
            self._drop(slot)
        while self._held > self.cache_ids and self._cache:
            self._drop(next(iter(self._cache)))
        return count

    def _drop(self, slot: Slot) -> None:
        del self._cache[slot]
        self._held -= sum(self._sizes.pop(slot))
        del self._where[slot]

    def forget(self, below_hour_us: int | None = None) -> None:
        """Drop the decoded slots (those of start hours below ``below_hour_us``, or all): the
        table changed under them. Not while a batch has unwritten changes."""
        assert not self._dirty, "forget() with changes not flushed"
        for slot in [s for s in self._cache if below_hour_us is None or s[2] < below_hour_us]:
            self._drop(slot)

    def held(self) -> int:
        """Identities held decoded."""
        return self._held


class StateTables:
    """Adapts two key-value tables to :class:`pipeline.worker.processor.Tables`.

    Both hold raw bytes: an hourly key is stored under
    :func:`~pipeline.domain.usage.hourly_key_bytes`, its aggregate as
    ``b"usage_us,busy_us,samples,version,late_us"``. ``bind_partition`` routes the following
    reads and writes to the partition of the message being folded (its changelog partition).
    """

    def __init__(
        self,
        seen: Any,
        hourly: Any,
        keys_in: Callable[[int], Iterable[bytes]] | None = None,
        bind_partition: Callable[[int], None] | None = None,
        hourly_keys_in: Callable[[int], Iterable[bytes]] | None = None,
    ) -> None:
        self._bind_partition = bind_partition or (lambda partition: None)
        self._partition = -1
        self._seen_table = seen
        self._seen = BucketedSeen(seen, self._bind)
        self.seen: MutableMapping[DedupeKey, int] = self._seen
        self._hourly = hourly
        # the dedupe table's keys held for one partition (default: every key, for mappings
        # that hold one partition, as in tests)
        self._keys_in = keys_in or (lambda partition: list(seen.keys()))
        self._index: dict[int, dict[int, set[bytes]]] = {}  # partition -> minute -> buckets
        # the same for the hourly aggregates: partition -> hour (µs) -> keys
        self._hourly_keys_in = hourly_keys_in or (lambda partition: list(hourly.keys()))
        self._hours: dict[int, dict[int, set[bytes]]] = {}
        self._recalled: dict[HourlyKey, Agg] = {}
        self.hourly_dropped = 0

    @staticmethod
    def floor_bytes(partition: int) -> bytes:
        return json.dumps(["floor", partition]).encode()

    def floor(self, msg: Message) -> int:
        """The dedupe memory's floor for the partition of ``msg`` (0: nothing dropped yet)."""
        self._bind(msg)
        raw = self._seen_table.get(self.floor_bytes(msg.partition))
        return int(raw) if raw else 0

    def buckets_held(self) -> int:
        """Buckets indexed in this process (partitions that have expired at least once)."""
        return sum(len(keys) for by_minute in self._index.values() for keys in by_minute.values())

    def forget_index(self) -> None:
        """After a rebalance: another worker may have changed a partition's buckets (and a
        changelog recovery follows)."""
        self._index.clear()
        self._hours.clear()
        self._seen.forget()

    def _hour_index(self, partition: int) -> dict[int, set[bytes]]:
        index = self._hours.get(partition)
        if index is None:
            index = {}
            for key in self._hourly_keys_in(partition):
                hour_s = json.loads(key)[1]  # hourly keys are [tenant, hour_s, ...]
                index.setdefault(int(hour_s) * US_PER_SECOND, set()).add(bytes(key))
            self._hours[partition] = index
        return index

    def _partition_index(self, partition: int) -> dict[int, set[bytes]]:
        index = self._index.get(partition)
        if index is None:
            index = {}
            for key in self._keys_in(partition):
                # slot keys are [tenant, source, hour] and [tenant, source, hour, part];
                # skip the floor keys
                if not bytes(key).startswith(b"["):
                    continue
                parts = json.loads(key)
                if len(parts) in (3, 4):
                    index.setdefault(int(parts[2]), set()).add(bytes(key))
            self._index[partition] = index
        return index

    def _written(self, partition: int, minute_us: int, key: bytes) -> None:
        index = self._index.get(partition)
        if index is not None:  # else the first expiry's scan finds it
            index.setdefault(minute_us, set()).add(key)

    def expire(self, msg: Message, floor_us: int) -> int:
        """Raise the floor of ``msg``'s partition to ``floor_us``: delete the buckets below it
        (their tombstones go to that changelog partition), then store the floor. Returns how
        many buckets were deleted."""
        self._bind(msg)
        index = self._partition_index(msg.partition)
        dropped = 0
        for minute in sorted(m for m in index if m < floor_us):
            for key in index.pop(minute):  # indexed keys exist: only expiry deletes them
                del self._seen_table[key]
                dropped += 1
        self._seen.forget(floor_us)
        self._seen_table[self.floor_bytes(msg.partition)] = str(floor_us).encode()
        # the hourly aggregates of whole hours below the floor: ClickHouse holds their last
        # value and version (written before any batch that changed them was committed)
        hours = self._hour_index(msg.partition)
        for hour in sorted(h for h in hours if h + HOUR_US <= floor_us):
            for key in hours.pop(hour):
                if key in self._hourly:
                    del self._hourly[key]
                    self.hourly_dropped += 1
        return dropped

    def _bind(self, msg: Message) -> None:
        self._partition = msg.partition
        self._bind_partition(msg.partition)

    def bind(self, msg: Message) -> None:
        self._bind(msg)
        self._seen.current = msg

    def flush(self) -> int:
        return self._seen.flush(self._written)

    def holds(self, key: HourlyKey) -> bool:
        """Whether the bound partition's state has ``key``'s aggregate."""
        return self._hourly.get(hourly_key_bytes(key)) is not None

    def preload(self, recalled: dict[HourlyKey, Agg]) -> None:
        """Aggregates read back from ClickHouse for hours below the floor (for one batch)."""
        self._recalled = recalled

    def load(self, key: HourlyKey) -> Agg:
        raw = self._hourly.get(hourly_key_bytes(key))
        if raw is None:
            old = self._recalled.get(key)
            return Agg() if old is None else Agg.from_list(old.to_list())
        return Agg.from_list([int(x) for x in raw.split(b",")])

    def store(self, key: HourlyKey, agg: Agg) -> None:
        raw = hourly_key_bytes(key)
        self._hourly[raw] = ",".join(map(str, agg.to_list())).encode()
        hours = self._hours.get(self._partition)
        if hours is not None:  # else the first expiry's scan finds it
            hours.setdefault(key.hour_s * US_PER_SECOND, set()).add(raw)


STATE_TABLES = ("seen", "hourly")  # the dedupe memory, the hourly aggregates


def in_memory_tables() -> tuple[StateTables, dict[str, PartitionedStore]]:
    """The worker's tables, each a :class:`PartitionedStore` (named as in
    :data:`STATE_TABLES`), bound together to the partition of the message being folded."""
    stores = {name: PartitionedStore(name) for name in STATE_TABLES}

    def bind(partition: int) -> None:
        for store in stores.values():
            store.bind(partition)

    seen, hourly = stores["seen"], stores["hourly"]
    return StateTables(seen, hourly, seen.keys_in, bind, hourly.keys_in), stores
