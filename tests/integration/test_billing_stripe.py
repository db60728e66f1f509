"""Billing against stripe-mock (real Stripe API validation) and a real ClickHouse."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.adapters.chargeback import ChargebackLedger
from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway, recording_http_client
from pipeline.billing.reconcile import reconcile
from pipeline.billing.run import BillingRun
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.hours import HOUR_US
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row

pytestmark = [pytest.mark.stripe, pytest.mark.clickhouse, pytest.mark.chdb]
NOW = datetime(2026, 11, 5, tzinfo=UTC)  # after October + the 72 h draft grace


def seed_usage(ex: DriverExecutor | ChdbExecutor) -> None:
    h0 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
    rows = []
    for i in range(30):  # helix-pharma: 30 H100-hours, 14 3g.40gb instance-hours (=6 GPU-hours)
        rows.append(
            hourly_row(
                HourlyKey(
                    "helix-pharma",
                    h0 + i * 3600,
                    "p",
                    "H100",
                    "",
                    "us-east-1",
                    "northwind-cloud",
                    "c1",
                ),
                Agg(HOUR_US, HOUR_US // 2, 1, 1),
                NOW,
            )
        )
    rows.append(
        hourly_row(
            HourlyKey(
                "helix-pharma", h0, "p", "H100", "3g.40gb", "us-east-1", "northwind-cloud", "c1"
            ),
            Agg(14 * HOUR_US, 0, 14, 1),
            NOW,
        )
    )
    rows.append(
        hourly_row(
            HourlyKey("team-asr", h0, "", "A100", "", "eu-west-1", "own-dc", "c2"),
            Agg(10 * HOUR_US + 1, HOUR_US, 10, 1),
            NOW,
        )
    )
    ex.insert("usage_hourly", HOURLY_COLUMNS, rows)


def test_bill_twice_same_result_and_no_second_stripe_request(
    engine: DriverExecutor | ChdbExecutor, config: Config, tmp_path: Path
) -> None:
    seed_usage(engine)
    http = recording_http_client()
    gateway = StripeGateway(SecretStr("sk_test_123"), Settings().stripe_api_base, http_client=http)
    run = BillingRun(config, Store(engine), gateway, tmp_path, lambda: NOW)
    first = run.run(Period.parse("2026-10"))
    acme = next(r for r in first.results if r.tenant_id == "helix-pharma")
    price = Decimal("1.99")  # committed-usd H100, no contract terms
    expected = (Decimal(30) * price).quantize(Decimal("0.01")) + (Decimal(6) * price).quantize(
        Decimal("0.01")
    )
    assert (acme.status, acme.amount, acme.gpu_hours) == ("finalized", expected, Fraction(36))
    posts = [r for r in http.recorded if r[0] == "post"]
    # helix: customer, invoice, 2 items, finalize, send; kappa-dormant (zero invoice by
    # contract): customer, invoice, finalize, send. Every one carries its own idempotency key.
    assert len(posts) == 10 and all(k and k.startswith("gpumeter-") for _, _, k in posts)
    assert len({k for _, _, k in posts}) == 10
    kappa = next(r for r in first.results if r.tenant_id == "kappa-dormant")
    assert (kappa.status, kappa.amount, kappa.currency) == ("finalized", Decimal("0.00"), "EUR")

    team = next(r for r in first.results if r.tenant_id == "team-asr")
    assert team.status == "charged_back"
    assert team.amount == Decimal("7.00")  # 10.0000000003 h x 0.70, rounded once at the line

    http.recorded.clear()
    second = run.run(Period.parse("2026-10"))
    assert http.recorded == []  # nothing sent to Stripe again
    assert [(r.tenant_id, r.amount, r.gpu_hours) for r in second.results] == [
        (r.tenant_id, r.amount, r.gpu_hours) for r in first.results
    ]
    assert next(r for r in second.results if r.tenant_id == "helix-pharma").status == "unchanged"
    assert len(ChargebackLedger(engine).journal("2026-10")) == 1  # replaced, not appended

    folder = tmp_path / "2026-10" / "invoices"
    doc = json.loads((folder / "GM-2026-10-helix-pharma.json").read_text())
    assert doc["total"] == str(expected) and len(doc["lines"]) == 2
    assert doc["status"] == "finalized" and doc["stripe_invoice_id"].startswith("in_")
    assert (folder / "GM-2026-10-helix-pharma.pdf").read_bytes().startswith(b"%PDF")
    with (tmp_path / "2026-10" / "chargeback" / "journal.csv").open() as fh:
        journal = list(csv.DictReader(fh))
    assert [(j["entry"], j["cost_centre"]) for j in journal] == [
        ("debit", "speech/asr"),
        ("credit", config.reference.platform_cost_centre),
    ]
    assert journal[0]["debit"] == journal[1]["credit"] == "7.00"


def test_stripe_key_is_a_secret() -> None:
    s = Settings(stripe_api_key=SecretStr("sk_live_verysecret"))
    assert "verysecret" not in repr(s) and "verysecret" not in str(s.model_dump())


def test_late_usage_after_invoicing_becomes_an_adjustment_on_the_next_invoice(
    engine: DriverExecutor | ChdbExecutor, config: Config, tmp_path: Path
) -> None:
    seed_usage(engine)
    http = recording_http_client()
    gateway = StripeGateway(SecretStr("sk_test_123"), Settings().stripe_api_base, http_client=http)
    clock = [NOW]
    run = BillingRun(config, Store(engine), gateway, tmp_path, lambda: clock[0])
    oct_, nov = Period.parse("2026-10"), Period.parse("2026-11")
    first = {r.tenant_id: r for r in run.run(oct_).results}
    ledger = Ledger(engine)
    oct_invoice = ledger.current("helix-pharma", "2026-10")
    assert oct_invoice is not None

    # late usage for October arrives: one H100 hour grows by 2 GPU-hours (a later version)
    h0 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
    late_key = HourlyKey("helix-pharma", h0, "p", "H100", "", "us-east-1", "northwind-cloud", "c1")
    engine.insert(
        "usage_hourly",
        HOURLY_COLUMNS,
        [hourly_row(late_key, Agg(3 * HOUR_US, 0, 3, 99, 2 * HOUR_US), NOW)],
    )
    http.recorded.clear()
    again = {r.tenant_id: r for r in run.run(oct_).results}
    assert again["helix-pharma"].status == "changed_after_final"
    assert (
        again["helix-pharma"].amount == first["helix-pharma"].amount
    )  # the finalized invoice stands
    assert http.recorded == []
    assert ledger.current("helix-pharma", "2026-10") == oct_invoice
    assert oct_invoice is not None
    assert ledger.lines(oct_invoice.invoice_id, 1) == ledger.lines(oct_invoice.invoice_id, 1)
    assert ledger.invoices("2026-10", "helix-pharma") == [oct_invoice]  # no new revision

    # November's run carries the difference, referencing October
    clock[0] = datetime(2026, 12, 5, tzinfo=UTC)
    nov_run = {r.tenant_id: r for r in run.run(nov).results}
    price = Decimal("1.99")
    assert nov_run["helix-pharma"].status == "finalized"
    assert nov_run["helix-pharma"].amount == (2 * price).quantize(Decimal("0.01"))
    lines = ledger.lines("GM-2026-11-helix-pharma", 1)
    assert [(ln["line_key"], ln["kind"], ln["period_ref"]) for ln in lines] == [
        ("adj/2026-10/H100/full", "adjustment", "2026-10")
    ]
    assert "2026-10" in lines[0]["description"]
    rec = reconcile(config, Store(engine), ledger, oct_)
    assert rec.clean, rec.summary_line()
    helix = next(t for t in rec.tenants if t.tenant_id == "helix-pharma")
    assert helix.adjusted_later == 2 * price  # the late usage, billed on November's invoice
    assert "team-asr" not in nov_run  # no usage, nothing to adjust
    # applied once: neither a rerun of November nor December adds it again
    assert run.run(nov).results[0].status == "unchanged"
    assert [r.tenant_id for r in run.run(Period.parse("2026-12")).results] == ["kappa-dormant"]
