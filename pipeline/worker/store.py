"""The worker's state in memory: one key-value table (bytes to bytes) per partition owned, and
the changes since the last checkpoint, which the runtime writes to the table's changelog topic
once per key (:mod:`pipeline.worker.runtime`, step 4).

A key lives in the partition of the message that wrote it (a tenant's events all sit in its
key's partition, so do its dedupe buckets and hourly aggregates): reads and writes go to the
partition bound by :meth:`PartitionedStore.bind`. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping


class PartitionedStore(MutableMapping[bytes, bytes]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._parts: dict[int, dict[bytes, bytes]] = {}
        self._changed: dict[int, dict[bytes, bytes | None]] = {}  # None: deleted
        self._partition = -1

    def bind(self, partition: int) -> None:
        """Route the following reads and writes to ``partition``."""
        self._partition = partition

    def _data(self) -> dict[bytes, bytes]:
        data = self._parts.get(self._partition)
        if data is None:
            if self._partition < 0:
                raise RuntimeError(f"state {self.name}: no partition bound")
            data = self._parts[self._partition] = {}
        return data

    def __getitem__(self, key: bytes) -> bytes:
        return self._data()[key]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self._data().get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._data()[key] = value
        self._changed.setdefault(self._partition, {})[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self._data()[key]
        self._changed.setdefault(self._partition, {})[key] = None

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._data()))

    def __len__(self) -> int:
        return sum(len(d) for d in self._parts.values())

    def keys_in(self, partition: int) -> list[bytes]:
        return list(self._parts.get(partition, {}))

    def held(self) -> set[int]:
        return set(self._parts)

    def changes(self) -> dict[int, dict[bytes, bytes | None]]:
        """Per partition: each key changed since :meth:`checkpointed`, with its last value."""
        return self._changed

    def checkpointed(self) -> None:
        self._changed = {}

    def hold(self, partition: int) -> None:
        """Own ``partition`` (empty until records are restored into it)."""
        self._parts.setdefault(partition, {})

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (``None``: a tombstone) while recovering."""
        data = self._parts.setdefault(partition, {})
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked, or about to be recovered from its changelog)."""
        self._parts.pop(partition, None)
        self._changed.pop(partition, None)
