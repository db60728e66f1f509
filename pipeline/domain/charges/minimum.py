"""Minimum commitment: when the period's charges fall short of the commitment, a true-up line
brings the total up to it; usage above the commitment is billed as it is."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from pipeline.domain.charges import Charge


def true_up(subtotal: Decimal, commitment: Decimal) -> list[Charge]:
    if commitment <= subtotal:
        return []
    short = commitment - subtotal  # both already whole minor units: exact, no rounding
    return [
        Charge(f"Minimum commitment true-up (commitment {commitment})", Fraction(1), short, short)
    ]
