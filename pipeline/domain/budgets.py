"""Monthly budgets per cost centre (``config/budgets.yaml``, issue 11). Pure.

* **Month-to-date** (MTD): what the cost centre is charged in the period so far (use + idle
  share, its whole subtree, adjustments carried into the period included), from the report.
* **Projected month-end** (run rate): the period's own charges scaled from the time elapsed
  to the whole month, plus the adjustments (they do not recur):
  ``projected = round(own x month_seconds / elapsed_seconds) + adjustments``, where elapsed
  runs from the period's start to the report's ``as_of`` (the data's time); once the month is
  over, projected = MTD. Rounded once, half up, to the minor unit.
* **Status**: ``over`` when MTD exceeds the budget; ``at_risk`` when the projection exceeds
  ``at_risk_pct`` % of it (100 by default: projected to go over); ``ok`` otherwise.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.domain.hierarchy import parse_cost_centre
from pipeline.domain.period import Period

Status = Literal["ok", "at_risk", "over"]
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cost_centre: str
    monthly: Decimal
    effective_from: str | None = Field(default=None, description="first period, YYYY-MM")

    @field_validator("monthly", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            raise ValueError(f"a budget is a binary float ({v!r}); write it quoted, e.g. '{v}'")
        return v

    @field_validator("monthly")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or v < 0:
            raise ValueError("monthly must be a finite amount >= 0")
        return v

    @field_validator("cost_centre")
    @classmethod
    def _path(cls, v: str) -> str:
        parse_cost_centre(v)
        return v

    @field_validator("effective_from")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        if v is not None and not _PERIOD.match(v):
            raise ValueError("effective_from is a period, YYYY-MM")
        return v


class BudgetPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_risk_pct: Decimal = Field(default=Decimal(100), gt=0, le=1000)
    budgets: list[Budget] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> BudgetPlan:
        seen = set()
        for b in self.budgets:
            k = (b.cost_centre, b.effective_from or "")
            if k in seen:
                raise ValueError(f"two budgets for {b.cost_centre!r} from {k[1] or 'the start'}")
            seen.add(k)
        return self

    def for_period(self, period: Period) -> dict[tuple[str, ...], Decimal]:
        """Cost-centre path -> its monthly budget in force in ``period`` (the entry with the
        latest ``effective_from`` not after it)."""
        p = str(period)
        best: dict[tuple[str, ...], tuple[str, Decimal]] = {}
        for b in self.budgets:
            start = b.effective_from or ""
            if start > p:
                continue
            path = parse_cost_centre(b.cost_centre)
            if path not in best or start >= best[path][0]:
                best[path] = (start, b.monthly)
        return {k: v for k, (_, v) in best.items()}


def projected_minor(own_minor: int, adjustment_minor: int, period: Period, as_of: datetime) -> int:
    """Run-rate projection of the month-end charge (see the module doc), in minor units."""
    length = (period.end - period.start).total_seconds()
    elapsed = min(max((as_of - period.start).total_seconds(), 0), length)
    if elapsed <= 0 or elapsed >= length:
        return own_minor + adjustment_minor
    scaled = Fraction(own_minor) * Fraction(int(length)) / Fraction(int(elapsed))
    whole, rest = divmod(abs(scaled.numerator), scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    return (whole if scaled >= 0 else -whole) + adjustment_minor


def status(
    budget_minor: int, mtd_minor: int, projection_minor: int, at_risk_pct: Decimal
) -> Status:
    if mtd_minor > budget_minor:
        return "over"
    if Fraction(projection_minor) * 100 > Fraction(budget_minor) * Fraction(at_risk_pct):
        return "at_risk"
    return "ok"
