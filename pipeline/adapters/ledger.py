"""The invoice ledger in ClickHouse (``schemas/clickhouse/0005_ledger.sql``): append-only rows
for invoice revisions, their lines and lineage, status events, credit notes, Stripe sync
failures and webhook events. Every query takes parameters."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.charged import ChargedLine
from pipeline.domain.lifecycle import StatusEvent, current_of, current_status
from pipeline.domain.line_key import LineKey
from pipeline.domain.money import from_minor
from pipeline.domain.usage import KEY_COLUMNS, HourlyKey

HEADER_COLS = [
    "invoice_id",
    "revision",
    "tenant_id",
    "period",
    "currency",
    "subtotal_minor",
    "credits_minor",
    "tax_minor",
    "total_minor",
    "line_count",
    "content_hash",
    "issued_at",
    "due_at",
    "created_at",
]
LINE_COLS = [
    "invoice_id",
    "revision",
    "line_key",
    "line_id",
    "tenant_id",
    "period",
    "kind",
    "period_ref",
    "description",
    "gpu_model",
    "mig_profile",
    "quantity",
    "quantity_exact",
    "unit",
    "unit_price",
    "amount_minor",
    "exact_amount",
    "currency",
    "usage_us",
    "hourly_rows",
    "stripe_invoice_item_id",
    "idempotency_key",
]
EVENT_COLS = ["event_key", "status", "at", "seq", "source", "source_ref", "detail"]
# lineage rows: the hourly key's columns (its tenant is the invoice's), then the GPU-µs
SOURCE_COLS = [*KEY_COLUMNS[1:], "usage_us"]


@dataclass(frozen=True)
class InvoiceView:
    """An invoice's latest revision and its current status (from the status events)."""

    invoice_id: str
    revision: int
    tenant_id: str
    period: str
    currency: str
    subtotal_minor: int
    credits_minor: int
    tax_minor: int
    total_minor: int
    line_count: int
    content_hash: str
    issued_at: datetime
    due_at: datetime
    created_at: datetime
    status: str = "draft"
    stripe_invoice_id: str = ""
    sync_started: bool = False  # a run began sending this revision to Stripe

    @property
    def total(self) -> Decimal:
        return from_minor(self.total_minor, self.currency)

    @property
    def final(self) -> bool:
        return self.status != "draft"

    @property
    def charged(self) -> bool:
        """Finalized (possibly paid or unpaid) and not void: what it bills stands."""
        return self.final and self.status != "void"


def source_key(tenant_id: str, row: dict[str, Any]) -> HourlyKey:
    """The hourly key of a lineage row (``ledger_line_sources``) or of a usage sample."""
    return HourlyKey.from_row({**row, "tenant_id": tenant_id})


def sync_key(revision: int) -> str:
    """The status-event key recording that a run began syncing a revision to Stripe."""
    return f"sync/r{revision}"


