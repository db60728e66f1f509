"""The worker's in-memory state (``PartitionedStore``): reads and writes go to the bound
partition, changes are kept once per key (last value or tombstone) until checkpointed, and a
partition is restored from changelog records exactly as it was written."""

from __future__ import annotations

import pytest

from pipeline.worker.store import PartitionedStore


def test_writes_go_to_the_bound_partition_and_are_kept_once_per_key() -> None:
    s = PartitionedStore("t")
    with pytest.raises(RuntimeError, match="no partition bound"):
        s.get(b"k")
    s.bind(0)
    s[b"a"] = b"1"
    s[b"a"] = b"2"
    s[b"b"] = b"x"
    del s[b"b"]
    s.bind(1)
    assert s.get(b"a") is None  # another partition's key is not visible here
    s[b"a"] = b"9"
    assert s.changes() == {0: {b"a": b"2", b"b": None}, 1: {b"a": b"9"}}
    s.checkpointed()
    assert s.changes() == {}
    s.bind(0)
    assert s[b"a"] == b"2" and len(s) == 2 and sorted(s.held()) == [0, 1]


def test_a_partition_restored_from_its_records_equals_the_one_written() -> None:
    written = PartitionedStore("t")
    written.bind(3)
    records: list[tuple[bytes, bytes | None]] = []
    for i in range(50):
        written[b"k%d" % (i % 7)] = b"v%d" % i
        records.append((b"k%d" % (i % 7), b"v%d" % i))
        if i % 11 == 0:
            del written[b"k%d" % (i % 7)]
            records.append((b"k%d" % (i % 7), None))
    restored = PartitionedStore("t")
    restored.hold(3)
    for key, value in records:
        restored.restore(3, key, value)
    restored.bind(3)
    written.bind(3)
    assert dict(restored.items()) == dict(written.items())
    assert restored.changes() == {}  # restoring is not a change to checkpoint again
    restored.drop(3)
    assert restored.held() == set()
