"""Percentage discount on an amount, as a negative line rounded once."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from pipeline.domain.charges import Charge
from pipeline.domain.money import round_money


def apply(label: str, base: Decimal, percent: Decimal, currency: str) -> list[Charge]:
    if not Decimal(0) <= percent <= Decimal(100):
        raise ValueError(f"discount must be between 0 and 100 percent, got {percent}")
    if percent == 0 or base == 0:
        return []
    amount = -round_money(Fraction(base) * Fraction(percent) / 100, currency)
    return [Charge(f"{label} ({percent}% off)", Fraction(1), amount, amount)]
