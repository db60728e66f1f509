"""Billing scenarios for the risks a review found (issue 9, section 2), over whole periods with
an injected clock, on chdb and the recording fake Stripe (see :mod:`tests.scenarios.world`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.domain.period import Period
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


# -- Stripe idempotency keys identify exactly what they send ----------------------------------


def test_a_new_revision_after_a_failed_sync_reuses_no_key_of_the_old_one(world: World) -> None:
    """Revision 1's sync stops after its first item; late usage then makes revision 2, with a
    Stripe invoice of its own. Its unchanged line must not reuse revision 1's item key (Stripe
    refuses a key sent again with another ``invoice`` parameter, for 24 hours)."""
    world.configure([external("resync", "list-usd")], [per_unit_card()])
    world.spread("resync", at(10, 9), 2, 10 * H)  # H100/full: 10 h = 20.00
    world.usage("resync", at(10, 9), 7 * H, mig="3g.40gb")  # H100/3g.40gb: 3 h = 6.00
    world.bill(OCT, at(11, 2))
    # the second item request fails for good: the Stripe invoice and one item exist
    world.fake.fail("POST", "/v1/invoiceitems", times=None, kind="400", skip=1)
    assert result(world.bill(OCT, OCT_FINAL), "resync").status == "failed"
    first = world.invoice(gm(OCT, "resync"))
    assert (first.revision, first.status, first.sync_started) == (1, "draft", True)
    assert (len(world.fake.created("invoice")), len(world.fake.created("invoiceitem"))) == (1, 1)

    world.fake.clear_failures()
    world.usage("resync", at(10, 9), 14 * H, mig="3g.40gb", version=2)  # late: 6 h = 12.00
    world.clock.advance(hours=1)
    r = result(world.bill(OCT), "resync")

    assert (r.status, r.amount) == ("finalized", Decimal("32.00")), r.error
    assert [q for q in world.fake.requests if q.outcome == "idempotency_error"] == []
    view = world.invoice(r.invoice_id)
    assert view.revision == 2
    items = world.fake.items_for(view.stripe_invoice_id)
    assert sorted(i["amount"] for i in items) == [1200, 2000]
    # the key the ledger holds for each line is the key its Stripe item was created with
    posted = {
        q.idempotency_key: q.params["metadata"]["line_id"]
        for q in world.fake.requests_to("/v1/invoiceitems", "POST")
        if q.outcome == "ok" and q.params["invoice"] == view.stripe_invoice_id
    }
    ledger_keys = {
        ln["idempotency_key"]: ln["line_id"]
        for ln in world.ledger.lines(view.invoice_id, view.revision)
    }
    assert posted == ledger_keys
    # revision 1's Stripe draft is never finalized nor sent (it is not the customer's bill)
    (old,) = [i for i in world.fake.created("invoice") if i["id"] != view.stripe_invoice_id]
    assert world.fake.invoice(old["id"])["status"] == "draft"
    assert world.fake.sent_count(old["id"]) == 0
    assert world.reconcile(OCT).clean


# -- a usage row without a price fails its tenant alone --------------------------------------


def test_usage_without_a_price_fails_its_tenant_alone(world: World) -> None:
    world.configure(
        [
            external("fine", "list-usd"),
            external("gap", "list-usd"),
            {
                "id": "team-x",
                "name": "Team X",
                "kind": "internal",
                "currency": "USD",
                "rate_card": "list-usd",
                "cost_centre": "rnd/x",
            },
        ],
        [per_unit_card()],  # H100 only
    )
    world.spread("fine", at(10, 9), 2, 10 * H)  # 20.00
    world.spread("gap", at(10, 9), 2, 10 * H)
    world.usage("gap", at(10, 9, 5), 2 * H, gpu="A100", mig="", project="vision", cluster="c9")
    world.spread("team-x", at(10, 9), 2, 4 * H)
    world.usage("team-x", at(10, 10), H, gpu="H200", region="eu-north-1")

    report = world.bill(OCT, OCT_FINAL)

    fine = result(report, "fine")
    assert (fine.status, fine.amount) == ("finalized", Decimal("20.00"))
    gap, team = result(report, "gap"), result(report, "team-x")
    assert (gap.status, team.status) == ("failed", "failed")
    assert gap.error.startswith("billing.no_price_for_usage: ")
    # the message names the usage key it could not price
    for part in ("gap", "2026-10-09T05:00", "vision", "A100", "us-east-1", "fjord-compute", "c9"):
        assert part in gap.error, part
    assert "H200" in team.error and "eu-north-1" in team.error
    assert sorted(r.tenant_id for r in report.failed) == ["gap", "team-x"]
    failures = {f["tenant_id"]: f for f in world.ledger.failures("2026-10")}
    assert set(failures) == {"gap", "team-x"}
    assert (failures["gap"]["stage"], failures["gap"]["code"]) == (
        "rating",
        "billing.no_price_for_usage",
    )
    # nothing half-done for the failed tenants; the others are billed
    assert world.ledger.invoices("2026-10", "gap") == []
    assert world.invoice(gm(OCT, "fine")).status == "finalized"
    assert len(world.fake.created("invoice")) == 1
    # reconcile goes on too, and is not clean while usage is left unpriced
    rec = world.reconcile(OCT)
    by = {t.tenant_id: t for t in rec.tenants}
    assert by["fine"].unexplained == 0
    assert by["gap"].status == "no_price" and "A100" in by["gap"].error
    assert not rec.clean


# -- a closed period is rated again only when its usage changed -------------------------------


class Counter:
    """Counts the calls of one method of one object (the call still happens)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> None:
        self.calls: list[tuple[object, ...]] = []
        original = getattr(obj, name)

        def counted(*args: object, **kwargs: object) -> object:
            self.calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, counted)


