"""The finance commands end to end: `gpumeter bill`, `invoices list|show|export|trace`,
`reconcile`, on a real ClickHouse and stripe-mock; and `bill` exiting non-zero, naming the
tenants, when Stripe cannot be reached."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader

from pipeline.adapters.clickhouse import migrate
from pipeline.cli import main
from pipeline.domain.aggregate import Agg
from pipeline.domain.hours import HOUR_US
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row
from tests.integration.test_billing_stripe import seed_usage
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse, pytest.mark.stripe]


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    ex = server_executor(settings)
    migrate(ex)
    seed_usage(ex)  # helix-pharma: 36 H100-hours in 2026-10; team-asr: 10 A100-hours
    h0 = int(datetime(2026, 9, 3, tzinfo=UTC).timestamp())
    key = HourlyKey("helix-pharma", h0, "p", "H100", "", "us-east-1", "northwind-cloud", "c1")
    ex.insert(
        "usage_hourly",
        HOURLY_COLUMNS,
        [hourly_row(key, Agg(HOUR_US, 0, 1, 1), datetime.now(UTC))],
    )
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    monkeypatch.setenv("GPUMETER_OUT_DIR", str(settings.out_dir))
    yield settings
    ex.close()
    drop_database(settings)


def test_finance_commands(
    cli_env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bill", "--period", "2026-10"]) == 0
    capsys.readouterr()

    assert main(["invoices", "list", "--period", "2026-10", "--status", "finalized", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(i["invoice_id"], i["total"]) for i in listed] == [
        ("GM-2026-10-helix-pharma", "71.64"),  # 36 h x 1.99
        ("GM-2026-10-kappa-dormant", "0.00"),  # zero invoice by contract
    ]
    assert main(["invoices", "list", "--period", "2026-10", "--status", "paid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    assert main(["invoices", "show", "GM-2026-10-helix-pharma", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == "71.64" and doc["customer"]["name"] == "Helix Pharma Inc."
    line_ids = [ln["line_id"] for ln in doc["lines"]]
    assert line_ids == ["GM-2026-10-helix-pharma/H100/3g.40gb", "GM-2026-10-helix-pharma/H100/full"]

    out = tmp_path / "export"
    assert (
        main(["invoices", "export", "--period", "2026-10", "--format", "csv", "--out", str(out)])
        == 0
    )
    with (out / "invoices-2026-10.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["invoice_id"], r["total"], r["currency"]) for r in rows] == [
        ("GM-2026-10-helix-pharma", "71.64", "USD"),
        ("GM-2026-10-kappa-dormant", "0.00", "EUR"),
    ]
    assert (
        main(["invoices", "export", "--period", "2026-10", "--format", "pdf", "--out", str(out)])
        == 0
    )
    text = PdfReader(out / "GM-2026-10-helix-pharma.pdf").pages[0].extract_text()
    assert "GM-2026-10-helix-pharma" in text and "71.64" in text
    capsys.readouterr()

    assert main(["invoices", "trace", line_ids[1]]) == 0
    traced = capsys.readouterr().out
    assert "30 hourly usage rows" in traced and "59.70" in traced  # 30 h x 1.99

    assert main(["reconcile", "--period", "2026-10", "--tenant", "helix-pharma"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == (
        "reconcile: tenant=helix-pharma invoice=GM-2026-10-helix-pharma status=finalized "
        "currency=USD metered=71.64 invoiced=71.64 unexplained=0.00"
    )
    assert lines[-1] == (
        "reconcile: period=2026-10 tenants=2 metered=EUR:0.00,USD:71.64 "
        "invoiced=EUR:0.00,USD:71.64 unexplained=EUR:0.00,USD:0.00"
    )

    assert main(["invoices", "show", "GM-nope"]) == 2
    assert "billing.invoice_not_found" in capsys.readouterr().err


def test_bill_exits_non_zero_naming_the_tenants_stripe_failed_for(
    cli_env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUMETER_STRIPE_API_BASE", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("GPUMETER_STRIPE_MAX_RETRIES", "0")
    assert main(["bill", "--period", "2026-09"]) == 1
    err = capsys.readouterr().err
    assert "2 tenant(s) failed: helix-pharma, kappa-dormant" in err
    assert "network" in err
    monkeypatch.delenv("GPUMETER_STRIPE_API_BASE")
    assert main(["bill", "--period", "2026-09"]) == 0  # a rerun completes them
