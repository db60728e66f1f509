"""The key of a line within its document (invoice or chargeback), as one typed value.

A line of a document's own period is keyed by what it charges: ``H100/full``,
``H100/3g.40gb@tier=spot``, ``H100/tier2``, ``discount``, ``minimum``, ``credit/<id>``. A line
that corrects an earlier period (usage that arrived after that period was closed) is keyed
``adj/<period>/<the corrected line's key>``. :class:`LineKey` is the only place that reads or
writes that text: callers ask it what a key is, they never split it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.domain.period import Period

ADJ = "adj"
CREDIT = "credit"
FIXED = ("discount", "minimum")


@dataclass(frozen=True, slots=True, order=True)
class LineKey:
    base: str  # the key of the line in its own period
    adjusts: str = ""  # the period (YYYY-MM) an adjustment line corrects; "" otherwise

    @classmethod
    def parse(cls, text: str) -> LineKey:
        if text.startswith(f"{ADJ}/"):
            _, period, base = text.split("/", 2)
            return cls(base, str(Period.parse(period)))
        return cls(text)

    def format(self) -> str:
        return f"{ADJ}/{self.adjusts}/{self.base}" if self.adjusts else self.base

    def __str__(self) -> str:
        return self.format()

    def adjustment_for(self, period: str) -> LineKey:
        """The key of the line correcting this one of ``period`` on a later document."""
        return LineKey(self.base, period)

    @property
    def original(self) -> LineKey:
        """The corrected line's own key (itself for a line of its own period)."""
        return LineKey(self.base)

    @property
    def is_adjustment(self) -> bool:
        return bool(self.adjusts)

    @property
    def credit_id(self) -> str | None:
        """The prepaid credit a credit line (or its adjustment) draws, else None."""
        prefix = f"{CREDIT}/"
        return self.base[len(prefix) :] if self.base.startswith(prefix) else None

    @property
    def is_fixed(self) -> bool:
        """A line without usage behind it: discount, minimum true-up or credit."""
        return self.base in FIXED or self.credit_id is not None

    @classmethod
    def credit(cls, credit_id: str) -> LineKey:
        return cls(f"{CREDIT}/{credit_id}")
