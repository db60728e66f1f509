from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.hours import HOUR_US
from pipeline.domain.rating import RateCard, UsageRow, idempotency_key, rate_per_unit
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
    lines = rate_per_unit(rows, CARD, config.reference.catalog)
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
        rate_per_unit([row("B200", "", HOUR_US)], CARD, config.reference.catalog)
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
    assert len(config.reference.tenants) == 50
    kinds = {t.kind for t in config.reference.tenants.values()}
    assert kinds == {"external", "internal"}
    assert config.reference.catalog.fraction("H100", "1g.10gb") == Fraction(1, 7)
    assert config.reference.catalog.fraction("H100", "") == 1


def test_adjustment_is_current_value_minus_what_was_charged(config: Config) -> None:
    from pipeline.domain.adjustments import Billed, adjustment_lines

    now = rate_per_unit(
        [row("H100", "", 3 * HOUR_US), row("L40S", "", HOUR_US)], CARD, config.reference.catalog
    )
    billed = {"H100/full": Billed(498, 2 * HOUR_US), "L40S/full": Billed(89, HOUR_US)}
    (adj,) = adjustment_lines("2026-10", now, billed, config.reference.catalog, "USD")
    assert adj.line_key == "adj/2026-10/H100/full"
    assert adj.amount == Decimal("2.49") and adj.quantity == 1
    assert "2026-10" in adj.description
    assert (
        adjustment_lines(
            "2026-10",
            now,
            {"H100/full": Billed(747, 3 * HOUR_US), "L40S/full": Billed(89, HOUR_US)},
            config.reference.catalog,
            "USD",
        )
        == []
    )
