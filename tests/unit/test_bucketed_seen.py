import json
from datetime import UTC, datetime

from pipeline.domain.aggregate import Agg, fold
from pipeline.domain.events import UsageSample
from pipeline.domain.hours import to_us
from pipeline.worker.processor import Message
from pipeline.worker.tables import BucketedSeen


class Table(dict):  # a state table stand-in: bytes -> bytes, recording each write
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, str]] = []
        self.bound: Message | None = None

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append((key, self.bound.topic if self.bound else "?"))
        super().__setitem__(key, value)


def sample(ident: str, node: str, minute: int) -> UsageSample:
    t0 = to_us(datetime(2026, 10, 1, 5, tzinfo=UTC)) + minute * 60_000_000
    return UsageSample(
        f"//c/{node}",
        ident,
        "acme-ai",
        "",
        "c",
        "r",
        "p",
        node,
        "H100",
        "",
        1,
        t0,
        t0 + 60_000_000,
        None,
        "",
        "g",
    )


def test_one_changelog_write_per_bucket_per_batch_and_dedupe_survives_reload() -> None:
    table = Table()

    def bind(msg: Message) -> None:
        table.bound = msg

    seen = BucketedSeen(table, bind)
    msg = Message("t", 0, 7, b"acme-ai", b"")
    seen.current = msg
    items = [(sample(f"e{i}", "n1" if i < 6 else "n2", 0), 7, i) for i in range(8)]  # 2 reports
    res = fold(items, seen, lambda k: Agg())
    seen.flush()
    assert len(res.accepted) == 8
    assert len(table.writes) == 2  # one per (tenant, node, start hour), not 8
    stored = {k.decode(): json.loads(v) for k, v in table.items()}
    assert sorted(sum(len(ids) for ids in v.values()) for v in stored.values()) == [2, 6]
    # after a restart (fresh cache), a copy at another position is a duplicate
    again = fold([(items[3][0], 9, 0)], BucketedSeen(table, bind), lambda k: Agg())
    assert again.duplicates == 1 and again.accepted == []
    # and a replay at the same position is not
    replay = fold([items[3]], BucketedSeen(table, bind), lambda k: Agg())
    assert replay.duplicates == 0 and len(replay.accepted) == 1


def test_a_nodes_reports_of_one_hour_share_one_slot_and_minutes_stay_apart() -> None:
    """Six reports of one node in one hour (every 10 minutes): one table write; the same id at
    another start minute is another event (the dedupe key holds the minute); the next hour is
    another slot."""
    table = Table()
    seen = BucketedSeen(table, lambda msg: None)
    seen.current = Message("t", 0, 1, b"acme-ai", b"")
    items = [(sample("e", "n1", 10 * r), 1, r) for r in range(6)]
    items.append((sample("e", "n1", 60), 1, 6))  # 06:00: the next hour
    res = fold(items, seen, lambda k: Agg())
    assert len(res.accepted) == 7 and res.duplicates == 0
    seen.flush()
    assert len(table.writes) == 2
    slots = {json.loads(k)[2]: json.loads(v) for k, v in table.items()}
    five = to_us(datetime(2026, 10, 1, 5, tzinfo=UTC))
    assert sorted(slots) == [five, five + 3_600_000_000]
    assert [len(ids) for ids in slots[five].values()] == [1] * 6  # six minutes, "e" in each
    again = BucketedSeen(table, lambda m: None)  # after a restart
    copy = fold([(sample("e", "n1", 20), 2, 0)], again, lambda k: Agg())
    assert copy.duplicates == 1


