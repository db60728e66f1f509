"""Billing scenarios over whole periods, with an injected clock (in the style of lago-api's
``spec/scenarios``).

Each test builds a small configuration of its own (1-3 tenants, a rate card and a contract
written here), inserts hourly usage straight into ``usage_hourly`` of an in-process current
ClickHouse (chdb), bills through :class:`BillingRun` against the recording fake Stripe, and
checks amounts computed by hand in the test, statuses, line kinds and keys, what reached
Stripe, and that ``reconcile`` explains every cent.

The clock is a mutable holder the test advances; the billing code reads it through
``clock.now``. With the default 72 h grace, October 2026 stays a draft until
2026-11-04T00:00Z and is finalized from that instant on.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from pipeline.adapters.ledger import HEADER_COLS
from pipeline.domain.charged import credits_drawn
from pipeline.domain.rating import idempotency_key
from tests.scenarios.world import (
    DEC,
    DEC_FINAL,
    NOV,
    NOV_FINAL,
    OCT,
    OCT_FINAL,
    H,
    World,
    at,
    external,
    gm,
    per_unit_card,
    result,
)

pytestmark = [pytest.mark.chdb]


# -- 1. tiers at their thresholds ---------------------------------------------------------------

TIERED_CARD = {
    "id": "growth-usd",
    "currency": "USD",
    "prices": [
        {
            "gpu_model": "H100",
            "charge": "graduated",
            "tiers": [
                {"up_to": "500", "price": "2.29"},
                {"up_to": "2000", "price": "2.09"},
                {"price": "1.89"},
            ],
        },
        {
            "gpu_model": "H200",
            "charge": "volume",
            "tiers": [{"up_to": "1000", "price": "3.19"}, {"price": "2.89"}],
        },
    ],
}


def test_graduated_tiers_at_their_thresholds(world: World) -> None:
    world.configure(
        [external(t, "growth-usd") for t in ("g-500", "g-500us", "g-2000", "g-2001")],
        [TIERED_CARD],
    )
    world.spread("g-500", at(10, 2), 25, 500 * H)  # exactly at the first threshold
    world.spread("g-500us", at(10, 2), 25, 500 * H + 1)  # one GPU-µs over it
    world.spread("g-2000", at(10, 2), 100, 2000 * H)  # exactly at the second threshold
    world.spread("g-2001", at(10, 2), 100, 2001 * H)

    report = world.bill(OCT, OCT_FINAL)

    # 500 h x 2.29 = 1145.00: the threshold is inclusive, so one tier line only
    r = result(report, "g-500")
    assert (r.status, r.amount, r.gpu_hours) == ("finalized", Decimal("1145.00"), Fraction(500))
    assert world.amounts(r.invoice_id) == {"H100/tier1": ("usage", Decimal("1145.00"))}

    # 500 h + 1 µs: the µs falls in tier 2 (1/3.6e9 h x 2.09 rounds to 0.00)
    r = result(report, "g-500us")
    assert r.gpu_hours == 500 + Fraction(1, H)
    lines = world.lines(r.invoice_id)
    assert list(lines) == ["H100/tier1", "H100/tier2"]
    assert Fraction(lines["H100/tier2"]["quantity_exact"]) == Fraction(1, H)
    assert (lines["H100/tier1"]["amount_minor"], lines["H100/tier2"]["amount_minor"]) == (
        114500,
        0,
    )
    assert r.amount == Decimal("1145.00")

    # 2000 h: 500 x 2.29 = 1145.00 + 1500 x 2.09 = 3135.00 -> 4280.00, no tier-3 line
    r = result(report, "g-2000")
    assert world.amounts(r.invoice_id) == {
        "H100/tier1": ("usage", Decimal("1145.00")),
        "H100/tier2": ("usage", Decimal("3135.00")),
    }
    assert r.amount == Decimal("4280.00")

    # 2001 h: ... + 1 x 1.89 -> 4281.89
    r = result(report, "g-2001")
    assert world.amounts(r.invoice_id) == {
        "H100/tier1": ("usage", Decimal("1145.00")),
        "H100/tier2": ("usage", Decimal("3135.00")),
        "H100/tier3": ("usage", Decimal("1.89")),
    }
    assert r.amount == Decimal("4281.89")
    assert world.reconcile(OCT).clean


def test_volume_tiers_at_their_boundary(world: World) -> None:
    world.configure(
        [external(t, "growth-usd") for t in ("v-1000", "v-1001")],
        [TIERED_CARD],
    )
    world.spread("v-1000", at(10, 3), 50, 1000 * H, gpu="H200")
    world.spread("v-1001", at(10, 3), 50, 1001 * H, gpu="H200")

    report = world.bill(OCT, OCT_FINAL)

    # exactly 1000 h: every unit at the tier-1 price, 1000 x 3.19 = 3190.00
    r = result(report, "v-1000")
    (line,) = world.lines(r.invoice_id).values()
    assert line["line_key"] == "H200/tier1"
    assert (line["kind"], line["unit_price"], line["amount_minor"]) == ("usage", "3.19", 319000)
    assert Fraction(line["quantity_exact"]) == 1000
    assert r.amount == Decimal("3190.00")

    # 1001 h: every unit at the tier-2 price, 1001 x 2.89 = 2892.89 (less than for 1000 h)
    r = result(report, "v-1001")
    (line,) = world.lines(r.invoice_id).values()
    assert line["line_key"] == "H200/tier2"
    assert "volume tier 2" in line["description"]
    assert (line["unit_price"], line["amount_minor"]) == ("2.89", 289289)
    assert Fraction(line["quantity_exact"]) == 1001
    assert r.amount == Decimal("2892.89")
    assert world.reconcile(OCT).clean


# -- 2. minimum commitment ----------------------------------------------------------------------


def test_minimum_commitment_not_met_and_exceeded(world: World) -> None:
    world.configure(
        [external(t, "list-usd") for t in ("short", "over", "exact")],
        [per_unit_card()],
        [
            {"tenant": "short", "discount_pct": "10", "minimum_commitment": "1000.00"},
            {"tenant": "over", "discount_pct": "10", "minimum_commitment": "1000.00"},
            {"tenant": "exact", "minimum_commitment": "1000.00"},
        ],
    )
    world.spread("short", at(10, 5), 10, 300 * H)
    world.spread("over", at(10, 5), 10, 600 * H)
    world.spread("exact", at(10, 5), 10, 500 * H)

    report = world.bill(OCT, OCT_FINAL)

    # 300 h x 2.00 = 600.00, -10 % = -60.00 -> 540.00; true-up 1000.00 - 540.00 = 460.00
    r = result(report, "short")
    assert world.amounts(r.invoice_id) == {
        "H100/full": ("usage", Decimal("600.00")),
        "discount": ("discount", Decimal("-60.00")),
        "minimum": ("minimum", Decimal("460.00")),
    }
    assert (r.status, r.amount) == ("finalized", Decimal("1000.00"))

    # 600 h x 2.00 = 1200.00, -120.00 -> 1080.00 >= 1000.00: no true-up
    r = result(report, "over")
    assert world.amounts(r.invoice_id) == {
        "H100/full": ("usage", Decimal("1200.00")),
        "discount": ("discount", Decimal("-120.00")),
    }
    assert r.amount == Decimal("1080.00")

    # 500 h x 2.00 = 1000.00, exactly the commitment: no true-up line (not even 0.00)
    r = result(report, "exact")
    assert world.amounts(r.invoice_id) == {"H100/full": ("usage", Decimal("1000.00"))}
    assert r.amount == Decimal("1000.00")

    rec = world.reconcile(OCT)
    assert rec.clean
    short = next(t for t in rec.tenants if t.tenant_id == "short")
    assert short.explained["minimum"] == 460 and short.explained["discount"] == -60


# -- 3. prepaid credits expiring mid-period -----------------------------------------------------

CREDITS = [
    {
        "id": "early",
        "amount": "500.00",
        "granted_at": "2026-09-01T00:00:00Z",
        "expires_at": "2026-10-15T00:00:00Z",
    },
    {
        "id": "q4",
        "amount": "1000.00",
        "granted_at": "2026-10-01T00:00:00Z",
        "expires_at": "2027-01-01T00:00:00Z",
    },
]


def test_credits_expiring_mid_period_and_carried_to_the_next(world: World) -> None:
    world.configure(
        [external("cred", "list-usd")],
        [per_unit_card()],
        [{"tenant": "cred", "credits": CREDITS}],
    )
    # 200 h before "early" expires (400.00), 300 h after (600.00)
    world.spread("cred", at(10, 14, 4), 20, 200 * H)  # 10-14 04:00 .. 23:00
    world.spread("cred", at(10, 15, 0), 30, 300 * H)  # 10-15 00:00 .. 10-16 05:00

    r = result(world.bill(OCT, OCT_FINAL), "cred")
    # early pays the 400.00 before its expiry (its last 100.00 expire unused); q4 pays the
    # 600.00 after it; 1000.00 - 400.00 - 600.00 = 0.00
    assert world.amounts(r.invoice_id) == {
        "H100/full": ("usage", Decimal("1000.00")),
        "credit/early": ("credit", Decimal("-400.00")),
        "credit/q4": ("credit", Decimal("-600.00")),
    }
    assert (r.status, r.amount) == ("finalized", Decimal("0.00"))
    assert world.invoice(r.invoice_id).credits_minor == -100000
    assert credits_drawn(world.ledger.charged_lines("cred", before="2026-11")) == {
        "early": Decimal("400.00"),
        "q4": Decimal("600.00"),
    }
    assert world.reconcile(OCT).clean

    # November: 400 h = 800.00; early has expired, q4 has 400.00 left and pays only that
    world.spread("cred", at(11, 10), 20, 400 * H)
    r = result(world.bill(NOV, NOV_FINAL), "cred")
    assert world.amounts(r.invoice_id) == {
        "H100/full": ("usage", Decimal("800.00")),
        "credit/q4": ("credit", Decimal("-400.00")),
    }
    assert r.amount == Decimal("400.00")
    assert world.reconcile(NOV).clean

    # December: q4 is spent, nothing more is drawn
    world.spread("cred", at(12, 10), 5, 10 * H)
    r = result(world.bill(DEC, DEC_FINAL), "cred")
    assert world.amounts(r.invoice_id) == {"H100/full": ("usage", Decimal("20.00"))}
    assert r.amount == Decimal("20.00")


def drawn_from(world: World, tenant_id: str, credit_id: str) -> Decimal:
    """What a credit paid on all of the tenant's finalized invoices (credit lines and credit
    adjustments of earlier periods)."""
    total = Decimal(0)
    for period in ("2026-10", "2026-11", "2026-12"):
        for view in world.ledger.invoices(period, tenant_id):
            if view.status == "finalized":
                for key, (_, amount) in world.amounts(view.invoice_id).items():
                    if key == f"credit/{credit_id}" or key.endswith(f"/credit/{credit_id}"):
                        total -= amount
    return total


@pytest.mark.parametrize(
    "late_arrives",
    ["after_next_bill", "before_next_bill"],
)
def test_late_usage_never_draws_a_credit_past_its_balance(world: World, late_arrives: str) -> None:
    """q4 (1000.00) pays October's 600.00 and 400.00 of November's 800.00. Late usage for
    October (+20.00) must not be paid from q4 again, whether it arrives after November was
    invoiced or before."""
    world.configure(
        [external("cred", "list-usd")],
        [per_unit_card()],
        [{"tenant": "cred", "credits": CREDITS}],
    )
    world.spread("cred", at(10, 20), 30, 300 * H)  # 600.00, all after early's expiry
    assert result(world.bill(OCT, OCT_FINAL), "cred").amount == Decimal("0.00")
    world.spread("cred", at(11, 10), 20, 400 * H)  # 800.00
    world.spread("cred", at(12, 10), 5, 10 * H)  # 20.00
    late = (at(10, 20), 20 * H)  # the 10 h row of 2026-10-20 00:00 grows to 20 h: +20.00
    if late_arrives == "before_next_bill":
        world.usage("cred", *late, version=2)
    world.bill(NOV, NOV_FINAL)
    if late_arrives == "after_next_bill":
        world.usage("cred", *late, version=2)
    world.bill(DEC, DEC_FINAL)

    assert drawn_from(world, "cred", "q4") == Decimal("1000.00")
    assert drawn_from(world, "cred", "early") == 0
    # usage 600 + 20 + 800 + 20 = 1440.00, less the 1000.00 prepaid
    totals = [v.total for p in ("2026-10", "2026-11", "2026-12") for v in world.ledger.invoices(p)]
    assert sum(totals, Decimal(0)) == Decimal("440.00"), totals
    for period in (OCT, NOV, DEC):
        assert world.reconcile(period).clean


# -- 4. price change mid-period -----------------------------------------------------------------


def test_price_change_mid_period_splits_the_usage(world: World) -> None:
    world.configure(
        [external("switch", "list-usd")],
        [
            {
                "id": "list-usd",
                "currency": "USD",
                "prices": [
                    {"gpu_model": "H100", "price": "2.50", "effective_until": "2026-10-15T00:00Z"},
                    {"gpu_model": "H100", "price": "2.00", "effective_from": "2026-10-15T00:00Z"},
                ],
            }
        ],
    )
    world.spread("switch", at(10, 14, 14), 10, 100 * H)  # 10-14 14:00 .. 23:00 -> price A
    world.spread("switch", at(10, 15, 0), 5, 50 * H)  # 10-15 00:00 .. 04:00 -> price B

    r = result(world.bill(OCT, OCT_FINAL), "switch")
    lines = world.lines(r.invoice_id)
    assert set(lines) == {"H100/full@until=2026-10-15T00", "H100/full@from=2026-10-15T00"}
    before = lines["H100/full@until=2026-10-15T00"]
    after = lines["H100/full@from=2026-10-15T00"]
    # 100 h x 2.50 = 250.00 and 50 h x 2.00 = 100.00
    assert (Fraction(before["quantity_exact"]), before["unit_price"]) == (100, "2.50")
    assert (Fraction(after["quantity_exact"]), after["unit_price"]) == (50, "2.00")
    assert (before["amount_minor"], after["amount_minor"]) == (25000, 10000)
    assert (before["hourly_rows"], after["hourly_rows"]) == (10, 5)
    assert {before["kind"], after["kind"]} == {"usage"}
    assert r.amount == Decimal("350.00") and r.gpu_hours == 150
    assert world.reconcile(OCT).clean


# -- 5. late usage after finalization -----------------------------------------------------------


def test_late_usage_after_finalization_goes_on_the_next_invoice(world: World) -> None:
    world.configure([external("late", "list-usd")], [per_unit_card()])
    world.spread("late", at(10, 3), 10, 100 * H)  # 10 rows x 10 h = 100 h = 200.00

    r = result(world.bill(OCT, OCT_FINAL), "late")
    assert (r.status, r.amount) == ("finalized", Decimal("200.00"))
    oct_id = r.invoice_id
    final_before = world.invoice(oct_id)
    lines_before = world.ledger.lines(oct_id, final_before.revision)

    # the 10-03 05:00 row grows from 10 h to 13 h after October was finalized
    world.usage("late", at(10, 3, 5), 13 * H, version=2)
    world.clock.advance(days=1)
    r = result(world.bill(OCT), "late")
    assert r.status == "changed_after_final"
    assert r.amount == Decimal("200.00")
    final_after = world.invoice(oct_id)
    assert (final_after.revision, final_after.total_minor, final_after.status) == (
        final_before.revision,
        20000,
        "finalized",
    )
    assert world.ledger.lines(oct_id, final_after.revision) == lines_before
    rec = world.reconcile(OCT)
    assert rec.clean and rec.tenants[0].explained["usage_since_invoicing"] == -6

    # November: 5 h = 10.00 of its own, plus 3 h x 2.00 = 6.00 for October
    world.spread("late", at(11, 2), 5, 5 * H)
    r = result(world.bill(NOV, NOV_FINAL), "late")
    lines = world.lines(r.invoice_id)
    assert set(lines) == {"H100/full", "adj/2026-10/H100/full"}
    adj = lines["adj/2026-10/H100/full"]
    assert (adj["kind"], adj["period_ref"], adj["amount_minor"]) == ("adjustment", "2026-10", 600)
    assert Fraction(adj["quantity_exact"]) == 3 and adj["usage_us"] == 3 * H
    assert lines["H100/full"]["amount_minor"] == 1000
    assert (r.status, r.amount) == ("finalized", Decimal("16.00"))
    stripe_items = world.fake.items_for(world.invoice(r.invoice_id).stripe_invoice_id)
    assert sorted(i["amount"] for i in stripe_items) == [600, 1000]

    # billing November again: unchanged, nothing new in Stripe
    items = len(world.fake.created("invoiceitem"))
    world.clock.advance(days=2)
    r = result(world.bill(NOV), "late")
    assert (r.status, r.amount) == ("unchanged", Decimal("16.00"))
    assert len(world.fake.created("invoiceitem")) == items
    # October again: its late usage is now on November's invoice
    assert result(world.bill(OCT), "late").status == "adjusted"

    rec = world.reconcile(OCT)
    assert rec.clean and rec.tenants[0].adjusted_later == Decimal("6.00")
    assert world.reconcile(NOV).clean


def test_late_usage_in_a_month_below_its_minimum_nets_to_zero(world: World) -> None:
    world.configure(
        [external("floor", "list-usd")],
        [per_unit_card()],
        [{"tenant": "floor", "minimum_commitment": "500.00"}],
    )
    world.spread("floor", at(10, 3), 10, 100 * H)  # 200.00, true-up 300.00
    r = result(world.bill(OCT, OCT_FINAL), "floor")
    assert world.amounts(r.invoice_id) == {
        "H100/full": ("usage", Decimal("200.00")),
        "minimum": ("minimum", Decimal("300.00")),
    }

    world.usage("floor", at(10, 3, 5), 13 * H, version=2)  # +3 h = +6.00 for October
    world.spread("floor", at(11, 2), 10, 300 * H)  # November: 600.00, above its minimum
    r = result(world.bill(NOV, NOV_FINAL), "floor")
    # October recomputed: usage 206.00, true-up 294.00: +6.00 and -6.00
    assert world.amounts(r.invoice_id) == {
        "H100/full": ("usage", Decimal("600.00")),
        "adj/2026-10/H100/full": ("adjustment", Decimal("6.00")),
        "adj/2026-10/minimum": ("adjustment", Decimal("-6.00")),
    }
    assert {ln["period_ref"] for k, ln in world.lines(r.invoice_id).items() if "adj/" in k} == {
        "2026-10"
    }
    assert (r.status, r.amount) == ("finalized", Decimal("600.00"))
    assert world.reconcile(OCT).clean and world.reconcile(NOV).clean


# -- 6. rerun of a finalized period -------------------------------------------------------------


def test_rerun_of_a_finalized_period_changes_nothing(world: World) -> None:
    world.configure(
        [external("one", "list-usd"), external("two", "list-usd")],
        [per_unit_card()],
        [{"tenant": "two", "discount_pct": "5"}],
    )
    world.spread("one", at(10, 1), 24, 48 * H)  # 96.00
    world.spread("two", at(10, 1), 24, 100 * H)  # 200.00 - 10.00 = 190.00

    first = world.bill(OCT, OCT_FINAL)
    assert [(r.tenant_id, r.status, r.amount) for r in first.results] == [
        ("one", "finalized", Decimal("96.00")),
        ("two", "finalized", Decimal("190.00")),
    ]
    counts, requests = world.stripe_counts(), len(world.fake.requests)
    assert counts == (2, 2, 3)

    world.clock.advance(days=10)
    second = world.bill(OCT)
    assert [
        (r.tenant_id, r.status, r.amount, r.invoice_id, r.gpu_hours) for r in second.results
    ] == [(r.tenant_id, "unchanged", r.amount, r.invoice_id, r.gpu_hours) for r in first.results]
    assert world.stripe_counts() == counts
    assert len(world.fake.requests) == requests  # not even a replayed request
    assert [v.revision for v in world.ledger.invoices("2026-10")] == [1, 1]
    assert world.reconcile(OCT).clean


# -- 7. draft grace -----------------------------------------------------------------------------


def test_draft_during_grace_then_finalized(world: World) -> None:
    world.configure([external("grace", "list-usd")], [per_unit_card()])
    world.spread("grace", at(10, 30), 10, 50 * H)  # 100.00
    world.usage("grace", at(11, 1, 0), 7 * H)  # November's first hour: not October's

    r = result(world.bill(OCT, at(11, 2)), "grace")
    assert (r.status, r.amount) == ("draft", Decimal("100.00"))
    assert world.fake.requests == []
    view = world.invoice(r.invoice_id)
    assert (view.status, view.revision) == ("draft", 1)

    # nothing changed: no new revision
    r = result(world.bill(OCT, at(11, 2, 12)), "grace")
    assert (r.status, world.invoice(r.invoice_id).revision) == ("draft", 1)

    # usage arriving during grace: a second draft revision with the new total
    world.usage("grace", at(10, 31, 23), 10 * H)  # +10 h = +20.00
    r = result(world.bill(OCT, at(11, 3, 23)), "grace")
    assert (r.status, r.amount) == ("draft", Decimal("120.00"))
    view = world.invoice(r.invoice_id)
    assert (view.status, view.revision, view.total_minor) == ("draft", 2, 12000)
    assert world.fake.requests == []

    # one second before the grace ends: still a draft, still nothing sent
    world.clock.set(OCT_FINAL - timedelta(seconds=1))
    assert result(world.bill(OCT), "grace").status == "draft"
    assert world.fake.requests == []

    # grace over (period end + 72 h exactly): finalized with revision 2's content
    r = result(world.bill(OCT, OCT_FINAL), "grace")
    assert (r.status, r.amount) == ("finalized", Decimal("120.00"))
    view = world.invoice(r.invoice_id)
    assert (view.status, view.revision) == ("finalized", 2)
    assert world.fake.invoice(view.stripe_invoice_id)["amount_due"] == 12000
    assert world.reconcile(OCT).clean


# -- 8. zero usage ------------------------------------------------------------------------------


def test_zero_usage_invoice_only_when_the_contract_asks(world: World) -> None:
    world.configure(
        [external("audit", "list-usd"), external("quiet", "list-usd")],
        [per_unit_card()],
        [{"tenant": "audit", "zero_invoice": True}, {"tenant": "quiet"}],
    )
    report = world.bill(OCT, OCT_FINAL)

    assert [r.tenant_id for r in report.results] == ["audit"]
    r = result(report, "audit")
    assert (r.status, r.amount, r.gpu_hours) == ("finalized", Decimal("0.00"), 0)
    view = world.invoice(r.invoice_id)
    assert (view.total_minor, view.line_count, view.status) == (0, 0, "finalized")
    assert world.lines(r.invoice_id) == {}
    assert world.fake.items_for(view.stripe_invoice_id) == []
    assert world.fake.invoice(view.stripe_invoice_id)["amount_due"] == 0

    assert world.ledger.current("quiet", "2026-10") is None
    assert world.ledger.invoices("2026-10", "quiet") == []
    assert world.reconcile(OCT).clean


# -- 9. two currencies, rounded once per line ---------------------------------------------------


def test_eur_and_usd_each_rounded_half_up_once_per_line(world: World) -> None:
    world.configure(
        [external("yank", "list-usd"), external("euro", "list-eur", "EUR")],
        [
            {"id": "list-usd", "currency": "USD", "prices": {"H100": "2.29", "A100": "1.29"}},
            {"id": "list-eur", "currency": "EUR", "prices": {"H100": "2.19"}},
        ],
    )
    world.spread("yank", at(10, 7), 10, 100 * H + H // 2)  # 100.5 h
    world.usage("yank", at(10, 7), H // 2, gpu="A100")  # 0.5 h
    world.spread("euro", at(10, 7), 7, 101 * H + H // 2)  # 101.5 h

    report = world.bill(OCT, OCT_FINAL)

    # 100.5 h x 2.29 = 230.145 -> 230.15 (half-even would give 230.14);
    # 0.5 h x 1.29 = 0.645 -> 0.65; total 230.80, one cent over the rounded exact 230.79
    usd = result(report, "yank")
    assert world.amounts(usd.invoice_id) == {
        "A100/full": ("usage", Decimal("0.65")),
        "H100/full": ("usage", Decimal("230.15")),
    }
    assert (usd.currency, usd.amount) == ("USD", Decimal("230.80"))
    # 101.5 h x 2.19 = 222.285 -> 222.29 (half-even: 222.28)
    eur = result(report, "euro")
    assert world.amounts(eur.invoice_id) == {"H100/full": ("usage", Decimal("222.29"))}
    assert (eur.currency, eur.amount) == ("EUR", Decimal("222.29"))

    exact = world.lines(usd.invoice_id)["H100/full"]["exact_amount"]
    assert Fraction(exact) == Fraction("230.145")
    for tenant, currency, amounts in ((usd, "usd", [65, 23015]), (eur, "eur", [22229])):
        items = world.fake.items_for(world.invoice(tenant.invoice_id).stripe_invoice_id)
        assert sorted(i["amount"] for i in items) == amounts
        assert {i["currency"] for i in items} == {currency}
    assert report.totals() == {
        ("external", "EUR"): Decimal("222.29"),
        ("external", "USD"): Decimal("230.80"),
    }

    rec = world.reconcile(OCT)
    assert rec.clean
    assert rec.summary_line() == (
        "reconcile: period=2026-10 tenants=2 metered=EUR:222.29,USD:230.79 "
        "invoiced=EUR:222.29,USD:230.80 unexplained=EUR:0.00,USD:0.00"
    )
    yank = next(t for t in rec.tenants if t.tenant_id == "yank")
    assert yank.explained["rounding"] == Fraction("0.005") + Fraction("0.005")


# -- 10. a Stripe failure for one tenant --------------------------------------------------------


def test_stripe_failure_for_one_tenant_then_recovery(world: World) -> None:
    world.configure(
        [external("alpha", "list-usd"), external("bravo", "list-usd")], [per_unit_card()]
    )
    world.spread("alpha", at(10, 9), 2, 10 * H)  # 20.00
    world.spread("bravo", at(10, 9), 2, 15 * H)  # 30.00
    world.usage("bravo", at(10, 9), 7 * H, mig="3g.40gb")  # 7 x 3/7 = 3 h = 6.00

    # the draft gives bravo's invoice revision and content, hence its Stripe idempotency key
    world.bill(OCT, at(11, 2))
    draft = world.invoice(gm(OCT, "bravo"))
    key = idempotency_key("invoice", draft.invoice_id, draft.revision, draft.content_hash)
    world.fake.fail("POST", "/v1/invoices", times=None, kind="400", idempotency_key=key)

    report = world.bill(OCT, OCT_FINAL)
    alpha, bravo = result(report, "alpha"), result(report, "bravo")
    assert (alpha.status, alpha.amount) == ("finalized", Decimal("20.00"))
    assert (bravo.status, bravo.amount) == ("failed", Decimal("36.00"))
    assert bravo.error.startswith("parameter_invalid: ") and "HTTP 400" in bravo.error
    assert "sk_test_x" not in bravo.error
    assert [r.tenant_id for r in report.failed] == ["bravo"]
    (failure,) = world.ledger.failures("2026-10")
    assert (failure["tenant_id"], failure["invoice_id"], failure["stage"]) == (
        "bravo",
        gm(OCT, "bravo"),
        "stripe_sync",
    )
    assert (failure["http_status"], failure["transient"], failure["code"]) == (
        400,
        0,
        "parameter_invalid",
    )
    assert world.invoice(gm(OCT, "bravo")).status == "draft"
    assert len(world.fake.created("invoice")) == 1

    # still failing while the fault lasts; then it clears and the rerun finalizes bravo
    world.clock.advance(hours=1)
    assert result(world.bill(OCT), "bravo").status == "failed"
    assert len(world.ledger.failures("2026-10")) == 2
    world.fake.clear_failures()
    world.clock.advance(hours=1)
    report = world.bill(OCT)
    assert result(report, "alpha").status == "unchanged"
    bravo = result(report, "bravo")
    assert (bravo.status, bravo.amount) == ("finalized", Decimal("36.00"))
    assert world.invoice(bravo.invoice_id).revision == 1

    # every line of both invoices exists exactly once in Stripe, on the right invoice
    expected = sorted(
        (f"{inv}/{key}", ln["amount_minor"])
        for inv in (gm(OCT, "alpha"), gm(OCT, "bravo"))
        for key, ln in world.lines(inv).items()
    )
    created = sorted(
        (i["metadata"]["line_id"], i["amount"]) for i in world.fake.created("invoiceitem")
    )
    assert created == expected
    assert len(expected) == 3
    assert world.stripe_counts() == (2, 2, 3)
    assert world.reconcile(OCT).clean


# -- 11. void and reissue -----------------------------------------------------------------------


def test_void_then_replacement_invoice(world: World) -> None:
    world.configure([external("oops", "list-usd")], [per_unit_card()])
    world.spread("oops", at(10, 12), 4, 40 * H)  # 80.00
    first = result(world.bill(OCT, OCT_FINAL), "oops")
    assert (first.invoice_id, first.status) == (gm(OCT, "oops"), "finalized")
    stripe_first = world.invoice(first.invoice_id).stripe_invoice_id

    world.clock.advance(days=1)
    view = world.billing.invoicer.void(first.invoice_id, "wrong billing address")
    assert view.status == "void"
    assert world.invoice(first.invoice_id).status == "void"
    assert world.fake.invoice(stripe_first)["status"] == "void"
    (note,) = world.ledger.credit_notes(first.invoice_id)
    assert (note["credit_note_id"], note["total_minor"], note["currency"]) == (
        f"CN-{first.invoice_id}",
        -8000,
        "USD",
    )
    assert note["reason"] == "wrong billing address"
    # voiding again changes nothing
    assert world.billing.invoicer.void(first.invoice_id, "again").status == "void"
    assert len(world.ledger.credit_notes(first.invoice_id)) == 1

    world.clock.advance(days=1)
    r = result(world.bill(OCT), "oops")
    assert (r.invoice_id, r.status, r.amount) == (
        f"{gm(OCT, 'oops')}-R2",
        "finalized",
        Decimal("80.00"),
    )
    replacement = world.invoice(r.invoice_id)
    assert replacement.stripe_invoice_id not in ("", stripe_first)
    assert world.amounts(r.invoice_id) == {"H100/full": ("usage", Decimal("80.00"))}
    assert [v.status for v in world.ledger.invoices("2026-10", "oops")] == ["void", "finalized"]
    assert world.ledger.current("oops", "2026-10") == replacement

    world.clock.advance(days=1)
    counts = world.stripe_counts()
    assert result(world.bill(OCT), "oops").status == "unchanged"
    assert world.stripe_counts() == counts == (1, 2, 2)
    rec = world.reconcile(OCT)
    assert rec.clean and rec.tenants[0].invoice_id == r.invoice_id


# -- 12. reconciliation catches what it must --------------------------------------------------


def test_reconcile_flags_a_tampered_total_and_unbilled_usage(world: World) -> None:
    world.configure([external("one", "list-usd"), external("two", "list-usd")], [per_unit_card()])
    world.spread("one", at(10, 1), 24, 48 * H)  # 96.00
    world.bill(OCT, OCT_FINAL)
    rec = world.reconcile(OCT)
    assert rec.clean
    (one,) = rec.tenants
    assert one.line() == (
        "reconcile: tenant=one invoice=GM-2026-10-one status=finalized currency=USD "
        "metered=96.00 invoiced=96.00 unexplained=0.00"
    )

    # a revision whose header claims one cent more than its lines
    view = world.invoice(gm(OCT, "one"))
    header = {
        **{k: getattr(view, k) for k in HEADER_COLS},
        "revision": view.revision + 1,
        "total_minor": view.total_minor + 1,
    }
    lines = [
        {**ln, "revision": view.revision + 1}
        for ln in world.ledger.lines(view.invoice_id, view.revision)
    ]
    cols = ["invoice_id", "revision", "line_key", "tenant_id", "hour", "project_id"]
    cols += ["gpu_model", "mig_profile", "region", "provider", "cluster", "usage_us"]
    sources = [
        {**dict(zip(cols, r, strict=True)), "revision": view.revision + 1}
        for r in world.ex.execute(
            f"SELECT {', '.join(cols)} FROM ledger_line_sources WHERE invoice_id = %(i)s",
            {"i": view.invoice_id},
        )
    ]
    world.ledger.save_revision(header, lines, sources)
    # usage of a tenant that no billing run has seen
    world.spread("two", at(10, 2), 1, 1 * H)  # 2.00
    rec = world.reconcile(OCT)
    assert not rec.clean
    by = {t.tenant_id: t for t in rec.tenants}
    assert by["one"].unexplained == Fraction(1, 100)
    assert (by["two"].status, by["two"].unexplained) == ("not_invoiced", Fraction(-2))
    assert rec.summary_line().endswith("unexplained=USD:-1.99")


# -- 13. a sync interrupted and resumed after Stripe forgot its idempotency keys ---------------


def test_interrupted_sync_resumed_after_24_hours_creates_nothing_twice(world: World) -> None:
    world.configure([external("late", "list-usd")], [per_unit_card()])
    world.spread("late", at(10, 9), 2, 10 * H)  # 20.00
    world.usage("late", at(10, 9), 7 * H, mig="3g.40gb")  # 3 h = 6.00
    world.bill(OCT, at(11, 2))
    draft = world.invoice(gm(OCT, "late"))
    fin = idempotency_key("finalize", draft.invoice_id, draft.revision, draft.content_hash)
    # the run dies after Stripe created the invoice and its items, before it was finalized
    world.fake.fail("POST", "/v1/invoices/", times=None, kind="500", idempotency_key=fin)
    assert result(world.bill(OCT, OCT_FINAL), "late").status == "failed"
    assert world.invoice(draft.invoice_id).sync_started
    assert (len(world.fake.created("invoice")), len(world.fake.created("invoiceitem"))) == (1, 2)

    world.fake.clear_failures()
    world.fake.forget_idempotency()  # more than 24 hours later
    world.clock.advance(days=2)
    r = result(world.bill(OCT), "late")
    assert (r.status, r.amount) == ("finalized", Decimal("26.00"))
    # found by its metadata: the same Stripe invoice and items, finalized once
    assert (len(world.fake.created("invoice")), len(world.fake.created("invoiceitem"))) == (1, 2)
    stripe_id = world.fake.created("invoice")[0]["id"]
    assert world.invoice(draft.invoice_id).stripe_invoice_id == stripe_id
    assert world.fake.invoice(stripe_id)["status"] == "open"
    assert sorted(i["amount"] for i in world.fake.items_for(stripe_id)) == [600, 2000]
    assert world.reconcile(OCT).clean
