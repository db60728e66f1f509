"""Volume tiers: every unit at the price of the tier the total quantity falls in."""

from __future__ import annotations

from fractions import Fraction

from pipeline.domain.charges import Charge, Tier, check_tiers
from pipeline.domain.money import round_money


def charge(label: str, quantity: Fraction, tiers: list[Tier], currency: str) -> list[Charge]:
    check_tiers(tiers)
    for i, tier in enumerate(tiers):
        if tier.up_to is None or quantity <= Fraction(tier.up_to):
            return [
                Charge(
                    f"{label}, volume tier {i + 1}",
                    quantity,
                    tier.price,
                    round_money(quantity * Fraction(tier.price), currency),
                    tier=i + 1,
                )
            ]
    raise AssertionError("unreachable: the last tier is open")
