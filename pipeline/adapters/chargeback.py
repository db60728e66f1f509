"""The chargeback journal in ClickHouse (``schemas/clickhouse/0006_chargeback_lifecycle.sql``):
revisions of each internal tenant's chargeback for a period, their entries, and the periods
that are closed. Append-only; every query takes parameters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.adapters.clickhouse import Executor

HEAD_COLS = [
    "tenant_id",
    "period",
    "revision",
    "cost_centre",
    "currency",
    "total_minor",
    "line_count",
    "content_hash",
    "created_at",
]
ENTRY_COLS = [
    "period",
    "cost_centre",
    "tenant_id",
    "line_key",
    "revision",
    "kind",
    "period_ref",
    "description",
    "quantity",
    "quantity_exact",
    "unit_price",
    "amount_minor",
    "currency",
    "credit_cost_centre",
    "usage_us",
    "busy_us",
    "created_at",
]


@dataclass(frozen=True)
class ChargebackHead:
    """The latest revision of one tenant's chargeback for one period."""

    tenant_id: str
    period: str
    revision: int
    cost_centre: str
    currency: str
    total_minor: int
    line_count: int
    content_hash: str
    created_at: datetime


class ChargebackLedger:
    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    # -- writing ---------------------------------------------------------------------------
    def save(self, heads: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
        """Entries first, the heads last: a revision is visible only when whole."""
        if entries:
            self.ex.insert(
                "chargeback_lines", ENTRY_COLS, [tuple(e[c] for c in ENTRY_COLS) for e in entries]
            )
        if heads:
            self.ex.insert(
                "chargeback_revisions", HEAD_COLS, [tuple(h[c] for c in HEAD_COLS) for h in heads]
            )

    def close(self, period: str, at: datetime, tenants: int) -> None:
        self.ex.insert(
            "chargeback_closes", ["period", "closed_at", "tenants"], [(period, at, tenants)]
        )

    # -- reading ---------------------------------------------------------------------------
    def closed(self) -> set[str]:
        """Every period whose chargeback is closed."""
        return {str(r[0]) for r in self.ex.execute("SELECT period FROM chargeback_closes FINAL")}

    def heads(
        self,
        periods: Iterable[str] | None = None,
        tenant_ids: Iterable[str] | None = None,
    ) -> dict[tuple[str, str], ChargebackHead]:
        """(tenant, period) -> its latest revision, for the given periods / tenants (all when
        None)."""
        where, params = ["1"], {}
        if periods is not None:
            where.append("period IN %(p)s")
            params["p"] = tuple(periods) or ("",)
        if tenant_ids is not None:
            where.append("tenant_id IN %(t)s")
            params["t"] = tuple(tenant_ids) or ("",)
        rows = self.ex.execute(
            f"SELECT {', '.join(HEAD_COLS)} FROM chargeback_revisions FINAL "
            f"WHERE {' AND '.join(where)}",
            params,
        )
        out: dict[tuple[str, str], ChargebackHead] = {}
        for r in rows:
            head = ChargebackHead(*r)
            key = (head.tenant_id, head.period)
            if key not in out or head.revision > out[key].revision:
                out[key] = head
        return out

    def entries(
        self, heads: Iterable[ChargebackHead]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """(tenant, period) -> the entries of the given revisions, by line key."""
        wanted = {(h.tenant_id, h.period): h.revision for h in heads}
        if not wanted:
            return {}
        rows = self.ex.execute(
            f"SELECT {', '.join(ENTRY_COLS)} FROM chargeback_lines FINAL "
            "WHERE period IN %(p)s AND tenant_id IN %(t)s",
            {"p": tuple({p for _, p in wanted}), "t": tuple({t for t, _ in wanted})},
        )
        out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            e = dict(zip(ENTRY_COLS, r, strict=True))
            key = (e["tenant_id"], e["period"])
            if wanted.get(key) == e["revision"]:
                out[key].append(e)
        return {k: sorted(v, key=lambda e: e["line_key"]) for k, v in out.items()}

    def charging(
        self, tenant_ids: Iterable[str], periods: Iterable[str], heads: Iterable[ChargebackHead]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """(tenant, period charged in) -> the entries of the given revisions that charge one of
        ``periods`` for one of the tenants: a period's own entries and the adjustments for it
        in other periods."""
        wanted = {(h.tenant_id, h.period): h.revision for h in heads}
        tenants, ps = tuple(tenant_ids), tuple(periods)
        if not wanted or not tenants or not ps:
            return {}
        rows = self.ex.execute(
            f"SELECT {', '.join(ENTRY_COLS)} FROM chargeback_lines FINAL "
            "WHERE tenant_id IN %(t)s AND (period IN %(p)s OR period_ref IN %(p)s)",
            {"t": tenants, "p": ps},
        )
        out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            e = dict(zip(ENTRY_COLS, r, strict=True))
            key = (e["tenant_id"], e["period"])
            if wanted.get(key) == e["revision"]:
                out[key].append(e)
        return {k: sorted(v, key=lambda e: e["line_key"]) for k, v in out.items()}

    def journal(self, period: str) -> list[dict[str, Any]]:
        """A period's entries as they stand (every tenant's latest revision), in journal
        order: cost centre, tenant, line key."""
        heads = self.heads(periods=[period])
        entries = [e for es in self.entries(heads.values()).values() for e in es]
        return sorted(entries, key=lambda e: (e["cost_centre"], e["tenant_id"], e["line_key"]))
