"""``gpumeter chargeback build|show|budgets`` on the ClickHouse 18.16 server (issue 11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline.adapters.clickhouse import migrate
from pipeline.cli import main
from pipeline.domain.aggregate import Agg
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse]
H = 3_600_000_000


def test_build_show_and_budgets_exit_1_when_one_is_over(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ex = server_executor(settings)
    migrate(ex)
    start = int(datetime(2026, 10, 2, tzinfo=UTC).timestamp())
    rows = [
        hourly_row(
            HourlyKey(
                "team-llm-pretraining",
                start + 3600 * h,
                "pretrain",
                "B200",
                "",
                "us-east-1",
                "northwind-cloud",
                "northwind-cloud-us-east-1-c1",
            ),
            Agg(16 * H, 8 * H, 1, h + 1),  # all 16 B200 of the cluster, the whole month
            datetime(2026, 11, 2, tzinfo=UTC),
        )
        for h in range(744 - 24)
    ]
    ex.insert("usage_hourly", HOURLY_COLUMNS, rows)
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    try:
        assert main(["chargeback", "build", "--period", "2026-10"]) == 0
        out = capsys.readouterr().out
        assert "status=closed" in out and "platform_cost=USD:" in out
        assert main(["chargeback", "show", "--period", "2026-10", "--json"]) == 0
        body = json.loads(capsys.readouterr().out)
        from decimal import Decimal

        pl = body["platform"]
        assert Decimal(pl["charged"]) + Decimal(pl["unshared_idle"]) == Decimal(pl["platform_cost"])
        assert main(["chargeback", "budgets", "--period", "2026-10", "--json"]) == 1
        captured = capsys.readouterr()
        budgets = {b["cost_centre"]: b for b in json.loads(captured.out)}
        assert budgets["research/llm-pretraining"]["status"] == "over"
        assert "research/llm-pretraining" in captured.err
        assert main(["chargeback", "budgets", "--period", "2026-13"]) == 2
        assert "chargeback.invalid_period" in capsys.readouterr().err
    finally:
        ex.close()
        drop_database(settings)
