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
FULL = "full"
TIER = "tier"


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

    @classmethod
    def usage(cls, gpu_model: str, mig_profile: str, price_key: str = "") -> LineKey:
        """A per-unit usage line: ``<model>/<MIG profile or full>[@<price key>]``."""
        return cls(f"{gpu_model}/{mig_profile or FULL}" + (f"@{price_key}" if price_key else ""))

    @classmethod
    def tier(cls, gpu_model: str, tier: int, price_key: str = "") -> LineKey:
        """A graduated or volume tier's usage line: ``<model>/tier<n>[@<price key>]``."""
        return cls(f"{gpu_model}/{TIER}{tier}" + (f"@{price_key}" if price_key else ""))

    @property
    def gpu_model(self) -> str:
        """The GPU model of a usage line ("" for a fixed line)."""
        return "" if self.is_fixed else self.base.partition("/")[0]

    @property
    def mig_profile(self) -> str:
        """The MIG profile of a per-unit usage line ("" for a full GPU, a tier or a fixed
        line)."""
        if self.is_fixed:
            return ""
        what = self.base.partition("/")[2].partition("@")[0]
        return "" if what == FULL or what.startswith(TIER) else what
