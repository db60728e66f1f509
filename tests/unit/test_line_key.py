"""The typed line key and the charged-line rules of the domain (no string split by callers)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from pipeline.domain.adjustments import Billed
from pipeline.domain.charged import ChargedLine, billed, carried_in, charging, credits_drawn
from pipeline.domain.errors import BillingError
from pipeline.domain.line_key import LineKey


@pytest.mark.parametrize(
    ("text", "base", "adjusts", "credit", "fixed", "model", "profile"),
    [
        ("H100/full", "H100/full", "", None, False, "H100", ""),
        ("H100/3g.40gb@tier=spot", "H100/3g.40gb@tier=spot", "", None, False, "H100", "3g.40gb"),
        (
            "H200/tier2@region=eu-north-1",
            "H200/tier2@region=eu-north-1",
            "",
            None,
            False,
            "H200",
            "",
        ),
        ("discount", "discount", "", None, True, "", ""),
        ("credit/q4/2026", "credit/q4/2026", "", "q4/2026", True, "", ""),
        ("adj/2026-10/H100/full", "H100/full", "2026-10", None, False, "H100", ""),
        ("adj/2026-10/credit/early", "credit/early", "2026-10", "early", True, "", ""),
    ],
)
def test_parse_and_format_round_trip(
    text: str, base: str, adjusts: str, credit: str | None, fixed: bool, model: str, profile: str
) -> None:
    key = LineKey.parse(text)
    assert (key.base, key.adjusts, key.credit_id, key.is_fixed) == (base, adjusts, credit, fixed)
    assert (key.gpu_model, key.mig_profile) == (model, profile)
    assert key.format() == str(key) == text
    assert key.original == LineKey(base)
    assert key.original.adjustment_for("2026-11").format() == f"adj/2026-11/{base}"


def test_builders_and_a_bad_period() -> None:
    assert LineKey.usage("H100", "", "tier=spot").format() == "H100/full@tier=spot"
    assert LineKey.usage("A100", "3g.40gb").format() == "A100/3g.40gb"
    assert LineKey.tier("H100", 3).format() == "H100/tier3"
    assert LineKey.credit("q4").credit_id == "q4"
    with pytest.raises(BillingError):
        LineKey.parse("adj/october/H100/full")


def line(period: str, key: str, minor: int, document: str = "") -> ChargedLine:
    return ChargedLine(
        "t",
        document or f"GM-{period}-t",
        period,
        LineKey.parse(key),
        "adjustment" if key.startswith("adj/") else "usage",
        Decimal(minor) / 100,
        minor,
        minor * 10,
        Fraction(minor, 7),
    )


LINES = [
    line("2026-10", "H100/full", 2000),
    line("2026-10", "credit/q4", -500),
    line("2026-11", "H100/full", 1000),
    line("2026-11", "adj/2026-10/H100/full", 600),
    line("2026-11", "adj/2026-10/credit/q4", -100),
    line("2026-12", "adj/2026-10/H100/full", 300),
    line("2026-12", "adj/2026-11/H100/full", 50),
]


def test_what_charges_a_period_and_what_it_billed() -> None:
    assert [ln.key.format() for ln in charging("2026-10", LINES)] == [
        "H100/full",
        "credit/q4",
        "adj/2026-10/H100/full",
        "adj/2026-10/credit/q4",
        "adj/2026-10/H100/full",
    ]
    assert len(charging("2026-10", LINES, excluding_period="2026-12")) == 4
    assert billed(charging("2026-10", LINES)) == {
        "H100/full": Billed(2900, 29000, Fraction(2900, 7)),
        "credit/q4": Billed(-600, -6000, Fraction(-600, 7)),
    }
    assert carried_in("2026-10", LINES) == ["2026-11", "2026-12"]
    assert carried_in("2026-12", LINES) == []


def test_credits_drawn_by_lines_and_adjustments() -> None:
    assert credits_drawn(LINES) == {"q4": Decimal("6.00")}
    assert credits_drawn(LINES, excluding_document="GM-2026-10-t") == {"q4": Decimal("1.00")}
    assert credits_drawn(LINES, excluding_ref="2026-10") == {"q4": Decimal("5.00")}
