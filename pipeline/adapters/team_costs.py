"""The team cost report's ledger in ClickHouse (``schemas/clickhouse/0009_team_costs.sql``):
revisions of each period's report and their lines. Append-only; every query takes parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.hierarchy import NodeKey, parse_cost_centre
from pipeline.domain.idle import CostLine

LINE_COLS = [
    "period",
    "revision",
    "period_ref",
    "kind",
    "cost_centre",
    "has_project",
    "project_id",
    "tenant_id",
    "cluster",
    "gpu_model",
    "mig_profile",
    "gpu_hours",
    "busy_gpu_hours",
    "idle_gpu_hours",
    "amount_minor",
    "currency",
    "created_at",
]
REV_COLS = [
    "period",
    "revision",
    "status",
    "content_hash",
    "fingerprint",
    "covers",
    "as_of",
    "currency",
    "platform_cost_minor",
    "line_count",
    "detail",
    "created_at",
]


@dataclass(frozen=True)
class Revision:
    period: str
    revision: int
    status: str  # draft | closed
    content_hash: str
    fingerprint: str  # of the period's usage it was built from
    covers: dict[str, str]  # closed period -> fingerprint of its usage its adjustments carry
    as_of: datetime
    currency: str
    platform_cost_minor: int
    line_count: int
    detail: dict[str, Any]
    created_at: datetime


def _fraction(text: str) -> Fraction:
    return Fraction(text) if text else Fraction(0)


def line_row(period: str, revision: int, ln: CostLine, currency: str, now: datetime) -> tuple:
    n = ln.node
    return (
        period,
        revision,
        ln.period_ref,
        ln.kind,
        n.cost_centre,
        1 if n.project is not None else 0,
        n.project or "",
        ln.tenant_id,
        ln.cluster,
        ln.gpu_model,
        ln.mig_profile,
        str(ln.gpu_hours),
        str(ln.busy_gpu_hours),
        str(ln.idle_gpu_hours),
        ln.amount_minor,
        currency,
        now,
    )


def line_of(row: dict[str, Any]) -> CostLine:
    node = NodeKey(
        parse_cost_centre(row["cost_centre"]), row["project_id"] if row["has_project"] else None
    )
    return CostLine(
        row["kind"],
        node,
        row["tenant_id"],
        row["cluster"],
        row["gpu_model"],
        row["mig_profile"],
        _fraction(row["gpu_hours"]),
        _fraction(row["busy_gpu_hours"]),
        _fraction(row["idle_gpu_hours"]),
        int(row["amount_minor"]),
        row["period_ref"],
    )


class TeamCostBook:
    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    def save(self, rev: Revision, lines: list[CostLine]) -> None:
        """Lines first, the revision last: a revision is visible only when whole."""
        if lines:
            self.ex.insert(
                "team_cost_lines",
                LINE_COLS,
                [
                    line_row(rev.period, rev.revision, ln, rev.currency, rev.created_at)
                    for ln in lines
                ],
            )
        self.ex.insert(
            "team_cost_revisions",
            REV_COLS,
            [
                (
                    rev.period,
                    rev.revision,
                    rev.status,
                    rev.content_hash,
                    rev.fingerprint,
                    json.dumps(rev.covers, sort_keys=True),
                    rev.as_of,
                    rev.currency,
                    rev.platform_cost_minor,
                    rev.line_count,
                    json.dumps(rev.detail, ensure_ascii=False, separators=(",", ":")),
                    rev.created_at,
                )
            ],
        )

    def latest(
        self, periods: list[str] | None = None, with_detail: bool = False
    ) -> dict[str, Revision]:
        """Period -> its latest revision (of the given periods; all when None)."""
        cols = [c if c != "detail" or with_detail else "'{}'" for c in REV_COLS]
        sql = f"SELECT {', '.join(cols)} FROM team_cost_revisions FINAL"
        params: dict[str, Any] = {}
        if periods is not None:
            sql += " WHERE period IN %(p)s"
            params["p"] = tuple(periods) or ("",)
        out: dict[str, Revision] = {}
        for r in self.ex.execute(sql, params):
            d = dict(zip(REV_COLS, r, strict=True))
            rev = Revision(
                str(d["period"]),
                int(d["revision"]),
                str(d["status"]),
                str(d["content_hash"]),
                str(d["fingerprint"]),
                json.loads(d["covers"] or "{}"),
                d["as_of"],
                str(d["currency"]),
                int(d["platform_cost_minor"]),
                int(d["line_count"]),
                json.loads(d["detail"] or "{}"),
                d["created_at"],
            )
            if rev.period not in out or rev.revision > out[rev.period].revision:
                out[rev.period] = rev
        return out

    def revision(self, period: str) -> Revision | None:
        return self.latest([period], with_detail=True).get(period)

    def closed(self) -> dict[str, Revision]:
        """Every closed period -> its closed revision."""
        return {p: r for p, r in self.latest().items() if r.status == "closed"}

    def lines(self, period: str, revision: int) -> list[CostLine]:
        """The lines of one revision of a period's report, in line order."""
        rows = self.ex.execute(
            f"SELECT {', '.join(LINE_COLS)} FROM team_cost_lines FINAL "
            "WHERE period = %(p)s AND revision = %(r)s",
            {"p": period, "r": revision},
        )
        out = [line_of(dict(zip(LINE_COLS, r, strict=True))) for r in rows]
        return sorted(out, key=CostLine.identity)

    def total_minor(self, period: str, revision: int) -> int:
        """The sum of a revision's lines, straight from ClickHouse (what every roll-up and the
        platform cost must add up to)."""
        rows = self.ex.execute(
            "SELECT sum(amount_minor) FROM team_cost_lines FINAL "
            "WHERE period = %(p)s AND revision = %(r)s",
            {"p": period, "r": revision},
        )
        return int(rows[0][0] or 0) if rows else 0
