"""Charge models, one per module (brief §5). Each is a pure function from exact quantities
and Decimal prices to :class:`Charge` lines; every line is rounded once, to the currency's
minor unit (:func:`pipeline.domain.money.round_money`), and totals are sums of lines.

* :mod:`.per_unit`: quantity x price;
* :mod:`.graduated`: each unit at the price of the tier it falls in (one line per tier);
* :mod:`.volume`: every unit at the price of the tier the total falls in;
* :mod:`.minimum`: a minimum commitment, trued up when usage falls short;
* :mod:`.discount`: a percentage off;
* :mod:`.credits`: prepaid credits drawn down in order of expiry.

Not yet wired into the billing run (issue #5 continues).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True, slots=True)
class Charge:
    label: str
    quantity: Fraction
    unit_price: Decimal
    amount: Decimal
    tier: int = 0  # 1-based tier of a graduated or volume charge, 0 otherwise


class Tier(BaseModel):
    """``up_to`` is inclusive (a quantity exactly at the threshold belongs to this tier);
    ``None`` for the last, open tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: Decimal | None = Field(default=None, gt=0)
    price: Decimal = Field(ge=0)


def check_tiers(tiers: list[Tier]) -> list[Tier]:
    if not tiers:
        raise ValueError("at least one tier is needed")
    bounds = [t.up_to for t in tiers]
    if bounds[-1] is not None:
        raise ValueError("the last tier must be open (no up_to)")
    if any(b is None for b in bounds[:-1]):
        raise ValueError("only the last tier may be open")
    closed = [b for b in bounds[:-1] if b is not None]
    if closed != sorted(closed) or len(set(closed)) != len(closed):
        raise ValueError("tier thresholds must strictly increase")
    return tiers


class Tiers(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tiers: list[Tier]

    @field_validator("tiers")
    @classmethod
    def _valid(cls, v: list[Tier]) -> list[Tier]:
        return check_tiers(v)
