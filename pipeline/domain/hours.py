"""Splitting usage intervals across UTC hours, in exact integer micro-seconds.

Billable quantity is allocated GPUs x wall time (brief §4). A half-open interval
``[start, end)`` that crosses an hour boundary is split across the hours it covers, each
hour getting exactly the micro-seconds that fall inside it, so the parts always sum to the
whole and nothing drifts however many samples a month holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

US_PER_SECOND = 1_000_000
HOUR_US = 3600 * US_PER_SECOND


def to_us(ts: datetime) -> int:
    """Aware datetime -> integer micro-seconds since the epoch (exact, no float)."""
    if ts.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    return (ts - _EPOCH) // _ONE_US  # timedelta // timedelta: an exact int, computed in C


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    seconds, micros = divmod(us, US_PER_SECOND)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)


def hour_floor_us(us: int) -> int:
    return us - us % HOUR_US


def split_by_hour(start_us: int, end_us: int) -> list[tuple[int, int]]:
    """Return ``[(hour_start_us, overlap_us), ...]`` for the half-open ``[start_us, end_us)``.

    >>> split_by_hour(3_000 * 10**6, 4_200 * 10**6)
    [(0, 600000000), (3600000000, 600000000)]
    """
    if end_us <= start_us:
        raise ValueError("end must be after start")
    parts: list[tuple[int, int]] = []
    hour = hour_floor_us(start_us)
    cursor = start_us
    while cursor < end_us:
        nxt = min(hour + HOUR_US, end_us)
        parts.append((hour, nxt - cursor))
        cursor = nxt
        hour += HOUR_US
    return parts


def on_whole_hour(value: datetime | None) -> datetime | None:
    """An effective date as configured, in UTC; refused unless on a whole hour, because
    usage is metered per hour (a change mid-hour could not be applied)."""
    if value is None:
        return value
    value = value.astimezone(UTC)
    if value.minute or value.second or value.microsecond:
        raise ValueError(
            f"{value.isoformat()} is not on a whole UTC hour (usage is metered per hour)"
        )
    return value


def check_window(effective_from: datetime | None, effective_until: datetime | None) -> None:
    """An effective-dated entry's window: ``until`` (exclusive) after ``from`` when both set."""
    if effective_from is not None and effective_until is not None:
        if effective_until <= effective_from:
            raise ValueError("effective_until must be after effective_from")
