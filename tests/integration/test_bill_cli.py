"""``gpumeter bill`` on the real services: a tenant whose usage has no price fails alone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.adapters.clickhouse import migrate
from pipeline.cli import main
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse, pytest.mark.stripe]

H = 3_600_000_000
COLUMNS = ["tenant_id", "hour", "project_id", "gpu_model", "mig_profile", "region", "provider"]
COLUMNS += ["cluster", "usage_us", "busy_us", "samples", "version", "updated_at"]


def test_bill_exits_1_naming_the_tenant_whose_usage_has_no_price(
    settings: Settings,
    tmp_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cards = (tmp_config / "rate_cards.yaml").read_text()
    gap = '      - {gpu_model: L40S, price: "0.89"}\n'
    assert gap in cards
    (tmp_config / "rate_cards.yaml").write_text(cards.replace(gap, "", 1))
    ex = server_executor(settings)
    migrate(ex)
    hour, now = datetime(2026, 9, 3, 7, tzinfo=UTC), datetime(2026, 9, 30, tzinfo=UTC)
    ex.insert(
        "usage_hourly",
        COLUMNS,
        [
            (
                "cobalt-robotics",
                hour,
                "p",
                "H100",
                "",
                "us-east-1",
                "fjord",
                "c",
                2 * H,
                0,
                1,
                1,
                now,
            ),
            ("delta-genomics", hour, "p", "L40S", "", "us-east-1", "fjord", "c", H, 0, 1, 1, now),
        ],
    )
    ex.close()
    for var, value in (
        ("GPUMETER_CLICKHOUSE_DATABASE", settings.clickhouse_database),
        ("GPUMETER_CONFIG_DIR", str(tmp_config)),
        ("GPUMETER_OUT_DIR", str(settings.out_dir)),
        ("GPUMETER_STRIPE_MAX_RETRIES", "0"),
    ):
        monkeypatch.setenv(var, value)
    try:
        with caplog.at_level("WARNING", logger="pipeline.config"):
            assert main(["bill", "--period", "2026-09"]) == 1
        out = capsys.readouterr()
        assert "cobalt-robotics" in out.out and "finalized" in out.out
        assert "bill: FAILED delta-genomics: billing.no_price_for_usage: " in out.err
        assert "'L40S'" in out.err and "1 tenant(s) failed: delta-genomics" in out.err
        # the gap was reported when the configuration was loaded, before anything was billed
        assert "rate card 'on-demand-usd' has no price for GPU model L40S" in caplog.text
    finally:
        drop_database(settings)
