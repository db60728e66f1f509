import json
from datetime import UTC, datetime

from pipeline.domain.aggregate import Agg, fold
from pipeline.domain.events import UsageSample
from pipeline.domain.hours import to_us
from pipeline.worker.processor import Message
from pipeline.worker.tables import BucketedSeen


class Table(dict):  # a Faust table stand-in: bytes -> bytes, recording each write
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
    assert len(table.writes) == 2  # one per (tenant, node, start minute), not 8
    stored = {k.decode(): json.loads(v) for k, v in table.items()}
    assert sorted(len(v) for v in stored.values()) == [2, 6]
    # after a restart (fresh cache), a copy at another position is a duplicate
    again = fold([(items[3][0], 9, 0)], BucketedSeen(table, bind), lambda k: Agg())
    assert again.duplicates == 1 and again.accepted == []
    # and a replay at the same position is not
    replay = fold([items[3]], BucketedSeen(table, bind), lambda k: Agg())
    assert replay.duplicates == 0 and len(replay.accepted) == 1
