"""Charge models at their edges: tier boundaries exactly at a threshold, commitments met and
missed, credits that expire mid-period, discounts; every line rounded once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from pydantic import ValidationError

from pipeline.domain.charges import Tier, Tiers, discount, graduated, minimum, per_unit, volume
from pipeline.domain.charges.credits import Credit, draw

D = Decimal
TIERS = [
    Tier(up_to=D(100), price=D("2.49")),
    Tier(up_to=D(500), price=D("2.19")),
    Tier(price=D("1.99")),
]


def amounts(lines: list) -> list[Decimal]:
    return [ln.amount for ln in lines]


def test_per_unit_rounds_once_half_up() -> None:
    (line,) = per_unit.charge("H100", Fraction(1, 3), D("2.49"), "USD")
    assert line.amount == D("0.83")  # 0.83


@pytest.mark.parametrize(
    ("qty", "expected"),
    [
        (Fraction(100), [D("249.00")]),  # exactly at the first threshold: all in tier 1
        (Fraction(100) + Fraction(1, 3600), [D("249.00"), D("0.00")]),  # one GPU-second over
        (Fraction(101), [D("249.00"), D("2.19")]),
        (Fraction(500), [D("249.00"), D("876.00")]),
        (Fraction(600), [D("249.00"), D("876.00"), D("199.00")]),
        (Fraction(0), []),
    ],
)
def test_graduated_prices_each_unit_in_its_tier(qty: Fraction, expected: list[Decimal]) -> None:
    lines = graduated.charge("H100", qty, TIERS, "USD")
    assert amounts(lines) == expected
    assert sum((ln.quantity for ln in lines), Fraction(0)) == qty


@pytest.mark.parametrize(
    ("qty", "price"),
    [
        (Fraction(100), D("2.49")),
        (Fraction(101), D("2.19")),
        (Fraction(500), D("2.19")),
        (Fraction(501), D("1.99")),
    ],
)
def test_volume_prices_every_unit_at_the_tier_of_the_total(qty: Fraction, price: Decimal) -> None:
    (line,) = volume.charge("H100", qty, TIERS, "USD")
    assert line.unit_price == price and line.amount == (D(qty.numerator) * price).quantize(
        D("0.01")
    )


def test_bad_tiers_refused_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="strictly increase"):
        Tiers(tiers=[Tier(up_to=D(5), price=D(1)), Tier(up_to=D(5), price=D(1)), Tier(price=D(1))])
    with pytest.raises(ValidationError, match="last tier must be open"):
        Tiers(tiers=[Tier(up_to=D(5), price=D(1))])


def test_minimum_commitment_not_met_is_trued_up_and_exceeded_is_not() -> None:
    (line,) = minimum.true_up(D("712.40"), D("1000.00"))
    assert line.amount == D("287.60")
    assert minimum.true_up(D("1000.00"), D("1000.00")) == []
    assert minimum.true_up(D("1200.01"), D("1000.00")) == []


def test_percentage_discount_is_a_negative_line_rounded_once() -> None:
    (line,) = discount.apply("Partner discount", D("1234.57"), D("7.5"), "EUR")
    assert line.amount == D("-92.59")  # 92.59275
    assert discount.apply("x", D("10"), D("0"), "USD") == []
    with pytest.raises(ValueError, match="between 0 and 100"):
        discount.apply("x", D("10"), D("120"), "USD")


def test_credits_drawn_soonest_expiry_first_and_only_while_valid() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    hourly = [(start + timedelta(hours=h), Fraction(1)) for h in range(31 * 24)]  # 744.00
    mid = Credit(
        id="promo",
        amount=D("100"),
        granted_at=start - timedelta(days=30),
        expires_at=start + timedelta(days=15),
    )  # expires mid-period
    later = Credit(
        id="prepaid",
        amount=D("1000"),
        granted_at=start - timedelta(days=1),
        expires_at=start + timedelta(days=365),
    )
    used = {d.credit_id: (d.used, d.remaining) for d in draw(hourly, [later, mid], "USD")}
    assert used["promo"] == (D("100.00"), D("0.00"))  # first 100 hours, before it expires
    assert used["prepaid"] == (D("644.00"), D("356.00"))
    # usage only after the promo expired: the promo pays nothing
    late = [(start + timedelta(days=20), Fraction(50))]
    got = {d.credit_id: d.used for d in draw(late, [mid, later], "USD")}
    assert got == {"prepaid": D("50.00")}
    # a balance already used elsewhere is respected
    got = {d.credit_id: d.used for d in draw(late, [later], "USD", {"prepaid": D("990")})}
    assert got == {"prepaid": D("10.00")}