def test_closed_periods_are_rated_again_only_when_their_usage_changed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure(
        [
            external("ext", "list-usd"),
            {
                "id": "team",
                "name": "Team",
                "kind": "internal",
                "currency": "USD",
                "rate_card": "list-usd",
                "cost_centre": "rnd/t",
            },
        ],
        [per_unit_card()],
    )
    months = [(OCT, OCT_FINAL, 10), (NOV, NOV_FINAL, 11), (DEC, DEC_FINAL, 12)]
    for period, final, month in months[:2]:
        for tenant in ("ext", "team"):
            world.spread(tenant, at(month, 3), 5, 5 * H)
        world.bill(period, final)
    run = world.billing
    recomposed = Counter(monkeypatch, run.invoicer.composer, "recompose")
    read = Counter(monkeypatch, world.store, "hourly_rows")

    # December: October and November are closed and nothing changed for them
    for tenant in ("ext", "team"):
        world.spread(tenant, at(12, 3), 5, 5 * H)
    report = world.bill(DEC, DEC_FINAL)
    assert {r.status for r in report.results} == {"finalized", "charged_back"}
    assert recomposed.calls == []
    assert [c[0] for c in read.calls] == [DEC]  # December's usage only, once

    # late usage for October: only October is rated again, once per tenant
    world.usage("ext", at(10, 3, 1), 3 * H, version=2)  # +2 h = +4.00
    world.usage("team", at(10, 3, 1), 3 * H, version=2)
    read.calls.clear()
    jan = Period.parse("2027-01")
    report = world.bill(jan, at(2, 4, year=2027))
    assert [(c[1].invoice_id) for c in recomposed.calls] == [gm(OCT, "ext")]
    assert sorted(str(c[0]) for c in read.calls) == ["2026-10", "2026-10", "2027-01"]
    ext = world.amounts(gm(jan, "ext"))
    assert ext == {"adj/2026-10/H100/full": ("adjustment", Decimal("4.00"))}
    team = {e["line_key"]: e["amount_minor"] for e in world.chargebacks("2027-01")}
    assert team == {"adj/2026-10/H100/full": 400}

    # and once carried, October is not rated again
    recomposed.calls.clear()
    read.calls.clear()
    feb = Period.parse("2027-02")
    world.bill(feb, at(3, 4, year=2027))
    assert recomposed.calls == []
    assert [str(c[0]) for c in read.calls] == ["2027-02"]
    # reruns of the closed months say where they stand without rating them either
    statuses = {(r.tenant_id, str(p)): r.status for p in (OCT, NOV) for r in world.bill(p).results}
    assert statuses == {
        ("ext", "2026-10"): "adjusted",
        ("team", "2026-10"): "adjusted",
        ("ext", "2026-11"): "unchanged",
        ("team", "2026-11"): "unchanged",
    }
    assert recomposed.calls == []
    for period in (OCT, NOV, DEC, jan):
        assert world.reconcile(period).clean