def test_a_source_sending_many_events_an_hour_fills_bounded_parts() -> None:
    """A source with 2.5 parts of identities in one hour: each stored value holds at most a
    part, a batch rewrites only the parts it changed, every identity is found again after a
    restart (a copy is a duplicate, the replay is not), and expiry drops every part."""
    table = Table()
    seen = BucketedSeen(table, lambda msg: None, part_ids=4)
    seen.current = Message("t", 0, 1, b"acme-ai", b"")
    first = [(sample(f"e{i}", "sched", i % 3), 1, i) for i in range(6)]
    assert len(fold(first, seen, lambda k: Agg()).accepted) == 6
    assert seen.flush() == 2  # parts 0 (4 ids) and 1 (2 ids)
    table.writes.clear()
    more = BucketedSeen(table, lambda msg: None, part_ids=4)
    more.current = Message("t", 0, 2, b"acme-ai", b"")
    second = [(sample(f"f{i}", "sched", i % 3), 2, i) for i in range(4)]
    assert len(fold(second, more, lambda k: Agg()).accepted) == 4
    more.flush()
    # part 0 is full and untouched: parts 1 (now 4 ids) and 2 (2 ids) written
    assert sorted(len(json.loads(k)) for k, _ in table.writes) == [4, 4]
    assert sorted(json.loads(k)[3] for k, _ in table.writes) == [1, 2]
    sizes = sorted(sum(len(ids) for ids in json.loads(v).values()) for v in table.values())
    assert sizes == [2, 4, 4]
    again = BucketedSeen(table, lambda msg: None, part_ids=4)
    copies = fold([(first[1][0], 5, 0), (second[3][0], 5, 1)], again, lambda k: Agg())
    assert copies.duplicates == 2 and copies.accepted == []
    replay = fold([second[3]], BucketedSeen(table, lambda m: None, part_ids=4), lambda k: Agg())
    assert replay.duplicates == 0 and len(replay.accepted) == 1


def test_expiry_drops_every_part_of_a_slot_below_the_floor() -> None:
    from pipeline.worker.tables import StateTables

    seen_table: dict[bytes, bytes] = {}
    tables = StateTables(seen_table, {})
    tables._seen.part_ids = 2
    msg = Message("t", 0, 1, b"acme-ai", b"")
    tables.bind(msg)
    fold([(sample(f"e{i}", "sched", 0), 1, i) for i in range(5)], tables.seen, lambda k: Agg())
    tables.flush()
    assert len(seen_table) == 3  # three parts of one slot
    six = to_us(datetime(2026, 10, 1, 6, tzinfo=UTC))
    assert tables.expire(msg, six) == 3
    assert list(seen_table) == [StateTables.floor_bytes(0)]


def test_parts_keep_hostile_sources_and_ids_apart_and_expire_them() -> None:
    """Quotes, separators, brackets, backslashes and non-ASCII in the source and the ids: every
    part key stays distinct, every identity is found after a restart, expiry parses the
    four-element part keys and drops them all."""
    from pipeline.worker.tables import StateTables

    seen_table: dict[bytes, bytes] = {}
    tables = StateTables(seen_table, {})
    tables._seen.part_ids = 2
    msg = Message("t", 0, 1, b"acme-ai", b"")
    tables.bind(msg)
    node = 'n"1|,[0]\\ü'
    ids = ['e"0', "e|1", "e,2]", "e\\3", "é4 ✓", "[5]"]
    items = [(sample(i, node, 0), 1, n) for n, i in enumerate(ids)]
    assert len(fold(items, tables.seen, lambda k: Agg()).accepted) == 6
    tables.flush()
    assert len(seen_table) == 3
    again = StateTables(seen_table, {})
    copies = fold([(s, 2, n) for s, _, n in items], again.seen, lambda k: Agg())
    assert copies.duplicates == 6
    six = to_us(datetime(2026, 10, 1, 6, tzinfo=UTC))
    assert again.expire(msg, six) == 3
    assert list(seen_table) == [StateTables.floor_bytes(0)]


