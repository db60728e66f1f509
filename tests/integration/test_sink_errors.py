"""The sink tells an outage (retry for as long as it lasts) from a permanent refusal (raise
with the server's message), on the real ClickHouse 18.16 server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pipeline.adapters.clickhouse import DriverExecutor, migrate
from pipeline.domain.aggregate import Agg
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import ClickHouseSink, PermanentClickHouseError
from tests.services import drop_database, server_executor

pytestmark = pytest.mark.clickhouse
NOW = datetime(2026, 11, 5, tzinfo=UTC)
KEY = HourlyKey(
    "acme-ai", 1_790_000_000 // 3600 * 3600, "p", "H100", "", "us-east-1", "northwind-cloud", "c1"
)


def test_unreachable_clickhouse_is_retried_not_raised(settings: Settings) -> None:
    sink = ClickHouseSink(
        DriverExecutor("127.0.0.1", 1, "gpumeter", connect_timeout=0.2), max_backoff_s=0.2
    )

    async def attempt() -> None:
        task = asyncio.create_task(sink.flush([], {KEY: Agg(1, 0, 1, 1)}, NOW))
        await asyncio.sleep(1.5)
        assert not task.done()  # still waiting for ClickHouse: nothing dropped, nothing raised
        task.cancel()

    asyncio.run(attempt())
    assert sink.outage_retries >= 2


def test_a_missing_column_is_permanent_and_names_the_server_message(settings: Settings) -> None:
    ex = server_executor(settings)
    migrate(ex)
    ex.execute("ALTER TABLE usage_hourly DROP COLUMN late_us")
    with pytest.raises(PermanentClickHouseError, match="late_us"):
        asyncio.run(ClickHouseSink(ex).flush([], {KEY: Agg(1, 0, 1, 1)}, NOW))
    ex.close()
    drop_database(settings)
