"""Prepaid credits, drawn down in order of expiry (soonest first).

A credit pays only for charges incurred while it is valid (from ``granted_at`` to
``expires_at``, half-open), so a credit that expires in the middle of a period covers the
usage before its expiry and none after. Charges come per hour as exact amounts and are drawn
in time order; what each credit pays is rounded once (half up) to the minor unit, which can
never exceed its balance because balances are whole minor units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from pipeline.domain.money import round_money


class Credit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    amount: Decimal = Field(gt=0)
    granted_at: AwareDatetime
    expires_at: AwareDatetime


@dataclass(frozen=True, slots=True)
class Drawdown:
    credit_id: str
    used: Decimal
    remaining: Decimal


def draw(
    charges: Sequence[tuple[datetime, Fraction]],
    credits: Sequence[Credit],
    currency: str,
    already_used: dict[str, Decimal] | None = None,
) -> list[Drawdown]:
    """``charges``: (when, exact amount). Returns what each credit pays, soonest expiry first."""
    used = dict(already_used or {})
    balance = {c.id: Fraction(c.amount - used.get(c.id, Decimal(0))) for c in credits}
    start = dict(balance)
    drawn = {c.id: Fraction(0) for c in credits}
    by_expiry = sorted(credits, key=lambda c: (c.expires_at, c.id))
    for when, amount in sorted(charges, key=lambda x: x[0]):
        due = amount
        for c in by_expiry:
            if due <= 0:
                break
            if not c.granted_at <= when < c.expires_at or balance[c.id] <= 0:
                continue
            take = min(due, balance[c.id])
            balance[c.id] -= take
            drawn[c.id] += take
            due -= take
    out = []
    for c in by_expiry:
        if drawn[c.id] > 0:
            paid = round_money(drawn[c.id], currency)
            out.append(Drawdown(c.id, paid, round_money(start[c.id], currency) - paid))
    return out
