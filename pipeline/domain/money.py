"""Money: Decimal amounts in a currency, rounded ONCE, at the invoice line.

Rounding rule (the only place it is stated): a line's exact amount (an exact rational
quantity x a Decimal unit price) is rounded to the currency's minor unit, half away from
zero (ROUND_HALF_UP, "commercial rounding"). Totals are sums of rounded lines, so they never
need rounding again.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

MINOR_UNITS: dict[str, int] = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "JPY": 0}


def minor_digits(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise ValueError(
            f"unsupported currency {currency!r}; known: {', '.join(sorted(MINOR_UNITS))}"
        ) from None


def round_money(exact: Fraction | Decimal | int, currency: str) -> Decimal:
    """Round an exact amount to the currency's minor unit, half up (away from zero)."""
    digits = minor_digits(currency)
    q = Fraction(exact) * 10**digits
    sign = -1 if q < 0 else 1
    q = abs(q)
    whole, rest = divmod(q.numerator, q.denominator)
    if 2 * rest >= q.denominator:
        whole += 1
    minor = sign * whole
    return (Decimal(minor) / (Decimal(10) ** digits)).quantize(
        Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP
    )


def to_minor(amount: Decimal, currency: str) -> int:
    """Decimal amount (already rounded) -> integer minor units, refusing sub-minor values."""
    scaled = amount.scaleb(minor_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not a whole number of minor units")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    digits = minor_digits(currency)
    return (Decimal(minor).scaleb(-digits)).quantize(Decimal(1).scaleb(-digits))


def refuse_float(value: object) -> object:
    """A price as configured: a binary float is refused (it cannot hold most decimal prices
    exactly); anything else is left to the field's own validation."""
    if isinstance(value, float):
        raise ValueError(
            f"price is a binary float ({value!r}); write it as a quoted decimal string, "
            f"e.g. '{value}'"
        )
    return value
