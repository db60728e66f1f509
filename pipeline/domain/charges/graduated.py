"""Graduated tiers: each unit is priced by the tier it falls in; one line per tier used."""

from __future__ import annotations

from fractions import Fraction

from pipeline.domain.charges import Charge, Tier, check_tiers
from pipeline.domain.money import round_money


def charge(label: str, quantity: Fraction, tiers: list[Tier], currency: str) -> list[Charge]:
    check_tiers(tiers)
    out = []
    lower = Fraction(0)
    for i, tier in enumerate(tiers):
        upper = Fraction(tier.up_to) if tier.up_to is not None else None
        in_tier = (min(quantity, upper) if upper is not None else quantity) - lower
        if in_tier <= 0:
            break
        span = f"{lower}-{upper}" if upper is not None else f"over {lower}"
        out.append(
            Charge(
                f"{label}, tier {i + 1} ({span} h)",
                in_tier,
                tier.price,
                round_money(in_tier * Fraction(tier.price), currency),
                tier=i + 1,
            )
        )
        if upper is None or quantity <= upper:
            break
        lower = upper
    return out
