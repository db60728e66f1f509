from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.money import from_minor, round_money, to_minor
from pipeline.domain.period import Period


@pytest.mark.parametrize(
    ("exact", "currency", "expected"),
    [
        (Fraction(1, 200), "USD", Decimal("0.01")),  # 0.005 -> half up
        (Fraction(1, 201), "USD", Decimal("0.00")),
        (Fraction(-1, 200), "USD", Decimal("-0.01")),  # half away from zero
        (Decimal("2.345"), "EUR", Decimal("2.35")),
        (Decimal("2.3449999"), "EUR", Decimal("2.34")),
        (Fraction(5, 2), "JPY", Decimal("3")),
        (Fraction(2, 7) * Fraction("2.49"), "USD", Decimal("0.71")),  # 0.7114...
    ],
)
def test_round_money_half_up_once(
    exact: Fraction | Decimal, currency: str, expected: Decimal
) -> None:
    assert round_money(exact, currency) == expected
    assert str(round_money(exact, currency)) == str(expected)


def test_minor_units_round_trip_and_refuse_fractions_of_a_cent() -> None:
    assert to_minor(Decimal("12.34"), "USD") == 1234
    assert from_minor(1234, "USD") == Decimal("12.34")
    with pytest.raises(ValueError, match="minor units"):
        to_minor(Decimal("12.345"), "USD")
    with pytest.raises(ValueError, match="unsupported currency"):
        round_money(1, "XXX")


def test_period_parse_and_bounds() -> None:
    p = Period.parse("2026-12")
    assert p.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert p.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert str(Period.previous(datetime(2026, 1, 15, tzinfo=UTC))) == "2025-12"


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "26-10", "", "2026/10", "1999-01"])
def test_bad_period_refused_with_code(bad: str) -> None:
    with pytest.raises(BillingError) as err:
        Period.parse(bad)
    assert err.value.code is BillingErrorCode.INVALID_PERIOD
    assert "YYYY-MM" in str(err.value) or "month" in str(err.value)
