"""Per unit: quantity x unit price, one line."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from pipeline.domain.charges import Charge
from pipeline.domain.money import round_money


def charge(label: str, quantity: Fraction, price: Decimal, currency: str) -> list[Charge]:
    return [Charge(label, quantity, price, round_money(quantity * Fraction(price), currency))]