class Ledger:
    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    # -- writing ---------------------------------------------------------------------------
    def save_revision(
        self,
        header: dict[str, Any],
        lines: list[dict[str, Any]],
        sources: list[dict[str, Any]],
    ) -> None:
        self.save_revisions([(header, lines, sources)])

    def save_revisions(
        self,
        revisions: list[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]],
    ) -> None:
        """Lineage and lines first, the headers last: a revision is visible only when whole."""
        sources = [r for _, _, srcs in revisions for r in srcs]
        lines = [ln for _, lns, _ in revisions for ln in lns]
        if sources:
            self.ex.insert(
                "ledger_line_sources", list(sources[0]), [tuple(r.values()) for r in sources]
            )
        if lines:
            self.ex.insert(
                "ledger_lines", LINE_COLS, [tuple(r[c] for c in LINE_COLS) for r in lines]
            )
        if revisions:
            self.ex.insert(
                "ledger_invoices",
                HEADER_COLS,
                [tuple(h[c] for c in HEADER_COLS) for h, _, _ in revisions],
            )

    def append_event(self, inv: InvoiceView, event: StatusEvent) -> None:
        self.append_events([(inv, event)])

    def append_events(self, events: list[tuple[InvoiceView, StatusEvent]]) -> None:
        self.ex.insert(
            "invoice_events",
            ["invoice_id", "tenant_id", "period", *EVENT_COLS],
            [
                (
                    inv.invoice_id,
                    inv.tenant_id,
                    inv.period,
                    e.key,
                    e.status,
                    e.at,
                    e.seq,
                    e.source,
                    e.source_ref,
                    e.detail,
                )
                for inv, e in events
            ],
        )

    def save_credit_note(self, row: dict[str, Any]) -> None:
        self.ex.insert("credit_notes", list(row), [tuple(row.values())])

    def record_failure(self, row: dict[str, Any]) -> None:
        self.ex.insert("billing_failures", list(row), [tuple(row.values())])

    def save_webhook(self, row: dict[str, Any]) -> None:
        self.ex.insert("stripe_webhook_events", list(row), [tuple(row.values())])

    # -- reading ---------------------------------------------------------------------------
    def _views(self, where: str, params: dict[str, Any]) -> list[InvoiceView]:
        rows = self.ex.execute(
            f"SELECT {', '.join(HEADER_COLS)} FROM ledger_invoices FINAL WHERE {where}", params
        )
        latest: dict[str, tuple[Any, ...]] = {}
        for r in rows:
            if r[0] not in latest or r[1] > latest[r[0]][1]:
                latest[r[0]] = r
        if not latest:
            return []
        events = self.events_for(sorted(latest))
        out = []
        for inv_id, r in latest.items():
            view = InvoiceView(*r)
            evs = events.get(inv_id, [])
            status, stripe_id = current_status(evs)
            started = any(e.key == sync_key(view.revision) for e in evs)
            out.append(
                replace(view, status=status, stripe_invoice_id=stripe_id, sync_started=started)
            )
        return sorted(out, key=lambda v: (v.period, v.tenant_id, v.created_at, v.invoice_id))

    def events_for(self, invoice_ids: list[str]) -> dict[str, list[StatusEvent]]:
        rows = self.ex.execute(
            f"SELECT invoice_id, {', '.join(EVENT_COLS)} FROM invoice_events FINAL "
            "WHERE invoice_id IN %(ids)s",
            {"ids": tuple(invoice_ids)},
        )
        out: dict[str, list[StatusEvent]] = defaultdict(list)
        for inv_id, *rest in rows:
            out[str(inv_id)].append(StatusEvent(*rest))
        return dict(out)

    def invoice(self, invoice_id: str) -> InvoiceView | None:
        found = self._views("invoice_id = %(i)s", {"i": invoice_id})
        return found[0] if found else None

    def invoices(self, period: str, tenant_id: str | None = None) -> list[InvoiceView]:
        if tenant_id is None:
            return self._views("period = %(p)s", {"p": period})
        return self._views("period = %(p)s AND tenant_id = %(t)s", {"p": period, "t": tenant_id})

    def current(self, tenant_id: str, period: str) -> InvoiceView | None:
        return current_of(self.invoices(period, tenant_id))

    def closed_before(
        self, period: str, tenant_id: str | None = None
    ) -> dict[str, list[InvoiceView]]:
        """Tenant -> its finalized (not void) invoices of periods before ``period``."""
        out: dict[str, list[InvoiceView]] = defaultdict(list)
        where, params = "period < %(p)s", {"p": period}
        if tenant_id is not None:
            where, params = where + " AND tenant_id = %(t)s", {**params, "t": tenant_id}
        for v in self._views(where, params):
            if v.charged:
                out[v.tenant_id].append(v)
        return dict(out)

    def by_stripe_id(self, stripe_invoice_id: str) -> InvoiceView | None:
        rows = self.ex.execute(
            "SELECT invoice_id FROM invoice_events FINAL WHERE source_ref = %(s)s "
            "AND status = 'finalized' LIMIT 1",
            {"s": stripe_invoice_id},
        )
        return self.invoice(str(rows[0][0])) if rows else None

    def lines(self, invoice_id: str, revision: int) -> list[dict[str, Any]]:
        rows = self.ex.execute(
            f"SELECT {', '.join(LINE_COLS)} FROM ledger_lines FINAL "
            "WHERE invoice_id = %(i)s AND revision = %(r)s ORDER BY line_key",
            {"i": invoice_id, "r": revision},
        )
        return [dict(zip(LINE_COLS, r, strict=True)) for r in rows]

    def line_sources(
        self, invoice_id: str, revision: int, line_key: str | None = None
    ) -> list[dict[str, Any]]:
        """The hourly rows behind one line of a revision, or behind all of its lines."""
        sql = (
            f"SELECT {', '.join(SOURCE_COLS)} FROM ledger_line_sources FINAL "
            "WHERE invoice_id = %(i)s AND revision = %(r)s"
        )
        params: dict[str, Any] = {"i": invoice_id, "r": revision}
        if line_key is not None:
            sql += " AND line_key = %(k)s"
            params["k"] = line_key
        rows = self.ex.execute(
            sql + " ORDER BY hour, project_id, mig_profile, region, provider, cluster", params
        )
        return [dict(zip(SOURCE_COLS, r, strict=True)) for r in rows]

    def charged_lines(
        self,
        tenant_id: str | None = None,
        since: str | None = None,
        before: str | None = None,
    ) -> list[ChargedLine]:
        """Every line of the ``charged`` (finalized, not void) invoices of a tenant (all when
        None) for the periods from ``since`` and before ``before``: what the rules of
        :mod:`pipeline.domain.charged` read. One query for the headers, one for the lines."""
        where, params = ["1"], {}
        if tenant_id is not None:
            where.append("tenant_id = %(t)s")
            params["t"] = tenant_id
        if since is not None:
            where.append("period >= %(a)s")
            params["a"] = since
        if before is not None:
            where.append("period < %(b)s")
            params["b"] = before
        views = {v.invoice_id: v for v in self._views(" AND ".join(where), params) if v.charged}
        if not views:
            return []
        cols = ["invoice_id", "revision", "line_key", "kind", "amount_minor", "currency"]
        cols += ["usage_us", "quantity_exact"]
        rows = self.ex.execute(
            f"SELECT {', '.join(cols)} FROM ledger_lines FINAL WHERE invoice_id IN %(i)s "
            "ORDER BY invoice_id, line_key",
            {"i": tuple(views)},
        )
        out = []
        for inv_id, revision, key, kind, amount_minor, currency, usage_us, qty in rows:
            v = views[str(inv_id)]
            if revision != v.revision:
                continue
            out.append(
                ChargedLine(
                    v.tenant_id,
                    v.invoice_id,
                    v.period,
                    LineKey.parse(str(key)),
                    str(kind),
                    from_minor(int(amount_minor), str(currency)),
                    int(amount_minor),
                    int(usage_us),
                    Fraction(str(qty)),
                )
            )
        return out

    def credit_notes(self, invoice_id: str) -> list[dict[str, Any]]:
        cols = ["credit_note_id", "invoice_id", "total_minor", "currency", "reason", "created_at"]
        rows = self.ex.execute(
            f"SELECT {', '.join(cols)} FROM credit_notes FINAL WHERE invoice_id = %(i)s",
            {"i": invoice_id},
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def failures(self, period: str) -> list[dict[str, Any]]:
        cols = [
            "tenant_id",
            "invoice_id",
            "at",
            "stage",
            "transient",
            "http_status",
            "code",
            "message",
        ]
        rows = self.ex.execute(
            f"SELECT {', '.join(cols)} FROM billing_failures WHERE period = %(p)s ORDER BY at",
            {"p": period},
        )
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def webhook_seen(self, event_id: str) -> bool:
        rows = self.ex.execute(
            "SELECT count() FROM stripe_webhook_events FINAL WHERE event_id = %(e)s",
            {"e": event_id},
        )
        return int(rows[0][0]) > 0
