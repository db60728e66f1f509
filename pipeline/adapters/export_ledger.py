"""What was delivered to partners (``schemas/clickhouse/0008_partner_exports.sql``).

A delivery is recorded in two steps: first the usage each row of the export stated
(``export_delivered_usage``, keyed by the run), then the delivery itself
(``export_deliveries``). Only rows of a run that has a delivery are ever read, so a crash
between the two leaves nothing half-delivered; the first delivery of a (partner, period) is
the one that counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.focus import ExportKey

USAGE_COLUMNS = (
    "partner_id",
    "export_period",
    "run_id",
    "hour",
    "region",
    "cluster",
    "gpu_model",
    "mig_profile",
    "tenant_id",
    "usage_us",
)


@dataclass(frozen=True, slots=True)
class Delivery:
    partner_id: str
    period: str
    run_id: str
    manifest_sha256: str
    rows: int
    delivered_at: datetime


class ExportLedger:
    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    def deliveries(self, partner_id: str | None = None) -> dict[tuple[str, str], Delivery]:
        """(partner, period) -> its first delivery."""
        sql = (
            "SELECT partner_id, period, run_id, manifest_sha256, rows, delivered_at "
            "FROM export_deliveries"
        )
        params: dict[str, str] = {}
        if partner_id is not None:
            sql += " WHERE partner_id = %(p)s"
            params["p"] = partner_id
        out: dict[tuple[str, str], Delivery] = {}
        for p, period, run, sha, rows, at in self.ex.execute(
            sql + " ORDER BY partner_id, period, delivered_at, run_id", params
        ):
            out.setdefault(
                (str(p), str(period)),
                Delivery(str(p), str(period), str(run), str(sha), int(rows), _utc(at)),
            )
        return out

    def delivery(self, partner_id: str, period: str) -> Delivery | None:
        return self.deliveries(partner_id).get((partner_id, period))

    def record(
        self,
        delivery: Delivery,
        usage: Iterable[tuple[ExportKey, int]],
    ) -> None:
        """Record a delivery: the usage its rows stated, then the delivery."""
        rows = [
            (
                delivery.partner_id,
                delivery.period,
                delivery.run_id,
                key.hour,
                key.region,
                key.cluster,
                key.gpu_model,
                key.mig_profile,
                key.tenant_id,
                usage_us,
            )
            for key, usage_us in usage
        ]
        if rows:
            self.ex.insert("export_delivered_usage", USAGE_COLUMNS, rows)
        self.ex.insert(
            "export_deliveries",
            ["partner_id", "period", "run_id", "manifest_sha256", "rows", "delivered_at"],
            [
                (
                    delivery.partner_id,
                    delivery.period,
                    delivery.run_id,
                    delivery.manifest_sha256,
                    delivery.rows,
                    delivery.delivered_at,
                )
            ],
        )

    def delivered_usage(
        self, partner_id: str, start: datetime, end: datetime
    ) -> dict[ExportKey, int]:
        """Usage micro-seconds that delivered exports stated for hours in ``[start, end)``,
        summed over every delivery (usage rows and corrections)."""
        delivered = {(d.period, d.run_id) for d in self.deliveries(partner_id).values()}
        if not delivered:
            return {}
        rows = self.ex.execute(
            "SELECT export_period, run_id, toUInt32(hour), region, cluster, gpu_model, "
            "mig_profile, tenant_id, usage_us FROM export_delivered_usage FINAL "
            "WHERE partner_id = %(p)s AND hour >= toDateTime(%(start)s, 'UTC') "
            "AND hour < toDateTime(%(end)s, 'UTC')",
            {"p": partner_id, "start": start, "end": end},
        )
        out: dict[ExportKey, int] = defaultdict(int)
        for period, run, hour, region, cluster, model, mig, tenant, usage in rows:
            if (str(period), str(run)) in delivered:
                key = ExportKey(
                    int(hour), str(region), str(cluster), str(model), str(mig), str(tenant)
                )
                out[key] += int(usage)
        return dict(out)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
