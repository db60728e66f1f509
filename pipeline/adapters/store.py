"""The queries gpumeter runs on ClickHouse (one place, parameters only)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow
from pipeline.domain.usage import HourlyKey

HOURLY_SELECT = (
    "SELECT tenant_id, toUInt32(hour), project_id, gpu_model, mig_profile, region, provider, "
    "cluster, usage_us, busy_us FROM usage_hourly FINAL "
    "WHERE hour >= toDateTime(%(start)s, 'UTC') AND hour < toDateTime(%(end)s, 'UTC')"
)


@dataclass(frozen=True)
class InvoiceRecord:
    invoice_id: str
    tenant_id: str
    period: str
    status: str
    currency: str
    total_minor: int
    content_hash: str
    stripe_invoice_id: str
    version: int


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
        for t, h, p, g, m, r, pr, c, usage, busy in self.ex.execute(sql, params):
            out[t].append(UsageRow(HourlyKey(t, int(h), p, g, m, r, pr, c), int(usage), int(busy)))
        return dict(out)

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

    # -- invoices --------------------------------------------------------------------------
    def invoice(self, tenant_id: str, period: str) -> InvoiceRecord | None:
        rows = self.ex.execute(
            "SELECT invoice_id, tenant_id, period, status, currency, total_minor, content_hash, "
            "stripe_invoice_id, version FROM invoices FINAL "
            "WHERE tenant_id = %(t)s AND period = %(p)s",
            {"t": tenant_id, "p": period},
        )
        return InvoiceRecord(*rows[0]) if rows else None

    def invoices(self, period: str) -> list[InvoiceRecord]:
        rows = self.ex.execute(
            "SELECT invoice_id, tenant_id, period, status, currency, total_minor, content_hash, "
            "stripe_invoice_id, version FROM invoices FINAL WHERE period = %(p)s "
            "ORDER BY tenant_id",
            {"p": period},
        )
        return [InvoiceRecord(*r) for r in rows]

    def save_invoice(self, row: dict[str, Any]) -> None:
        self.ex.insert("invoices", list(row), [tuple(row.values())])

    def finalized_before(self, period: str) -> dict[str, list[tuple[str, str]]]:
        """Tenant -> [(period, invoice id)] of finalized (or paid) invoices before ``period``."""
        rows = self.ex.execute(
            "SELECT tenant_id, period, invoice_id FROM invoices FINAL "
            "WHERE period < %(p)s AND status IN ('finalized', 'paid') ORDER BY tenant_id, period",
            {"p": period},
        )
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for t, p, i in rows:
            out[str(t)].append((str(p), str(i)))
        return dict(out)

    def billed_so_far(
        self, tenant_id: str, invoice_id: str, original_period: str, excluding_period: str
    ) -> dict[str, tuple[int, int]]:
        """line key -> (minor units, usage µs) charged for a closed period: its invoice's own
        lines plus adjustments applied on later invoices (other than ``excluding_period``)."""
        out: dict[str, tuple[int, int]] = {}
        for key, amount, usage in self.ex.execute(
            "SELECT line_key, amount_minor, usage_us FROM invoice_lines FINAL "
            "WHERE invoice_id = %(i)s AND NOT startsWith(line_key, 'adj/')",
            {"i": invoice_id},
        ):
            out[str(key)] = (int(amount), int(usage))
        for key, amount, usage in self.ex.execute(
            "SELECT line_key, sum(amount_minor), sum(usage_us) FROM adjustments FINAL "
            "WHERE tenant_id = %(t)s AND original_period = %(p)s AND applied_period != %(x)s "
            "GROUP BY line_key",
            {"t": tenant_id, "p": original_period, "x": excluding_period},
        ):
            a0, u0 = out.get(str(key), (0, 0))
            out[str(key)] = (a0 + int(amount), u0 + int(usage))
        return out

    def save_adjustments(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.ex.insert("adjustments", list(rows[0]), [tuple(r.values()) for r in rows])

    def save_invoice_lines(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.ex.insert("invoice_lines", list(rows[0]), [tuple(r.values()) for r in rows])

    def invoice_lines(self, invoice_id: str) -> list[dict[str, Any]]:
        cols = [
            "line_id",
            "line_key",
            "description",
            "quantity",
            "unit_price",
            "amount_minor",
            "currency",
            "usage_us",
            "stripe_invoice_item_id",
            "idempotency_key",
        ]
        rows = self.ex.execute(
            f"SELECT {', '.join(cols)} FROM invoice_lines FINAL WHERE invoice_id = %(i)s "
            "ORDER BY line_key",
            {"i": invoice_id},
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    # -- chargeback ------------------------------------------------------------------------
    def save_chargeback(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.ex.insert("chargeback_lines", list(rows[0]), [tuple(r.values()) for r in rows])

    def chargeback(self, period: str, cost_centre: str | None = None) -> list[dict[str, Any]]:
        cols = [
            "period",
            "cost_centre",
            "tenant_id",
            "line_key",
            "description",
            "quantity",
            "unit_price",
            "amount_minor",
            "currency",
            "credit_cost_centre",
            "usage_us",
            "busy_us",
        ]
        sql = f"SELECT {', '.join(cols)} FROM chargeback_lines FINAL WHERE period = %(p)s"
        params: dict[str, Any] = {"p": period}
        if cost_centre is not None:
            sql += " AND cost_centre = %(cc)s"
            params["cc"] = cost_centre
        rows = self.ex.execute(sql + " ORDER BY cost_centre, tenant_id, line_key", params)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    # -- Stripe customers ------------------------------------------------------------------
    def stripe_customer(self, tenant_id: str) -> str | None:
        rows = self.ex.execute(
            "SELECT stripe_customer_id FROM stripe_customers FINAL WHERE tenant_id = %(t)s",
            {"t": tenant_id},
        )
        return str(rows[0][0]) if rows else None

    def save_stripe_customer(self, tenant_id: str, customer_id: str) -> None:
        self.ex.insert(
            "stripe_customers",
            ["tenant_id", "stripe_customer_id", "created_at"],
            [(tenant_id, customer_id, datetime.now(UTC))],
        )


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
