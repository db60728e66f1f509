"""The worker state's changelog on the real broker: a checkpoint writes each changed key once
(tombstones for deletions) and waits for Kafka; recovering a partition from its changelog gives
back exactly the state written; the changelog's end tells whether another worker wrote since."""

from __future__ import annotations

import pytest

from pipeline.adapters.kafka import make_producer
from pipeline.settings import Settings
from pipeline.worker import changelog
from pipeline.worker.tables import in_memory_tables

pytestmark = [pytest.mark.kafka]


def test_a_partition_recovered_from_the_changelog_is_the_state_checkpointed(
    settings: Settings,
) -> None:
    changelog.ensure(settings)
    producer = make_producer(settings.kafka_bootstrap)
    try:
        _, stores = in_memory_tables()
        cp = changelog.Checkpoint(settings, producer)
        seen, hourly = stores["seen"], stores["hourly"]
        for rnd in range(3):  # three checkpoints; keys rewritten and deleted between them
            for p in (0, 2):
                seen.bind(p)
                hourly.bind(p)
                for i in range(40):
                    hourly[b"h%d-%d" % (p, i)] = b"%d,%d" % (rnd, i)
                    seen[b"s%d-%d" % (p, i % 9)] = b'{"e%d":%d}' % (i, rnd)
                if rnd == 1:
                    del seen[b"s%d-3" % p]  # a tombstone
            sent = cp.state(stores)
            assert sent == 2 * (40 + 9)  # once per changed key, a deleted one as a tombstone
            cp.dead_letter(b"k", b"dead")
            cp.flush()
            assert seen.changes() == {} and cp.pending == []
        ends = changelog.ends(settings, [0, 1, 2, 3])
        assert ends == {k: v for k, v in ends.items() if k[1] in (0, 2)} | {
            (changelog.topic(settings, t), p): 0 for t in ("seen", "hourly") for p in (1, 3)
        }
        assert all(cp.written_to[k] == v for k, v in ends.items() if k[1] in (0, 2))

        left: list[int] = []
        _, fresh = in_memory_tables()
        recovered = changelog.recover(settings, fresh, [0, 1, 2], left.append)
        assert recovered == {k: v for k, v in ends.items() if k[1] in (0, 1, 2)}
        assert left[0] == sum(v for k, v in ends.items() if k[1] in (0, 2)) and left[-1] == 0
        for name, store in stores.items():
            for p in (0, 2):
                store.bind(p)
                fresh[name].bind(p)
                assert dict(fresh[name].items()) == dict(store.items())
        assert sorted(fresh["seen"].held()) == [0, 1, 2]  # an empty changelog still holds p1
        fresh["seen"].bind(0)
        assert b"s0-3" in fresh["seen"]  # rewritten after its tombstone, in round 2
    finally:
        producer.close(timeout=10)
