from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.hours import HOUR_US
from pipeline.domain.rating import RateCard, UsageRow, idempotency_key, rate_usage
from pipeline.domain.usage import HourlyKey


def row(model: str, mig: str, usage_us: int, hour: int = 0) -> UsageRow:
    return UsageRow(HourlyKey("acme-ai", hour * 3600, "", model, mig, "r", "p", "c"), usage_us)


CARD = RateCard(id="c", currency="USD", prices={"H100": Decimal("2.49"), "L40S": Decimal("0.89")})


def test_per_unit_lines_group_by_model_and_mig_profile(config: Config) -> None:
    rows = [
        row("H100", "", HOUR_US, 0),
        row("H100", "", HOUR_US // 2, 1),
        row("H100", "3g.40gb", 7 * HOUR_US, 0),
        row("L40S", "", 3 * HOUR_US),
    ]
    lines = rate_usage(rows, CARD, config.reference.catalog).lines
    by = {ln.line_key: ln for ln in lines}
    assert by["H100/full"].quantity == Fraction(3, 2)
    assert by["H100/full"].amount == Decimal("3.74")  # 3.735 -> half up
    assert by["H100/3g.40gb"].quantity == Fraction(3)  # 7 instance-hours x 3/7
    assert by["H100/3g.40gb"].amount == Decimal("7.47")
    assert by["L40S/full"].amount == Decimal("2.67")
    assert by["H100/full"].hourly_rows == 2
    assert by["H100/full"].amount_minor == 374


def test_missing_price_is_a_coded_error(config: Config) -> None:
    with pytest.raises(BillingError) as err:
        rate_usage([row("B200", "", HOUR_US)], CARD, config.reference.catalog)
    assert err.value.code is BillingErrorCode.NO_PRICE
    assert "B200" in str(err.value)


def test_idempotency_key_depends_on_what_is_billed() -> None:
    a = idempotency_key("item", "acme", "2026-10", "H100/full", 374)
    assert a == idempotency_key("item", "acme", "2026-10", "H100/full", 374)
    assert a != idempotency_key("item", "acme", "2026-10", "H100/full", 375)
    assert a.startswith("gpumeter-item-")


def test_float_price_refused_with_file_and_field(tmp_config: Path) -> None:
    (tmp_config / "rate_cards.yaml").write_text(
        "rate_cards:\n  - id: x\n    currency: USD\n    prices: {H100: 2.49}\n"
    )
    with pytest.raises(ConfigError) as err:
        Config.load(tmp_config)
    msg = str(err.value)
    assert "rate_cards.yaml" in msg and "prices" in msg and "quoted" in msg
    assert err.value.code is BillingErrorCode.INVALID_RATE_CARD


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rate_cards:\n  - id: x\n    currency: usd\n    prices: {}\n", "currency"),
        ("rate_cards:\n  - id: x\n    currency: XXX\n    prices: {}\n", "unsupported currency"),
        ("rate_cards:\n  - id: x\n    currency: USD\n    prices: {H100: '-1'}\n", ">= 0"),
        ("rate_cards: {}\n", "rate_cards"),
        ("rate_cards: [\n", "not valid YAML"),
    ],
)
def test_bad_rate_cards_say_what_is_wrong(tmp_config: Path, text: str, needle: str) -> None:
    (tmp_config / "rate_cards.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        Config.load(tmp_config)
    assert needle in str(err.value)


def test_tenant_with_unknown_rate_card_refused(tmp_config: Path) -> None:
    p = tmp_config / "tenants.yaml"
    p.write_text(p.read_text().replace("rate_card: committed-usd", "rate_card: nope", 1))
    with pytest.raises(ConfigError, match="unknown rate_card 'nope'"):
        Config.load(tmp_config)


def test_shipped_config_loads(config: Config) -> None:
    assert len(config.reference.tenants) == 51
    assert {t.currency for t in config.reference.tenants.values()} == {"USD", "EUR"}
    assert config.contract("acme-ai").minimum_commitment == Decimal("40000.00")
    kinds = {t.kind for t in config.reference.tenants.values()}
    assert kinds == {"external", "internal"}
    assert config.reference.catalog.fraction("H100", "1g.10gb") == Fraction(1, 7)
    assert config.reference.catalog.fraction("H100", "") == 1


def test_adjustment_is_current_value_minus_what_was_charged(config: Config) -> None:
    from pipeline.domain.adjustments import Billed, adjustment_lines

    now = rate_usage(
        [row("H100", "", 3 * HOUR_US), row("L40S", "", HOUR_US)], CARD, config.reference.catalog
    ).lines
    billed = {
        "H100/full": Billed(498, 2 * HOUR_US, Fraction(2)),
        "L40S/full": Billed(89, HOUR_US, Fraction(1)),
    }
    (adj,) = adjustment_lines("2026-10", now, billed, "USD")
    assert adj.line_key == "adj/2026-10/H100/full"
    assert adj.amount == Decimal("2.49") and adj.quantity == 1
    assert adj.kind == "adjustment" and adj.period_ref == "2026-10"
    assert "2026-10" in adj.description
    assert (
        adjustment_lines(
            "2026-10",
            now,
            {
                "H100/full": Billed(747, 3 * HOUR_US, Fraction(3)),
                "L40S/full": Billed(89, HOUR_US, Fraction(1)),
            },
            "USD",
        )
        == []
    )


def test_price_narrowing_and_effective_dates(config: Config) -> None:
    from datetime import UTC, datetime

    card = RateCard.model_validate(
        {
            "id": "n",
            "currency": "USD",
            "prices": [
                {"gpu_model": "H100", "price": "2.00", "effective_until": "2026-10-15T00:00:00Z"},
                {"gpu_model": "H100", "price": "1.50", "effective_from": "2026-10-15T00:00:00Z"},
                {"gpu_model": "H100", "region": "r", "price": "1.00"},
                {"gpu_model": "H100", "region": "r", "tier": "spot", "price": "0.50"},
            ],
        }
    )
    t14 = int(datetime(2026, 10, 14, 23, tzinfo=UTC).timestamp())
    t15 = int(datetime(2026, 10, 15, tzinfo=UTC).timestamp())

    def at(hour_s: int, region: str) -> HourlyKey:
        return HourlyKey("acme-ai", hour_s, "", "H100", "", region, "p", "c")

    assert card.price_for(at(t14, "x"), "on-demand").price == Decimal("2.00")
    assert card.price_for(at(t15, "x"), "on-demand").price == Decimal("1.50")
    assert card.price_for(at(t15, "r"), "on-demand").price == Decimal("1.00")
    assert card.price_for(at(t15, "r"), "spot").price == Decimal("0.50")
    lines = rate_usage(
        [UsageRow(at(t14, "x"), HOUR_US), UsageRow(at(t15, "x"), HOUR_US)],
        card,
        config.reference.catalog,
    ).lines
    assert [(ln.line_key, ln.amount) for ln in lines] == [
        ("H100/full@from=2026-10-15T00", Decimal("1.50")),
        ("H100/full@until=2026-10-15T00", Decimal("2.00")),
    ]


@pytest.mark.parametrize(
    ("prices", "needle"),
    [
        (
            [{"gpu_model": "H100", "price": "1", "effective_from": "2026-10-15T00:30:00Z"}],
            "whole UTC hour",
        ),
        ([{"gpu_model": "H100", "price": "1"}, {"gpu_model": "H100", "price": "2"}], "same time"),
        ([{"gpu_model": "H100", "charge": "graduated", "price": "1"}], "needs 'tiers'"),
        (
            [{"gpu_model": "H100", "charge": "volume", "tiers": [{"up_to": "5", "price": "1"}]}],
            "open",
        ),
    ],
)
def test_bad_prices_say_what_is_wrong(prices: list[dict[str, str]], needle: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=needle):
        RateCard.model_validate({"id": "x", "currency": "USD", "prices": prices})


def test_bad_contract_names_file_and_field(tmp_config: Path) -> None:
    (tmp_config / "contracts.yaml").write_text(
        "contracts:\n  - tenant: acme-ai\n    discount_pct: '120'\n"
    )
    with pytest.raises(ConfigError) as err:
        Config.load(tmp_config)
    assert "contracts.yaml" in str(err.value) and "discount_pct" in str(err.value)
    assert err.value.code is BillingErrorCode.INVALID_CONTRACT
    (tmp_config / "contracts.yaml").write_text("contracts:\n  - tenant: nobody\n")
    with pytest.raises(ConfigError, match="unknown tenant 'nobody'"):
        Config.load(tmp_config)


# -- rate cards that do not cover the catalogue -------------------------------------------------


def gaps_of(config: Config, prices: object) -> list[str]:
    from dataclasses import replace

    card = RateCard.model_validate({"id": "probe", "currency": "USD", "prices": prices})
    return [g.message() for g in replace(config, rate_cards={"probe": card}).coverage_gaps()]


def test_shipped_rate_cards_cover_the_whole_catalogue(config: Config) -> None:
    assert config.coverage_gaps() == []


def test_a_model_missing_from_a_card_is_reported_with_its_profiles(config: Config) -> None:
    full = {m: "1.00" for m in config.reference.catalog.gpus}
    del full["B200"]
    (gap,) = gaps_of(config, full)
    assert gap.startswith("rate card 'probe' has no price for GPU model B200 (full GPU and MIG ")
    assert "1g.23gb" in gap and "7g.180gb" in gap and "billing.no_price_for_usage" in gap
    (gap,) = gaps_of(config, {m: "1.00" for m in config.reference.catalog.gpus if m != "L40S"})
    assert "GPU model L40S (full GPU)" in gap


def test_narrowed_or_dated_prices_leave_gaps_that_are_named(config: Config) -> None:
    others = [{"gpu_model": m, "price": "1.00"} for m in ("H200", "B200", "A100", "L40S")]
    only_region = [{"gpu_model": "H100", "region": "eu-north-1", "price": "2.00"}, *others]
    (gap,) = gaps_of(config, only_region)
    assert "GPU model H100" in gap and "outside region eu-north-1" in gap
    spot_only = [{"gpu_model": "H100", "tier": "spot", "price": "1.00"}, *others]
    (gap,) = gaps_of(config, spot_only)
    assert "tiers on-demand, reserved" in gap
    hole = [
        {"gpu_model": "H100", "price": "2.00", "effective_until": "2026-10-01T00:00:00Z"},
        {"gpu_model": "H100", "price": "2.10", "effective_from": "2026-10-15T00:00:00Z"},
        *others,
    ]
    (gap,) = gaps_of(config, hole)
    assert "from 2026-10-01T00:00Z until 2026-10-15T00:00Z" in gap
    covered = [
        {"gpu_model": "H100", "price": "2.00", "effective_until": "2026-10-15T00:00:00Z"},
        {"gpu_model": "H100", "price": "2.10", "effective_from": "2026-10-15T00:00:00Z"},
        {"gpu_model": "H100", "region": "eu-north-1", "price": "1.90"},
        *others,
    ]
    assert gaps_of(config, covered) == []


def test_config_load_reports_gaps_as_warnings(
    tmp_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cards = (tmp_config / "rate_cards.yaml").read_text()
    (tmp_config / "rate_cards.yaml").write_text(cards.replace('B200: "3.40", ', ""))
    with caplog.at_level("WARNING", logger="pipeline.config"):
        loaded = Config.load(tmp_config)  # a warning, not an error: the others bill
    (gap,) = loaded.coverage_gaps()
    assert (gap.card, gap.gpu_model) == ("internal-transfer", "B200")
    assert "rate card 'internal-transfer' has no price for GPU model B200" in caplog.text
