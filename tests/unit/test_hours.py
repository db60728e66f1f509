from datetime import UTC, datetime, timedelta

import pytest

from pipeline.domain.hours import HOUR_US, from_us, split_by_hour, to_us


def us(h: int, m: int = 0, s: int = 0, micro: int = 0) -> int:
    return to_us(datetime(2026, 10, 1, h, m, s, micro, tzinfo=UTC))


def test_inside_one_hour() -> None:
    assert split_by_hour(us(5, 10), us(5, 20)) == [(us(5), 600_000_000)]


def test_crossing_one_boundary_in_proportion() -> None:
    assert split_by_hour(us(5, 50), us(6, 5)) == [(us(5), 600_000_000), (us(6), 300_000_000)]


def test_exactly_on_boundaries_is_half_open() -> None:
    assert split_by_hour(us(5), us(6)) == [(us(5), HOUR_US)]
    assert split_by_hour(us(5), us(7)) == [(us(5), HOUR_US), (us(6), HOUR_US)]


def test_many_hours_and_microseconds_sum_exactly() -> None:
    start, end = us(0, 0, 0, 1), us(23, 59, 59, 999_999)
    parts = split_by_hour(start, end)
    assert len(parts) == 24
    assert sum(p for _, p in parts) == end - start


def test_month_of_one_second_samples_has_no_drift() -> None:
    start = us(0)
    total = 0
    for i in range(31 * 86400 // 60):  # a sample a minute for a month: still exact
        total += sum(
            p for _, p in split_by_hour(start + i * 60_000_000, start + i * 60_000_000 + 1_000_001)
        )
    assert total == (31 * 86400 // 60) * 1_000_001


def test_rejects_empty_interval() -> None:
    with pytest.raises(ValueError):
        split_by_hour(us(5), us(5))


def test_to_us_round_trip_and_naive_refused() -> None:
    dt = datetime(2026, 10, 31, 23, 59, 59, 123456, tzinfo=UTC)
    assert from_us(to_us(dt)) == dt
    assert to_us(dt + timedelta(microseconds=1)) - to_us(dt) == 1
    with pytest.raises(ValueError):
        to_us(datetime(2026, 1, 1))
