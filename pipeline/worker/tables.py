"""The worker's state as two key-value tables (bytes to bytes): the dedupe memory
(:class:`BucketedSeen`) and the hourly aggregates, behind
:class:`pipeline.worker.processor.Tables` (:class:`StateTables`). The runtime keeps them in a
:class:`pipeline.worker.store.PartitionedStore` each; tests may pass plain dicts.

The dedupe memory is bounded by its horizon (:mod:`pipeline.domain.dedupe`): each partition's
floor is stored in the same table (key ``["floor", partition]``), and :meth:`StateTables.expire`
deletes the buckets below a new floor (a tombstone in the changelog each) before writing it.
Which buckets a partition holds is indexed in memory by start minute, built by one scan of the
partition's keys the first time it expires in this process (and again after a rebalance)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from pipeline.domain.aggregate import Agg
from pipeline.domain.events import DedupeBucket, DedupeKey
from pipeline.domain.usage import HourlyKey, hourly_key_bytes
from pipeline.worker.processor import Message
from pipeline.worker.store import PartitionedStore


class BucketedSeen(MutableMapping[DedupeKey, int]):
    """The dedupe memory as ``DedupeKey -> version``, stored in buckets (one table value per
    tenant, source and start minute: JSON ``{id: version}``, under the bucket's JSON array as
    key). Reads load a bucket once per batch; writes change the cached bucket, and
    :meth:`flush` writes each changed bucket once, to the changelog partition of the message
    that changed it."""

    def __init__(self, table: Any, bind: Any) -> None:
        self._t = table
        self._bind = bind
        self._cache: dict[DedupeBucket, dict[str, int]] = {}
        self._dirty: dict[DedupeBucket, Message] = {}
        self.current: Message | None = None

    @staticmethod
    def bucket_bytes(bucket: DedupeBucket) -> bytes:
        return json.dumps(
            [bucket.tenant_id, bucket.source, bucket.minute_us],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()

    def _members(self, bucket: DedupeBucket) -> dict[str, int]:
        members = self._cache.get(bucket)
        if members is None:
            raw = self._t.get(self.bucket_bytes(bucket))
            members = json.loads(raw) if raw else {}
            self._cache[bucket] = members
        return members

    def __getitem__(self, key: DedupeKey) -> int:
        return self._members(key.bucket)[key.event_id]

    def get(self, key: DedupeKey, default: Any = None) -> Any:
        return self._members(key.bucket).get(key.event_id, default)

    def __setitem__(self, key: DedupeKey, value: int) -> None:
        self._members(key.bucket)[key.event_id] = value
        if key.bucket not in self._dirty and self.current is not None:
            self._dirty[key.bucket] = self.current

    def __delitem__(self, key: DedupeKey) -> None:
        raise NotImplementedError("the dedupe memory only grows")

    def __iter__(self) -> Any:
        raise NotImplementedError("not iterable")

    def __len__(self) -> int:
        return len(self._cache)

    def flush(self, written: Callable[[int, int, bytes], None] | None = None) -> int:
        """Write each changed bucket once; ``written(partition, minute_us, key)`` is told of
        each."""
        count = len(self._dirty)
        for bucket, msg in self._dirty.items():
            self._bind(msg)
            key = self.bucket_bytes(bucket)
            self._t[key] = json.dumps(
                self._cache[bucket], ensure_ascii=False, separators=(",", ":")
            ).encode()
            if written is not None:
                written(msg.partition, bucket.minute_us, key)
        self._dirty.clear()
        self._cache.clear()
        return count


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
    ) -> None:
        self._bind_partition = bind_partition or (lambda partition: None)
        self._seen_table = seen
        self._seen = BucketedSeen(seen, self._bind)
        self.seen: MutableMapping[DedupeKey, int] = self._seen
        self._hourly = hourly
        # the dedupe table's keys held for one partition (default: every key, for mappings
        # that hold one partition, as in tests)
        self._keys_in = keys_in or (lambda partition: list(seen.keys()))
        self._index: dict[int, dict[int, set[bytes]]] = {}  # partition -> minute -> buckets

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
        """After a rebalance: another worker may have changed a partition's buckets."""
        self._index.clear()

    def _partition_index(self, partition: int) -> dict[int, set[bytes]]:
        index = self._index.get(partition)
        if index is None:
            index = {}
            for key in self._keys_in(partition):
                # bucket keys are [tenant, source, minute]; skip the floor keys
                if not bytes(key).startswith(b"["):
                    continue
                parts = json.loads(key)
                if len(parts) == 3:
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
        self._seen_table[self.floor_bytes(msg.partition)] = str(floor_us).encode()
        return dropped

    def _bind(self, msg: Message) -> None:
        self._bind_partition(msg.partition)

    def bind(self, msg: Message) -> None:
        self._bind(msg)
        self._seen.current = msg

    def flush(self) -> int:
        return self._seen.flush(self._written)

    def load(self, key: HourlyKey) -> Agg:
        raw = self._hourly.get(hourly_key_bytes(key))
        return Agg.from_list([int(x) for x in raw.split(b",")] if raw else None)

    def store(self, key: HourlyKey, agg: Agg) -> None:
        self._hourly[hourly_key_bytes(key)] = ",".join(map(str, agg.to_list())).encode()


STATE_TABLES = ("seen", "hourly")  # the dedupe memory, the hourly aggregates


def in_memory_tables() -> tuple[StateTables, dict[str, PartitionedStore]]:
    """The worker's tables, each a :class:`PartitionedStore` (named as in
    :data:`STATE_TABLES`), bound together to the partition of the message being folded."""
    stores = {name: PartitionedStore(name) for name in STATE_TABLES}

    def bind(partition: int) -> None:
        for store in stores.values():
            store.bind(partition)

    seen = stores["seen"]
    return StateTables(seen, stores["hourly"], seen.keys_in, bind), stores
