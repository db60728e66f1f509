"""Draft invoices: numbering and revisions. A draft gets a new revision only when its content
changes; the drafts of a run are written in one insert per ledger table, before any of them is
sent to Stripe."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.billing.ledger_rows import (
    Revision,
    content_hash,
    header_row,
    line_rows,
    seq,
    source_rows,
)
from pipeline.config import Config
from pipeline.domain.invoice import Composition
from pipeline.domain.lifecycle import StatusEvent
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow
from pipeline.domain.reference import Tenant


def invoice_id_for(tenant_id: str, period: str, current: InvoiceView | None, count: int) -> str:
    """The id of the invoice to (re)draft for a period: ``GM-<period>-<tenant>``, the current
    draft's, or ``...-R<n>`` replacing a void one (``count``: the tenant's invoices of the
    period so far)."""
    if current is None:
        return f"GM-{period}-{tenant_id}"
    if current.status == "void":
        return f"GM-{period}-{tenant_id}-R{count + 1}"
    return current.invoice_id


class Drafts:
    def __init__(self, config: Config, ledger: Ledger, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.pending: list[tuple[Revision, tuple[InvoiceView, StatusEvent]]] = []

    def save(
        self,
        tenant: Tenant,
        period: Period,
        invoice_id: str,
        comp: Composition,
        draft: InvoiceView | None,
        rows: list[UsageRow],
    ) -> InvoiceView:
        """The draft as it stands after this composition: ``draft`` itself when its content is
        the same, else a new revision queued for :meth:`flush`."""
        if draft is not None and draft.content_hash == content_hash(comp.lines):
            return draft
        revision = 1 if draft is None else draft.revision + 1
        currency = self.config.card_for(tenant.id).currency
        now = self.clock()
        terms = self.config.contract(tenant.id).payment_terms_days
        header = header_row(invoice_id, revision, tenant.id, period, currency, comp, terms, now)
        lines = line_rows(invoice_id, revision, tenant.id, str(period), currency, comp)
        sources = source_rows(invoice_id, revision, tenant.id, comp, rows)
        view = InvoiceView(**header)
        event = StatusEvent(f"draft/r{revision}", "draft", now, seq(now), "billing", "", "")
        self.pending.append(((header, lines, sources), (view, event)))
        return view

    def flush(self) -> None:
        """Every draft queued so far, in one insert per table."""
        self.ledger.save_revisions([rev for rev, _ in self.pending])
        self.ledger.append_events([ev for _, ev in self.pending])
        self.pending.clear()
