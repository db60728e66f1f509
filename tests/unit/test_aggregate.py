from datetime import UTC, datetime

from pipeline.domain.aggregate import Agg, fold
from pipeline.domain.events import DedupeKey, UsageSample
from pipeline.domain.hours import to_us
from pipeline.domain.usage import HourlyKey


def sample(ident: str, start_min: int, minutes: int, count: int = 1) -> UsageSample:
    t0 = to_us(datetime(2026, 10, 1, 5, tzinfo=UTC))
    return UsageSample(
        "src",
        ident,
        "acme-ai",
        "",
        "c",
        "r",
        "p",
        "n",
        "H100",
        "",
        count,
        t0 + start_min * 60_000_000,
        t0 + (start_min + minutes) * 60_000_000,
        50.0,
        "",
        "g",
    )


class Store:
    def __init__(self) -> None:
        self.seen: dict[DedupeKey, int] = {}
        self.aggs: dict[HourlyKey, list[int]] = {}

    def load(self, k: HourlyKey) -> Agg:
        return Agg.from_list(self.aggs.get(k))

    def fold(self, items: list[tuple[UsageSample, int, int]]) -> None:
        res = fold(items, self.seen, self.load)
        for k, a in res.dirty.items():
            self.aggs[k] = a.to_list()

    def usage(self) -> list[int]:
        return [v[0] for _, v in sorted(self.aggs.items())]


def test_split_across_hours_and_counts() -> None:
    st = Store()
    st.fold([(sample("a", 50, 20, count=2), 0, 0)])
    assert st.usage() == [2 * 10 * 60_000_000, 2 * 10 * 60_000_000]


def test_duplicate_at_other_offset_or_same_message_counted_once() -> None:
    st = Store()
    s = sample("a", 0, 10)
    st.fold([(s, 0, 0), (s, 0, 1)])  # a copy inside one message
    st.fold([(s, 7, 0)])  # a producer resend
    assert st.usage() == [10 * 60_000_000]


def test_replay_after_crash_is_a_no_op_however_far_state_got() -> None:
    items = [(sample(str(i), i, 1), i // 3, i % 3) for i in range(30)]
    clean = Store()
    clean.fold(items)
    # crash variants: the changelog kept the dedupe memory but not the aggregates, or the
    # reverse, or both; Kafka then redelivers everything from the committed offset 0.
    for keep_seen, keep_aggs in ((True, False), (False, True), (True, True)):
        st = Store()
        st.fold(items[:17])
        if not keep_seen:
            st.seen.clear()
        if not keep_aggs:
            st.aggs.clear()
        st.fold(items)
        assert st.usage() == clean.usage(), (keep_seen, keep_aggs)


def test_replay_marks_keys_dirty_so_clickhouse_is_rewritten() -> None:
    st = Store()
    items = [(sample("a", 0, 10), 5, 0)]
    st.fold(items)
    res = fold(items, st.seen, st.load)
    assert res.replayed_contributions == 1 and res.duplicates == 0
    assert [a.usage_us for a in res.dirty.values()] == [10 * 60_000_000]


def test_late_contributions_still_count_and_are_marked() -> None:
    st = Store()
    s = sample("a", 50, 20)  # 05:50-06:10: 10 min in hour 05, 10 min in hour 06
    t0 = to_us(datetime(2026, 10, 1, 5, tzinfo=UTC))
    hour = 3_600_000_000
    # arrives at 07:30: after hour 05's grace (ends 07:00), inside hour 06's (ends 08:00)
    res = fold([(s, 0, 0)], st.seen, st.load, arrival_us=t0 + 2 * hour + hour // 2, grace_us=hour)
    by_hour = {k.hour_s: a for k, a in res.dirty.items()}
    h5, h6 = t0 // 1_000_000, (t0 + hour) // 1_000_000
    assert (by_hour[h5].usage_us, by_hour[h5].late_us) == (600_000_000, 600_000_000)
    assert (by_hour[h6].usage_us, by_hour[h6].late_us) == (600_000_000, 0)
    assert res.late == [True]
