"""Billing periods. A usage period is a calendar month in UTC, ``[start, end)``; it is
distinct from the invoice date (when the invoice is issued, after the period closed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.domain.errors import BillingError, BillingErrorCode

_PERIOD = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, slots=True)
class Period:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        m = _PERIOD.fullmatch(text or "")
        if not m:
            raise BillingError(
                BillingErrorCode.INVALID_PERIOD,
                f"period {text!r} is not of the form YYYY-MM (for example 2026-10)",
            )
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12 or year < 2000:
            raise BillingError(
                BillingErrorCode.INVALID_PERIOD,
                f"period {text!r}: month must be 01-12, year >= 2000",
            )
        return cls(year, month)

    @classmethod
    def previous(cls, now: datetime) -> Period:
        return cls(now.year - 1, 12) if now.month == 1 else cls(now.year, now.month - 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        nxt = Period(self.year + 1, 1) if self.month == 12 else Period(self.year, self.month + 1)
        return nxt.start

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
