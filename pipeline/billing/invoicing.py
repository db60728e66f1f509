"""External tenants: the invoice lifecycle and its Stripe sync.

For one tenant and period, :meth:`Invoicer.bill`:

1. rates the period's usage on the tenant's rate card and contract, adds adjustments for late
   usage of earlier invoiced periods and draws prepaid credits (:mod:`pipeline.billing.compose`);
2. keeps the result as a **draft** revision in the ledger (a new revision only when the content
   changed, :mod:`pipeline.billing.drafts`); a draft stays open for ``draft_grace_h`` after the
   period ends, following late usage;
3. after the grace period, **finalizes**: Stripe customer -> invoice -> one invoice item per
   line -> finalize -> send (:mod:`pipeline.billing.stripe_sync`), every request with an
   idempotency key derived from the invoice revision and what it sends, then the
   ``finalized`` event in the ledger (last: a crash before it is completed by the next run
   with the same keys, so nothing is created twice), then the documents
   (:class:`~pipeline.billing.documents.DocumentQueue`);
4. leaves a finalized invoice alone: a rerun reports ``unchanged``, ``changed_after_final``
   when usage arrived since (it goes on the next invoice as an adjustment), or ``adjusted``
   once that adjustment is on a later finalized invoice.

A Stripe failure (after the gateway's retries) is recorded against the tenant and returned;
the run goes on with the other tenants. Voiding: :mod:`pipeline.billing.void`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from pipeline.adapters.ledger import InvoiceView, Ledger, sync_key
from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.billing.compose import Composer, Known
from pipeline.billing.documents import DocumentQueue
from pipeline.billing.drafts import Drafts, invoice_id_for
from pipeline.billing.ledger_rows import content_hash, line_rows, seq
from pipeline.billing.stripe_sync import item_description, item_key, sync_all
from pipeline.billing.void import void_invoice
from pipeline.config import Config
from pipeline.domain.fingerprint import RatingMark, usage_fingerprint
from pipeline.domain.invoice import Composition
from pipeline.domain.lifecycle import StatusEvent
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow, usage_hours
from pipeline.domain.reference import Tenant

__all__ = [
    "Due",
    "Invoicer",
    "Known",
    "TenantResult",
    "content_hash",
    "item_description",
    "item_key",
]


@dataclass
class TenantResult:
    """What a billing run did for one tenant."""

    tenant_id: str
    kind: str  # external | internal
    currency: str
    gpu_hours: Fraction
    amount: Decimal
    # draft | finalized | unchanged | changed_after_final (late usage, not yet on a later
    # invoice) | adjusted (late usage carried on a later invoice) | failed | no_invoice |
    # charged_back | changed_after_close (internal)
    status: str
    document: str = ""
    invoice_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class Due:
    """A draft whose grace period is over: to be finalized and sent through Stripe."""

    tenant: Tenant
    view: InvoiceView
    comp: Composition
    # what its finalization settles: its own period, and the closed periods it adjusts
    settles: tuple[RatingMark, ...] = ()


def _usage_hours(comp: Composition) -> Fraction:
    return sum((ln.quantity for ln in comp.lines if ln.kind == "usage"), Fraction(0))


class Invoicer:
    def __init__(
        self,
        config: Config,
        store: Store,
        ledger: Ledger,
        stripe: StripeGateway,
        out_root: Path,
        clock: Callable[[], datetime],
        grace: timedelta,
    ) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.stripe = stripe
        self.out_root = out_root
        self.clock = clock
        self.grace = grace
        self.marks = RatingMarks(ledger.ex)
        self.composer = Composer(config, store, ledger, self.marks)
        self.drafts = Drafts(config, ledger, clock)
        self.documents = DocumentQueue(config, ledger, out_root)

    def prefetch(self, period: Period, tenant_id: str | None = None) -> Known:
        return self.composer.prefetch(period, tenant_id)

    # -- the lifecycle ---------------------------------------------------------------------
    def bill(
        self, tenant: Tenant, period: Period, rows: list[UsageRow], known: Known | None = None
    ) -> TenantResult:
        """Bill one tenant (see the module doc); a billing run uses :meth:`prepare` and
        :meth:`finalize_all` to sync many invoices to Stripe concurrently."""
        result, due = self.prepare(tenant, period, rows, known)
        self.flush_drafts()
        return self.finalize_all([due])[0] if due is not None else result

    def prepare(
        self, tenant: Tenant, period: Period, rows: list[UsageRow], known: Known | None = None
    ) -> tuple[TenantResult, Due | None]:
        """Steps 1-2 (and 4): the result, and the invoice to finalize when it is due."""
        p = str(period)
        known = known or self.prefetch(period, tenant.id)
        current = known.current(tenant.id)
        currency = self.config.card_for(tenant.id).currency
        if current is not None and current.charged:
            self.documents.ensure(current)
            hours = usage_hours(rows, self.config.reference.catalog)
            status = self.composer.standing(tenant, current, rows, known)
            return self._outcome(current, hours, status), None
        invoice_id = invoice_id_for(tenant.id, p, current, len(known.views.get(tenant.id, [])))
        comp, settles = self.composer.compose(tenant, period, rows, known)
        if not comp.lines and not self.config.contract(tenant.id).zero_invoice:
            empty = TenantResult(
                tenant.id, "external", currency, Fraction(0), Decimal(0), "no_invoice"
            )
            return empty, None
        draft = current if current is not None and current.invoice_id == invoice_id else None
        view = self.drafts.save(tenant, period, invoice_id, comp, draft, rows)
        hours = _usage_hours(comp)
        if self.clock() < period.end + self.grace:
            return self._outcome(view, hours, "draft"), None
        own = RatingMark(tenant.id, p, usage_fingerprint(rows), p)
        return self._outcome(view, hours, "finalizing"), Due(tenant, view, comp, (own, *settles))

    def flush_drafts(self) -> None:
        """Step 2 for every tenant prepared so far, in one insert per table (before any of
        them is sent to Stripe), and the periods found settled while composing them."""
        self.drafts.flush()
        self.marks.save(self.composer.settled, self.clock())
        self.composer.settled.clear()

    def finalize_all(self, due: list[Due], threads: int = 1) -> list[TenantResult]:
        """Step 3 for many invoices: the Stripe requests of different invoices run in
        ``threads`` threads (each invoice's own requests stay in order); the ledger is written
        from this thread only, after Stripe: customers, failures, then the ``finalized``
        events in one insert, then the marks of what they settle."""
        if not due:
            return []
        customers = self.store.stripe_customers()
        now = self.clock()
        self.ledger.append_events(  # before any request: a later run knows to look first
            [
                (
                    d.view,
                    StatusEvent(
                        sync_key(d.view.revision),
                        "draft",
                        now,
                        seq(now),
                        "billing",
                        "",
                        "Stripe sync started",
                    ),
                )
                for d in due
                if not d.view.sync_started
            ]
        )
        synced = sync_all(
            self.stripe, [(d.tenant, d.view, d.comp) for d in due], customers, threads
        )
        self.store.save_stripe_customers(
            {
                d.tenant.id: s.customer
                for d, s in zip(due, synced, strict=True)
                if s.customer and d.tenant.id not in customers
            }
        )
        results: list[TenantResult] = []
        events: list[tuple[InvoiceView, StatusEvent]] = []
        settled: list[RatingMark] = []
        now = self.clock()
        for d, s in zip(due, synced, strict=True):
            if s.error is not None:
                self.ledger.record_failure(
                    {
                        "period": d.view.period,
                        "tenant_id": d.tenant.id,
                        "invoice_id": d.view.invoice_id,
                        "at": now,
                        "stage": "stripe_sync",
                        "transient": int(s.error.transient),
                        "http_status": s.error.http_status or 0,
                        "code": s.error.code,
                        "message": str(s.error),
                    }
                )
                out = self._outcome(d.view, _usage_hours(d.comp), "failed")
                out.error = f"{s.error.code}: {s.error}"
                results.append(out)
                continue
            detail = json.dumps({"customer": s.customer, "items": s.items}, sort_keys=True)
            event = StatusEvent(
                "finalized", "finalized", now, seq(now), "billing", s.invoice, detail
            )
            events.append((d.view, event))
            final = replace(d.view, status="finalized", stripe_invoice_id=s.invoice)
            self.documents.queue(
                final,
                line_rows(
                    final.invoice_id,
                    final.revision,
                    final.tenant_id,
                    final.period,
                    final.currency,
                    d.comp,
                ),
            )
            results.append(self._outcome(final, _usage_hours(d.comp), "finalized"))
            settled += d.settles
        self.ledger.append_events(events)
        self.marks.save(settled, now)  # after the documents they describe are final
        return results

    def _outcome(self, view: InvoiceView, qty: Fraction, status: str) -> TenantResult:
        return TenantResult(
            view.tenant_id,
            "external",
            view.currency,
            qty,
            view.total,
            status,
            document=str(self.documents.folder(view.period) / f"{view.invoice_id}.pdf"),
            invoice_id=view.invoice_id,
        )

    def write_documents(self) -> None:
        """Write the documents queued by this run (PDF rendering runs in parallel)."""
        self.documents.write()

    # -- after finalization ----------------------------------------------------------------
    def void(
        self, invoice_id: str, reason: str, source: str = "cli", source_ref: str = ""
    ) -> InvoiceView:
        """Void a finalized invoice (in Stripe too, unless Stripe told us) and issue a credit
        note cancelling it (:func:`pipeline.billing.void.void_invoice`)."""
        return void_invoice(
            self.config,
            self.ledger,
            self.stripe,
            self.marks,
            self.out_root,
            self.clock,
            invoice_id,
            reason,
            source,
            source_ref,
        )
