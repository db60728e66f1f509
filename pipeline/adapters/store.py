"""The queries gpumeter runs on ClickHouse (one place, parameters only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.focus import ExportKey
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow
from pipeline.domain.usage import KEY_COLUMNS, HourlyKey

# the key columns in HourlyKey's field order (hour as epoch seconds), then the quantities
HOURLY_SELECT = (
    "SELECT "
    + ", ".join("toUInt32(hour)" if c == "hour" else c for c in KEY_COLUMNS)
    + ", usage_us, busy_us FROM usage_hourly FINAL "
    "WHERE hour >= toDateTime(%(start)s, 'UTC') AND hour < toDateTime(%(end)s, 'UTC')"
)


class Store:
    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    # -- usage -----------------------------------------------------------------------------
    def hourly_rows(
        self, period: Period, tenant_id: str | None = None
    ) -> dict[str, list[UsageRow]]:
        sql = HOURLY_SELECT
        params: dict[str, Any] = {"start": _ts(period.start), "end": _ts(period.end)}
        if tenant_id is not None:
            sql += " AND tenant_id = %(tenant)s"
            params["tenant"] = tenant_id
        out: dict[str, list[UsageRow]] = defaultdict(list)
        n = len(KEY_COLUMNS)
        for row in self.ex.execute(sql, params):
            key = HourlyKey(*row[:n])
            out[key.tenant_id].append(UsageRow(key, int(row[n]), int(row[n + 1])))
        return dict(out)

    def partner_usage(
        self, provider: str, regions: Sequence[str], start: datetime, end: datetime
    ) -> dict[ExportKey, int]:
        """GPU-instance micro-seconds on one partner's capacity (its provider id and regions)
        in ``[start, end)``, by partner-export key (projects summed up)."""
        if not regions:
            return {}
        rows = self.ex.execute(
            "SELECT toUInt32(hour), region, cluster, gpu_model, mig_profile, tenant_id, "
            "sum(usage_us) FROM usage_hourly FINAL WHERE provider = %(provider)s "
            "AND region IN %(regions)s AND hour >= toDateTime(%(start)s, 'UTC') "
            "AND hour < toDateTime(%(end)s, 'UTC') "
            "GROUP BY hour, region, cluster, gpu_model, mig_profile, tenant_id",
            {
                "provider": provider,
                "regions": tuple(regions),
                "start": _ts(start),
                "end": _ts(end),
            },
        )
        return {ExportKey(int(h), *(str(v) for v in key)): int(u) for h, *key, u in rows}

    def late_usage(self, period: Period) -> list[tuple[str, datetime, str, str, int, int]]:
        """Hourly keys of the period that received samples after their grace period:
        (tenant, hour, GPU model, MIG profile, late GPU-µs, all GPU-µs)."""
        rows = self.ex.execute(
            "SELECT tenant_id, hour, gpu_model, mig_profile, late_us, usage_us "
            "FROM usage_hourly FINAL WHERE hour >= toDateTime(%(start)s, 'UTC') "
            "AND hour < toDateTime(%(end)s, 'UTC') AND late_us > 0 "
            "ORDER BY tenant_id, hour, gpu_model, mig_profile",
            {"start": _ts(period.start), "end": _ts(period.end)},
        )
        return [(t, h, g, m, int(late), int(u)) for t, h, g, m, late, u in rows]

    def late_samples(self, period: Period) -> int:
        rows = self.ex.execute(
            "SELECT count() FROM usage_raw FINAL WHERE hour >= toDateTime(%(start)s, 'UTC') "
            "AND hour < toDateTime(%(end)s, 'UTC') AND late = 1",
            {"start": _ts(period.start), "end": _ts(period.end)},
        )
        return int(rows[0][0])

    def active_parts(self) -> dict[str, int]:
        """Active data parts per table of this database (healthy inserts keep this small)."""
        rows = self.ex.execute(
            "SELECT table, count() FROM system.parts WHERE database = %(db)s AND active "
            "GROUP BY table ORDER BY table",
            {"db": self.ex.database},
        )
        return {str(t): int(n) for t, n in rows}

    def events_for(
        self, tenant_id: str, first_hour: datetime, last_hour: datetime, gpu_model: str
    ) -> list[dict[str, Any]]:
        """Accepted usage samples of a tenant and GPU model between two hours (inclusive)."""
        cols = [
            "event_source",
            "event_id",
            "hour",
            "project_id",
            "mig_profile",
            "region",
            "provider",
            "cluster",
            "node",
            "gpu_uuid",
            "gpu_count",
            "start_us",
            "end_us",
            "late",
        ]
        rows = self.ex.execute(
            f"SELECT {', '.join(cols)} FROM usage_raw FINAL WHERE tenant_id = %(t)s "
            "AND gpu_model = %(g)s AND hour >= toDateTime(%(a)s, 'UTC') "
            "AND hour <= toDateTime(%(b)s, 'UTC') ORDER BY hour, start_us, event_id",
            {"t": tenant_id, "g": gpu_model, "a": _ts(first_hour), "b": _ts(last_hour)},
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    # -- Stripe customers ------------------------------------------------------------------
    def stripe_customers(self) -> dict[str, str]:
        rows = self.ex.execute(
            "SELECT tenant_id, stripe_customer_id FROM stripe_customers FINAL", {}
        )
        return {str(t): str(c) for t, c in rows}

    def save_stripe_customers(self, customers: dict[str, str]) -> None:
        now = datetime.now(UTC)
        self.ex.insert(
            "stripe_customers",
            ["tenant_id", "stripe_customer_id", "created_at"],
            [(t, c, now) for t, c in sorted(customers.items())],
        )


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
