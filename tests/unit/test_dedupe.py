"""The dedupe horizon's pure rules (pipeline/domain/dedupe.py), with the real fold."""

from __future__ import annotations

from pipeline.domain.aggregate import Agg, fold
from pipeline.domain.dedupe import DUPLICATE, HorizonSeen, next_floor
from pipeline.domain.events import DedupeKey, UsageSample
from pipeline.domain.hours import HOUR_US

H0 = 1_790_000_000 // 3600 * 3600 * 1_000_000  # an hour's start, in µs


def test_the_floor_rises_in_whole_hours_and_never_falls() -> None:
    assert next_floor(0, H0 + 5 * HOUR_US + 59 * 60_000_000, 2 * HOUR_US) == H0 + 3 * HOUR_US
    assert next_floor(H0 + 3 * HOUR_US, H0 + 5 * HOUR_US + 1, 2 * HOUR_US) is None  # same hour
    assert next_floor(H0 + 3 * HOUR_US, H0 + 4 * HOUR_US, 2 * HOUR_US) is None  # older mark
    assert next_floor(H0 + 3 * HOUR_US, H0 + 6 * HOUR_US, 2 * HOUR_US) == H0 + 4 * HOUR_US


def sample(ident: str, start_us: int) -> UsageSample:
    return UsageSample(
        "//n", ident, "acme-ai", "", "c", "r", "p", "n", "H100", "", 1, start_us,
        start_us + 60_000_000, None, "", "g",
    )  # fmt: skip


def test_below_the_floor_answers_come_from_the_batch_then_the_recall() -> None:
    floor = H0 + HOUR_US
    old_seen, old_dup, old_new = (sample(i, H0) for i in ("seen-here", "seen-elsewhere", "new"))
    fresh = sample("fresh", floor)
    memory: dict[DedupeKey, int] = {}
    recalled = {
        old_seen.dedupe_key: frozenset({(0, 7)}),  # accepted at this message: a replay
        old_dup.dedupe_key: frozenset({(0, 3)}),  # accepted at another message
    }
    seen = HorizonSeen(memory, {0: floor}, recalled)
    seen.at(0, 7)
    assert seen.get(old_dup.dedupe_key) == DUPLICATE
    items = [(s, 7, i) for i, s in enumerate([old_seen, old_dup, old_new, fresh, old_new])]
    res = fold(items, seen, lambda k: Agg())
    assert [s.id for s in res.accepted] == ["seen-here", "new", "fresh"]
    assert res.duplicates == 2  # seen-elsewhere, and new's second copy in the same batch
    assert list(memory) == [fresh.dedupe_key]  # only what is at or above the floor is kept
    seen.at(1, 7)  # another partition: no floor there, everything goes to memory
    assert seen.get(old_new.dedupe_key) is None