class CountingTable(Table):
    """Counts the reads, as a slot decoded again would show."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: bytes, default: object = None) -> object:
        self.reads += 1
        return super().get(key, default)


def test_a_slot_stays_decoded_across_batches_and_each_batch_rewrites_only_its_newest_part() -> None:
    """A source reporting in every batch: after the first batch its slot is not read from the
    table again, and each batch writes one part of at most ``part_ids`` identities (not the
    whole hour's); every identity stays a duplicate, after a restart as well."""
    table = CountingTable()
    seen = BucketedSeen(table, lambda msg: None, part_ids=8, keep_ids=0)
    written: list[int] = []
    for batch in range(10):
        seen.current = Message("t", 0, batch, b"acme-ai", b"")
        items = [(sample(f"b{batch}-{g}", "n1", batch % 3), batch, g) for g in range(4)]
        assert len(fold(items, seen, lambda k: Agg()).accepted) == 4
        if batch == 1:
            reads = table.reads
        table.writes.clear()
        seen.flush()
        written += [sum(len(ids) for ids in json.loads(table[k]).values()) for k, _ in table.writes]
    assert table.reads == reads  # decoded once, in the first batch
    assert len(written) == 10 and max(written) <= 8
    assert seen.held() == 40
    again = BucketedSeen(table, lambda msg: None, part_ids=8)
    copies = [(sample(f"b{b}-{g}", "n1", b % 3), 99, g) for b in range(10) for g in range(4)]
    assert fold(copies, again, lambda k: Agg()).duplicates == 40


def test_the_decoded_slots_are_bounded_and_a_dropped_slot_is_read_again() -> None:
    table = CountingTable()
    seen = BucketedSeen(table, lambda msg: None, part_ids=4, cache_ids=10, keep_ids=0)
    seen.current = Message("t", 0, 1, b"acme-ai", b"")
    items = [(sample(f"e{i}", f"n{i % 5}", 0), 1, i) for i in range(25)]  # 5 slots x 5 ids
    assert len(fold(items, seen, lambda k: Agg()).accepted) == 25
    seen.flush()
    assert seen.held() == 10  # the two most recently used slots
    before = table.reads
    copies = fold([(s, 2, n) for s, _, n in items], seen, lambda k: Agg())
    assert copies.duplicates == 25
    assert table.reads > before  # the dropped slots were read from the table again


def test_forget_drops_the_decoded_slots_so_a_changed_table_is_read_again() -> None:
    """What a rebalance and a changelog recovery do: the table changes behind the memory's
    back; after :meth:`StateTables.forget_index` the memory answers from the table."""
    from pipeline.worker.tables import StateTables

    seen_table: dict[bytes, bytes] = {}
    tables = StateTables(seen_table, {})
    tables._seen.keep_ids = 0
    msg = Message("t", 0, 1, b"acme-ai", b"")
    tables.bind(msg)
    first = (sample("e1", "n1", 0), 1, 0)
    fold([first], tables.seen, lambda k: Agg())
    tables.flush()
    other = StateTables(seen_table, {})  # another worker adds an identity to the same slot
    other.bind(msg)
    second = (sample("e2", "n1", 0), 2, 0)
    fold([second], other.seen, lambda k: Agg())
    other.flush()
    tables.forget_index()
    assert tables._seen.held() == 0
    copies = fold([(first[0], 3, 0), (second[0], 3, 1)], tables.seen, lambda k: Agg())
    assert copies.duplicates == 2


def test_expiry_drops_the_decoded_slots_below_the_floor() -> None:
    from pipeline.worker.tables import StateTables

    tables = StateTables({}, {})
    tables._seen.keep_ids = 0
    msg = Message("t", 0, 1, b"acme-ai", b"")
    tables.bind(msg)
    items = [(sample("a", "n1", 0), 1, 0), (sample("b", "n1", 60), 1, 1)]  # 05:00 and 06:00
    fold(items, tables.seen, lambda k: Agg())
    tables.flush()
    assert tables._seen.held() == 2
    tables.expire(msg, to_us(datetime(2026, 10, 1, 6, tzinfo=UTC)))
    assert tables._seen.held() == 1  # the 06:00 slot stays


def test_small_slots_are_not_kept_after_a_flush_large_ones_are() -> None:
    table = CountingTable()
    seen = BucketedSeen(table, lambda msg: None, part_ids=4, keep_ids=6)
    seen.current = Message("t", 0, 1, b"acme-ai", b"")
    small = [(sample(f"s{i}", "n1", 0), 1, i) for i in range(3)]
    large = [(sample(f"l{i}", "n2", 0), 1, 3 + i) for i in range(7)]
    assert len(fold(small + large, seen, lambda k: Agg()).accepted) == 10
    seen.flush()
    assert seen.held() == 7  # only n2's slot
    copies = fold([(s, 2, n) for s, _, n in small + large], seen, lambda k: Agg())
    assert copies.duplicates == 10
