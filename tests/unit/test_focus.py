"""FOCUS 1.2 rows of partner exports (pure): prices, rounding, corrections, pseudonyms, and the
wholesale cards' validation; the files' determinism."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import Config, ConfigError
from pipeline.domain.errors import ExportError, ExportErrorCode
from pipeline.domain.focus import (
    COLUMN_NAMES,
    Charge,
    ExportKey,
    ExportParty,
    WholesaleCard,
    correction_charges,
    exact_gpu_hours,
    export_rows,
    focus_row,
    pseudonym,
    round_places,
    usage_charges,
)
from pipeline.domain.period import Period
from pipeline.exports.files import csv_bytes, csv_text, parquet_bytes
from pipeline.exports.wholesale import load_wholesale

OCT = Period.parse("2026-10")
H0 = int(OCT.start.timestamp())
HOUR_US = 3_600_000_000


def card(**kw: object) -> WholesaleCard:
    data: dict[str, object] = {
        "partner": "northwind-cloud",
        "currency": "USD",
        "billing_account_id": "NWC-1",
        "billing_account_name": "GPUmeter Cloud GmbH",
        "prices": [
            {"gpu_model": "H100", "list_price": "1.85", "contracted_price": "1.62"},
            {"gpu_model": "H100", "region": "us-west-2", "list_price": "1.80"},
        ],
    }
    data.update(kw)
    return WholesaleCard.model_validate(data)


def key(
    hour: int = 0, mig: str = "", tenant: str = "acme-ai", region: str = "us-east-1"
) -> ExportKey:
    return ExportKey(H0 + 3600 * hour, region, "c1", "H100", mig, tenant)


def party(c: WholesaleCard | None = None) -> ExportParty:
    return ExportParty("northwind-cloud", "Northwind Cloud", c or card())


def test_quantities_are_rounded_once_half_away_from_zero() -> None:
    assert round_places(Fraction(1, 3)) == Decimal("0.333333333")
    assert round_places(Fraction(2, 3)) == Decimal("0.666666667")
    assert round_places(Fraction(5, 10**10)) == Decimal("1E-9")  # half: away from zero
    assert round_places(Fraction(-5, 10**10)) == Decimal("-1E-9")
    assert round_places(Fraction(7, 2), 0) == 4


def test_a_usage_row_prices_gpu_hours_on_the_partners_card(config: Config) -> None:
    catalog = config.reference.catalog
    (mig,) = usage_charges({key(mig="3g.40gb"): HOUR_US}, catalog)
    row = focus_row(mig, party(), OCT, catalog, "c-x")
    assert tuple(row) == COLUMN_NAMES
    # one hour of a 3/7 MIG instance: 1 instance-hour consumed, 3/7 GPU-hour priced
    assert row["ConsumedQuantity"] == Decimal("1.000000000")
    assert row["PricingQuantity"] == round_places(Fraction(3, 7)) == Decimal("0.428571429")
    assert row["ListUnitPrice"] == Decimal("1.85") and row["ContractedUnitPrice"] == Decimal("1.62")
    assert row["ListCost"] == Decimal("1.85") * Decimal("0.428571429")  # exact, not rounded
    assert row["BilledCost"] == row["EffectiveCost"] == row["ContractedCost"]
    assert row["ContractedCost"] == Decimal("1.62") * Decimal("0.428571429")
    assert (row["ChargePeriodStart"], row["ChargePeriodEnd"]) == (
        datetime(2026, 10, 1, 0, tzinfo=UTC),
        datetime(2026, 10, 1, 1, tzinfo=UTC),
    )
    assert (row["BillingPeriodStart"], row["BillingPeriodEnd"]) == (OCT.start, OCT.end)
    assert row["ProviderName"] == row["PublisherName"] == row["InvoiceIssuerName"]
    assert row["ChargeClass"] is None and row["ChargeCategory"] == "Usage"
    assert row["SubAccountId"] == "c-x" and "acme" not in str(row)
    assert row["x_MigFraction"] == "3/7" and exact_gpu_hours(row) == Fraction(3, 7)
    assert row["SkuId"] == "gpu:H100:mig:3g.40gb" and row["SkuPriceId"].startswith(
        "northwind-cloud/gpu:H100:mig:3g.40gb/"
    )


def test_a_region_price_beats_the_general_one_and_dates_split_prices(config: Config) -> None:
    catalog = config.reference.catalog
    (west,) = usage_charges({key(region="us-west-2"): HOUR_US}, catalog)
    assert focus_row(west, party(), OCT, catalog, "c")["ListUnitPrice"] == Decimal("1.80")
    dated = card(
        prices=[
            {"gpu_model": "H100", "list_price": "2", "effective_until": "2026-10-15T00:00:00Z"},
            {"gpu_model": "H100", "list_price": "1", "effective_from": "2026-10-15T00:00:00Z"},
        ]
    )
    before, after = usage_charges({key(14 * 24 - 1): HOUR_US, key(14 * 24): HOUR_US}, catalog)
    assert focus_row(before, party(dated), OCT, catalog, "c")["ListUnitPrice"] == 2
    assert focus_row(after, party(dated), OCT, catalog, "c")["ListUnitPrice"] == 1


def test_usage_without_a_wholesale_price_is_an_error_naming_it(config: Config) -> None:
    catalog = config.reference.catalog
    b200 = Charge(
        ExportKey(H0, "us-east-1", "c1", "B200", "", "t"), HOUR_US, Decimal(1), Decimal(1)
    )
    with pytest.raises(ExportError) as err:
        focus_row(b200, party(), OCT, catalog, "c")
    assert err.value.code == ExportErrorCode.NO_WHOLESALE_PRICE
    assert "B200" in err.value.message and "us-east-1" in err.value.message


def test_corrections_state_the_difference_and_telescope(config: Config) -> None:
    catalog = config.reference.catalog
    k = key(mig="1g.10gb")
    delivered = {k: 1_000_000_001}
    steps = [1_700_000_003, 2_500_000_000]
    rounded_total = usage_charges(delivered, catalog)[0].quantity
    for now in steps:
        (c,) = correction_charges({k: now}, delivered, catalog)
        assert c.correction and c.usage_us == now - delivered[k]
        rounded_total += c.quantity
        delivered = {k: now}
    # the delivered rows of a key add up to its rounded current value, however many steps
    assert rounded_total == round_places(Fraction(steps[-1], HOUR_US) * Fraction(1, 7))
    assert correction_charges({k: 5}, {k: 5}, catalog) == []
    row = focus_row(c, party(), OCT, catalog, "c")
    assert row["ChargeClass"] == "Correction" and row["ChargeDescription"].startswith("Correction")


def test_rows_sort_by_hour_and_pseudonym_never_by_tenant(config: Config) -> None:
    catalog = config.reference.catalog
    cells = {key(1, tenant="aaa"): 10, key(0, tenant="zzz"): 10, key(0, tenant="aaa"): 10}
    names = {"aaa": "c-2", "zzz": "c-1"}
    rows = export_rows(usage_charges(cells, catalog), party(), OCT, catalog, names.__getitem__)
    assert [(r["ChargePeriodStart"].hour, r["SubAccountId"]) for r in rows] == [
        (0, "c-1"),
        (0, "c-2"),
        (1, "c-2"),
    ]


def test_pseudonyms_are_stable_keyed_and_per_partner() -> None:
    a = pseudonym(b"k1", "northwind-cloud", "acme-ai")
    assert a == pseudonym(b"k1", "northwind-cloud", "acme-ai")
    assert a != pseudonym(b"k1", "fjord-compute", "acme-ai")  # not linkable across partners
    assert a != pseudonym(b"k2", "northwind-cloud", "acme-ai")  # needs the key
    assert a.startswith("c-") and len(a) == 26 and "acme" not in a
    # no ambiguity from joining: the pair is encoded, not concatenated
    assert pseudonym(b"k", "a", "bc") != pseudonym(b"k", "ab", "c")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prices": [{"gpu_model": "H100", "list_price": 1.5}]}, "binary float"),
        ({"prices": [{"gpu_model": "H100", "list_price": "1.1234567"}]}, "decimal places"),
        ({"prices": [{"gpu_model": "H100", "list_price": "-1"}]}, ">= 0"),
        ({"currency": "XXX"}, "unsupported currency"),
        ({"bucket": "http://example.com/x"}, "pattern"),
        (
            {
                "prices": [
                    {"gpu_model": "H100", "list_price": "1"},
                    {
                        "gpu_model": "H100",
                        "list_price": "2",
                        "effective_from": "2026-10-02T00:00:00Z",
                    },
                ]
            },
            "valid at",
        ),
        (
            {
                "prices": [
                    {
                        "gpu_model": "H100",
                        "list_price": "1",
                        "effective_from": "2026-10-02T00:30:00Z",
                    }
                ]
            },
            "whole UTC hour",
        ),
    ],
)
def test_wholesale_cards_refuse_bad_prices(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        card(**change)


def test_wholesale_file_errors_name_the_file_the_entry_and_the_field(tmp_config: Path) -> None:
    config = Config.load(tmp_config)
    cards = load_wholesale(tmp_config, config.reference)
    assert set(cards) == set(config.reference.partners)
    path = tmp_config / "wholesale.yaml"
    text = path.read_text()
    path.write_text(text.replace('list_price: "2.60"', "list_price: 2.60", 1))
    with pytest.raises(ConfigError) as err:
        load_wholesale(tmp_config, config.reference)
    assert "wholesale.yaml" in str(err.value)
    assert "partners[northwind-cloud].prices.2.list_price" in str(err.value)
    assert err.value.code.value == "billing.invalid_reference_data"
    path.write_text(text.replace("gpu_model: B200", "gpu_model: Z900", 1))
    with pytest.raises(ConfigError, match=r"partners\[northwind-cloud\].prices.4.gpu_model"):
        load_wholesale(tmp_config, config.reference)
    path.write_text(text.replace("region: us-west-2", "region: eu-north-1", 1))
    with pytest.raises(ConfigError, match="not one of the partner's regions"):
        load_wholesale(tmp_config, config.reference)
    path.write_text(text.replace("partner: own-dc", "partner: nobody", 1))
    with pytest.raises(ConfigError, match="no partner 'nobody'.*'own-dc' has no wholesale card"):
        load_wholesale(tmp_config, config.reference)


def test_files_are_functions_of_the_rows(config: Config) -> None:
    catalog = config.reference.catalog
    cells = {key(h, mig): HOUR_US * (h + 1) // 3 for h in range(5) for mig in ("", "3g.40gb")}
    rows = export_rows(usage_charges(cells, catalog), party(), OCT, catalog, lambda t: "c-1")
    assert csv_bytes(rows) == csv_bytes(list(rows))
    assert parquet_bytes(rows) == parquet_bytes(list(rows))
    header, first = csv_bytes(rows).decode().split("\r\n")[:2]
    assert header.split(",") == list(COLUMN_NAMES)
    assert ",2026-10-01T00:00:00Z," in first
    assert csv_text(Decimal("1.500000000")) == "1.5" and csv_text(Decimal("0E-15")) == "0.0"
    assert csv_text(Decimal("268")) == "268.0"  # a decimal to readers that infer types
    assert csv_text(Decimal("-0.25")) == "-0.25" and csv_text(None) == ""


def test_every_export_error_code_is_in_the_enum_and_documented() -> None:
    import ast
    import re

    from pipeline.settings import REPO_ROOT

    known = {c.value for c in ExportErrorCode}
    for path in sorted((REPO_ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"exports\.[a-z_]+", node.value):
                    assert node.value in known, f"{path}: {node.value}"
    readme = (REPO_ROOT / "README.md").read_text()
    exports = (REPO_ROOT / "docs" / "exports.md").read_text()
    for code in known:
        assert f"`{code}`" in readme and f"`{code}`" in exports, code


def test_the_pseudonym_key_and_the_s3_secret_have_no_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.bootstrap import bucket
    from pipeline.cli import main
    from pipeline.settings import Settings, SettingsError

    for var in ("GPUMETER_EXPORT_PSEUDONYM_KEY", "GPUMETER_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.export_pseudonym_key.get_secret_value() == ""
    assert s.s3_secret_access_key.get_secret_value() == ""
    with pytest.raises(SettingsError, match="GPUMETER_S3_SECRET_ACCESS_KEY"):
        bucket(s, "s3://northwind-gpumeter-usage/focus")
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_PORT", "1")  # nothing listens: no I/O expected
    assert main(["exports", "build", "--period", "2026-10"]) == 2
    assert "GPUMETER_EXPORT_PSEUDONYM_KEY" in capsys.readouterr().err
