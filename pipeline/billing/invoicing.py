"""External tenants: the invoice lifecycle and its Stripe sync.

For one tenant and period, :meth:`Invoicer.bill`:

1. rates the period's usage on the tenant's rate card and contract, adds adjustments for late
   usage of earlier invoiced periods and draws prepaid credits (:mod:`pipeline.domain.invoice`);
2. keeps the result as a **draft** revision in the ledger (a new revision only when the content
   changed); a draft stays open for ``draft_grace_h`` after the period ends, following late
   usage;
3. after the grace period, **finalizes**: Stripe customer -> invoice -> one invoice item per
   line -> finalize -> send, every request with an idempotency key derived from the invoice
   revision and what it bills, then the ``finalized`` event in the ledger (last: a crash before
   it is completed by the next run with the same keys, so nothing is created twice);
4. leaves a finalized invoice alone: a rerun reports ``unchanged``, ``changed_after_final``
   when usage arrived since (it goes on the next invoice as an adjustment), or ``adjusted``
   once that adjustment is on a later finalized invoice.

A Stripe failure (after the gateway's retries) is recorded against the tenant and returned;
the run goes on with the other tenants.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.adapters.ledger import InvoiceView, Ledger, current_of, sync_key
from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway, StripeSyncError
from pipeline.billing.documents import (
    build_document,
    credit_note,
    fraction_text,
    write_document,
    write_documents,
)
from pipeline.config import Config
from pipeline.domain.adjustments import Billed, adjustment_lines
from pipeline.domain.documents import InvoiceDocument
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.fingerprint import EMPTY, RatingMark, usage_fingerprint
from pipeline.domain.invoice import Composition, compose
from pipeline.domain.lifecycle import StatusEvent, allowed
from pipeline.domain.line_key import LineKey
from pipeline.domain.money import to_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import Line, UsageRow, idempotency_key, rate_usage, usage_hours
from pipeline.domain.reference import Tenant


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
    # charged_back (internal)
    status: str
    document: str = ""
    invoice_id: str = ""
    error: str = ""


Revision = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Due:
    """A draft whose grace period is over: to be finalized and sent through Stripe."""

    tenant: Tenant
    view: InvoiceView
    comp: Composition
    # what its finalization settles: its own period, and the closed periods it adjusts
    settles: tuple[RatingMark, ...] = ()


@dataclass(frozen=True)
class Synced:
    customer: str
    invoice: str  # Stripe invoice id ("" when it failed)
    items: dict[str, str]  # line key -> Stripe invoice item id
    error: StripeSyncError | None


@dataclass
class Known:
    """What the ledger holds for a run's period, read once for all tenants."""

    views: dict[str, list[InvoiceView]]  # tenant -> its invoices of the period, oldest first
    closed: dict[str, list[InvoiceView]]  # tenant -> finalized invoices of earlier periods
    # (tenant, period) -> the fingerprint of its usage now, for the periods of ``closed``
    fingerprints: dict[tuple[str, str], str] = field(default_factory=dict)
    marks: dict[tuple[str, str], RatingMark] = field(default_factory=dict)  # what was rated

    def current(self, tenant_id: str) -> InvoiceView | None:
        return current_of(self.views.get(tenant_id, []))


def _usage_lines_hours(comp: Composition) -> Fraction:
    return sum((ln.quantity for ln in comp.lines if ln.kind == "usage"), Fraction(0))


def content_hash(lines: list[Line]) -> str:
    h = hashlib.sha256()
    for ln in lines:
        h.update(
            f"{ln.line_key}|{ln.kind}|{ln.period_ref}|{ln.quantity}|{ln.unit_price}|"
            f"{ln.amount}|{ln.currency}\n".encode()
        )
    return h.hexdigest()


def item_description(ln: Line) -> str:
    """The description of a line's Stripe invoice item."""
    if not ln.unit:
        return ln.description
    return f"{ln.description} ({ln.quantity_display} {ln.unit} x {ln.unit_price})"


def item_key(invoice_id: str, revision: int, ln: Line) -> str:
    """The idempotency key of a line's Stripe invoice item: everything the request sends.

    The revision stands for the Stripe invoice the item is added to (each revision gets its
    own, created with a key of the invoice, the revision and its content, and found again by
    that metadata after Stripe's 24 hours), so an unchanged line of a later revision is a new
    request with a new key rather than a repeat with another ``invoice`` parameter, which
    Stripe refuses. Customer and metadata follow from the tenant, the invoice and the line."""
    return idempotency_key(
        "item",
        invoice_id,
        revision,
        ln.line_key,
        ln.amount_minor,
        ln.currency,
        item_description(ln),
    )


def _seq(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


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
        self.documents: list[tuple[Path, InvoiceDocument]] = []
        self.drafts: list[tuple[Revision, tuple[InvoiceView, StatusEvent]]] = []
        self.marks = RatingMarks(ledger.ex)
        self.settled: list[RatingMark] = []  # found settled by this run, written with the drafts

    # -- composition -----------------------------------------------------------------------
    def prefetch(self, period: Period, tenant_id: str | None = None) -> Known:
        views: dict[str, list[InvoiceView]] = {}
        for v in self.ledger.invoices(str(period), tenant_id):
            views.setdefault(v.tenant_id, []).append(v)
        closed = self.ledger.closed_before(str(period), tenant_id)
        tenants = None if tenant_id is None else [tenant_id]
        periods = {v.period for vs in closed.values() for v in vs}
        fingerprints = (
            self.marks.fingerprints(Period.parse(min(periods)), period, tenants) if periods else {}
        )
        return Known(views, closed, fingerprints, self.marks.marks(tenants))

    def compose_for(
        self, tenant: Tenant, period: Period, rows: list[UsageRow], known: Known
    ) -> tuple[Composition, list[RatingMark]]:
        """The period's composition, and the closed periods its adjustment lines settle."""
        contract = self.config.contract(tenant.id)
        card = self.config.card_for(tenant.id)
        rated = rate_usage(rows, card, self.config.reference.catalog, contract.tier_of)
        adjustments, drawn, settles = self._adjustments(tenant, known, str(period))
        used: dict[str, Decimal] = {}
        if contract.credits:
            used = self._merge(
                self.ledger.credits_used(tenant.id, before_period=str(period)), drawn
            )
        return compose(period, rated, contract, card.currency, adjustments, used), settles

    def _adjustments(
        self, tenant: Tenant, known: Known, period: str
    ) -> tuple[list[Line], dict[str, Decimal], list[RatingMark]]:
        """Late usage of the tenant's already-invoiced earlier periods, as lines for this one,
        the prepaid credit those lines draw (so this period cannot draw it again), and the
        periods those lines settle.

        Only a closed period whose usage changed since it was last rated (its fingerprint
        differs from its mark) is composed again, so a run's cost does not grow with the
        tenant's history. It is composed with the credit balances left by every other invoice
        (earlier and later ones: a credit is never drawn past its balance). One whose new
        composition equals what was charged for it is settled at once."""
        card = self.config.card_for(tenant.id)
        out: list[Line] = []
        drawn: dict[str, Decimal] = {}
        settles: list[RatingMark] = []
        for closed in known.closed.get(tenant.id, []):
            mark = known.marks.get((tenant.id, closed.period))
            if mark is not None and mark.current(
                known.fingerprints.get((tenant.id, closed.period), EMPTY)
            ):
                continue
            rows = self.store.hourly_rows(Period.parse(closed.period), tenant.id).get(tenant.id, [])
            now = self._recompose(tenant, closed, drawn, rows)
            billed = self._billed(tenant, closed.period, excluding_period=period)
            lines = adjustment_lines(closed.period, now, billed, card.currency)
            fingerprint = usage_fingerprint(rows)
            if lines:
                settles.append(RatingMark(tenant.id, closed.period, fingerprint, period))
            else:
                was = mark.settled_in if mark is not None else closed.period
                self.settled.append(RatingMark(tenant.id, closed.period, fingerprint, was))
            for adj in lines:
                credit_id = LineKey.parse(adj.line_key).credit_id
                if credit_id is not None:
                    drawn[credit_id] = drawn.get(credit_id, Decimal(0)) - adj.amount
            out += lines
        return out, drawn, settles

    def _recompose(
        self,
        tenant: Tenant,
        closed: InvoiceView,
        drawn: dict[str, Decimal],
        rows: list[UsageRow],
    ) -> list[Line]:
        """A closed period's lines as they would be with all usage known today (``rows``)."""
        contract = self.config.contract(tenant.id)
        card = self.config.card_for(tenant.id)
        original = Period.parse(closed.period)
        rated = rate_usage(rows, card, self.config.reference.catalog, contract.tier_of)
        used: dict[str, Decimal] = {}
        if contract.credits:
            used = self.ledger.credits_used(
                tenant.id, excluding_invoice=closed.invoice_id, excluding_ref=closed.period
            )
        return compose(
            original, rated, contract, card.currency, credits_used=self._merge(used, drawn)
        ).lines

    def _billed(self, tenant: Tenant, period: str, excluding_period: str) -> dict[str, Billed]:
        """Line key -> what has been charged for it so far for ``period``."""
        billed: dict[str, Billed] = {}
        for ln in self.ledger.billed_lines(tenant.id, period, excluding_period):
            key = LineKey.parse(ln["line_key"]).base
            was = billed.get(key, Billed(0, 0, Fraction(0)))
            billed[key] = Billed(
                was.amount_minor + int(ln["amount_minor"]),
                was.usage_us + int(ln["usage_us"]),
                was.quantity + Fraction(ln["quantity_exact"]),
            )
        return billed

    @staticmethod
    def _merge(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, Decimal(0)) + v
        return out

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
            self._ensure_document(current)
            hours = usage_hours(rows, self.config.reference.catalog)
            return self._outcome(current, hours, self._standing(tenant, current, rows, known)), None
        if current is None:
            invoice_id = f"GM-{p}-{tenant.id}"
        elif current.status == "void":
            n = len(known.views.get(tenant.id, [])) + 1
            invoice_id = f"GM-{p}-{tenant.id}-R{n}"
        else:
            invoice_id = current.invoice_id
        comp, settles = self.compose_for(tenant, period, rows, known)
        contract = self.config.contract(tenant.id)
        if not comp.lines and not contract.zero_invoice:
            empty = TenantResult(
                tenant.id, "external", currency, Fraction(0), Decimal(0), "no_invoice"
            )
            return empty, None
        draft = current if current is not None and current.invoice_id == invoice_id else None
        view = self._save_draft(tenant, period, invoice_id, comp, draft, rows)
        hours = _usage_lines_hours(comp)
        if self.clock() < period.end + self.grace:
            return self._outcome(view, hours, "draft"), None
        own = RatingMark(tenant.id, p, usage_fingerprint(rows), p)
        return self._outcome(view, hours, "finalizing"), Due(tenant, view, comp, (own, *settles))

    def _standing(
        self, tenant: Tenant, current: InvoiceView, rows: list[UsageRow], known: Known
    ) -> str:
        """Where a finalized invoice's period stands (see the module doc), rating it again
        only when its usage changed since it was last rated."""
        p = current.period
        fingerprint = usage_fingerprint(rows)
        mark = known.marks.get((tenant.id, p))
        if mark is not None and mark.current(fingerprint):
            return "unchanged" if mark.settled_in == p else "adjusted"
        # usage arrived after finalization: carried on a later invoice already, or pending
        now = self._recompose(tenant, current, {}, rows)
        billed = self._billed(tenant, p, excluding_period="")
        if adjustment_lines(p, now, billed, current.currency):
            return "changed_after_final"
        carried = [
            ln["period"]
            for ln in self.ledger.billed_lines(tenant.id, p, "")
            if ln["kind"] == "adjustment"
        ]
        self.settled.append(RatingMark(tenant.id, p, fingerprint, max(carried, default=p)))
        return "adjusted" if carried else "unchanged"

    def finalize_all(self, due: list[Due], threads: int = 1) -> list[TenantResult]:
        """Step 3 for many invoices: the Stripe requests of different invoices run in
        ``threads`` threads (each invoice's own requests stay in order); the ledger is written
        from this thread only, after Stripe: customers, failures, then the ``finalized``
        events in one insert."""
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
                        _seq(now),
                        "billing",
                        "",
                        "Stripe sync started",
                    ),
                )
                for d in due
                if not d.view.sync_started
            ]
        )
        if threads > 1 and len(due) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                synced = list(pool.map(lambda d: self._sync(d, customers), due))
        else:
            synced = [self._sync(d, customers) for d in due]
        new_customers = {
            d.tenant.id: s.customer
            for d, s in zip(due, synced, strict=True)
            if s.customer and d.tenant.id not in customers
        }
        self.store.save_stripe_customers(new_customers)
        results, events = [], []
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
                out = self._outcome(d.view, _usage_lines_hours(d.comp), "failed")
                out.error = f"{s.error.code}: {s.error}"
                results.append(out)
                continue
            detail = json.dumps({"customer": s.customer, "items": s.items}, sort_keys=True)
            events.append(
                (
                    d.view,
                    StatusEvent(
                        "finalized", "finalized", now, _seq(now), "billing", s.invoice, detail
                    ),
                )
            )
            final = replace(d.view, status="finalized", stripe_invoice_id=s.invoice)
            rows = self._line_rows(
                final.invoice_id,
                final.revision,
                final.tenant_id,
                final.period,
                final.currency,
                d.comp,
            )
            self._queue_document(final, rows)
            results.append(self._outcome(final, _usage_lines_hours(d.comp), "finalized"))
            settled += d.settles
        self.ledger.append_events(events)
        self.marks.save(settled, now)  # after the documents they describe are final
        return results

    def _outcome(self, view: InvoiceView, qty: Fraction, status: str) -> TenantResult:
        folder = self.out_root / view.period / "invoices"
        return TenantResult(
            view.tenant_id,
            "external",
            view.currency,
            qty,
            view.total,
            status,
            document=str(folder / f"{view.invoice_id}.pdf"),
            invoice_id=view.invoice_id,
        )

    def _save_draft(
        self,
        tenant: Tenant,
        period: Period,
        invoice_id: str,
        comp: Composition,
        draft: InvoiceView | None,
        rows: list[UsageRow],
    ) -> InvoiceView:
        chash = content_hash(comp.lines)
        if draft is not None and draft.content_hash == chash:
            return draft
        revision = 1 if draft is None else draft.revision + 1
        currency = self.config.card_for(tenant.id).currency
        now = self.clock()
        issued = period.end
        header: dict[str, Any] = {
            "invoice_id": invoice_id,
            "revision": revision,
            "tenant_id": tenant.id,
            "period": str(period),
            "currency": currency,
            "subtotal_minor": to_minor(comp.subtotal, currency),
            "credits_minor": to_minor(comp.credits, currency),
            "tax_minor": 0,
            "total_minor": to_minor(comp.total, currency),
            "line_count": len(comp.lines),
            "content_hash": chash,
            "issued_at": issued,
            "due_at": issued + timedelta(days=self.config.contract(tenant.id).payment_terms_days),
            "created_at": now,
        }
        lines = self._line_rows(invoice_id, revision, tenant.id, str(period), currency, comp)
        sources = []
        usage_by_key = {r.key: r.usage_us for r in rows}
        for ln in comp.lines:
            if ln.kind == "usage":
                for k in ln.source_keys:
                    sources.append(
                        {
                            "invoice_id": invoice_id,
                            "revision": revision,
                            "line_key": ln.line_key,
                            "tenant_id": tenant.id,
                            "hour": datetime.fromtimestamp(k.hour_s, UTC),
                            "project_id": k.project_id,
                            "gpu_model": k.gpu_model,
                            "mig_profile": k.mig_profile,
                            "region": k.region,
                            "provider": k.provider,
                            "cluster": k.cluster,
                            "usage_us": usage_by_key[k],
                        }
                    )
        view = InvoiceView(**header)
        event = StatusEvent(f"draft/r{revision}", "draft", now, _seq(now), "billing", "", "")
        self.drafts.append(((header, lines, sources), (view, event)))
        return view

    def flush_drafts(self) -> None:
        """Step 2 for every tenant prepared so far, in one insert per table (before any of
        them is sent to Stripe)."""
        self.ledger.save_revisions([rev for rev, _ in self.drafts])
        self.ledger.append_events([ev for _, ev in self.drafts])
        self.drafts.clear()
        self.marks.save(self.settled, self.clock())
        self.settled.clear()

    def _line_rows(
        self,
        invoice_id: str,
        revision: int,
        tenant_id: str,
        period: str,
        currency: str,
        comp: Composition,
    ) -> list[dict[str, Any]]:
        """The ledger rows of a revision's lines."""
        return [
            {
                "invoice_id": invoice_id,
                "revision": revision,
                "line_key": ln.line_key,
                "line_id": f"{invoice_id}/{ln.line_key}",
                "tenant_id": tenant_id,
                "period": period,
                "kind": ln.kind,
                "period_ref": ln.period_ref or period,
                "description": ln.description,
                "gpu_model": ln.gpu_model,
                "mig_profile": ln.mig_profile,
                "quantity": str(ln.quantity_display),
                "quantity_exact": fraction_text(ln.quantity),
                "unit": ln.unit,
                "unit_price": str(ln.unit_price),
                "amount_minor": ln.amount_minor,
                "exact_amount": fraction_text(ln.exact),
                "currency": currency,
                "usage_us": ln.usage_us,
                "hourly_rows": ln.hourly_rows,
                "stripe_invoice_item_id": "",
                "idempotency_key": item_key(invoice_id, revision, ln),
            }
            for ln in comp.lines
        ]

    def _sync(self, due: Due, customers: dict[str, str]) -> Synced:
        """Stripe only (no ledger I/O, safe in a thread): customer -> invoice -> items ->
        finalize -> send, each with its idempotency key."""
        tenant, view, comp = due.tenant, due.view, due.comp
        inv_id, p, cur = view.invoice_id, view.period, view.currency
        basis = (inv_id, view.revision, view.content_hash)
        customer = customers.get(tenant.id, "")
        try:
            if not customer:
                customer = self.stripe.ensure_customer(
                    tenant.id, tenant.name, tenant.email, idempotency_key("customer", tenant.id)
                )
            # an earlier run began this sync (and may be older than Stripe's 24-hour
            # idempotency window): reuse what it created instead of creating it again
            found = (
                self.stripe.find_invoice(customer, inv_id, view.revision)
                if view.sync_started
                else None
            )
            have = self.stripe.items_of(found.id) if found is not None else {}
            inv = found or self.stripe.create_invoice(
                customer,
                cur,
                {
                    "tenant_id": tenant.id,
                    "period": p,
                    "invoice_id": inv_id,
                    "revision": str(view.revision),
                },
                f"GPU usage {p} ({inv_id})",
                idempotency_key("invoice", *basis),
            )
            items: dict[str, str] = {}
            for ln in comp.lines:
                line_id = f"{inv_id}/{ln.line_key}"
                if line_id in have:
                    items[ln.line_key] = have[line_id]
                    continue
                items[ln.line_key] = self.stripe.add_item(
                    customer,
                    inv.id,
                    ln.amount_minor,
                    cur,
                    item_description(ln),
                    {"tenant_id": tenant.id, "period": p, "line_id": line_id},
                    item_key(inv_id, view.revision, ln),
                )
            if found is None or found.status == "draft":
                self.stripe.finalize(inv.id, idempotency_key("finalize", *basis))
            self.stripe.send_invoice(inv.id, idempotency_key("send", *basis))
        except StripeSyncError as exc:
            return Synced(customer, "", {}, exc)
        return Synced(customer, inv.id, items, None)

    def _queue_document(self, view: InvoiceView, lines: list[dict[str, Any]] | None = None) -> None:
        """Queue a document for :meth:`write_documents`; ``lines`` as the ledger holds them
        (read from it when not given)."""
        if lines is None:
            lines = self.ledger.lines(view.invoice_id, view.revision)
        folder = self.out_root / view.period / "invoices"
        self.documents.append((folder, build_document(self.config, view, lines)))

    def _ensure_document(self, view: InvoiceView) -> None:
        """A finalized invoice's PDF is derived from the ledger: write it again if missing."""
        folder = self.out_root / view.period / "invoices"
        if not (folder / f"{view.invoice_id}.pdf").exists():
            self._queue_document(view)

    def write_documents(self) -> None:
        """Write the documents queued by this run (PDF rendering runs in parallel)."""
        write_documents(self.documents)
        self.documents.clear()

    # -- after finalization ----------------------------------------------------------------
    def void(
        self, invoice_id: str, reason: str, source: str = "cli", source_ref: str = ""
    ) -> InvoiceView:
        """Void a finalized invoice (in Stripe too, unless Stripe told us) and issue a credit
        note cancelling it. Idempotent: the credit note and documents are written before the
        ``void`` event, so a crash in between is completed by the next call."""
        view = self.ledger.invoice(invoice_id)
        if view is None:
            raise BillingError(BillingErrorCode.INVOICE_NOT_FOUND, f"no invoice {invoice_id!r}")
        if view.status == "void" and self.ledger.credit_notes(invoice_id):
            return view
        if view.status != "void" and not allowed(view.status, "void"):
            raise BillingError(
                BillingErrorCode.INVALID_TRANSITION,
                f"invoice {invoice_id} is {view.status}; only a finalized or unpaid invoice can "
                "be voided",
            )
        if source == "cli" and view.stripe_invoice_id and view.status != "void":
            self.stripe.void_invoice(view.stripe_invoice_id, idempotency_key("void", invoice_id))
        now = self.clock()
        note_id = f"CN-{invoice_id}"
        self.ledger.save_credit_note(
            {
                "credit_note_id": note_id,
                "invoice_id": invoice_id,
                "tenant_id": view.tenant_id,
                "period": view.period,
                "currency": view.currency,
                "total_minor": -view.total_minor,
                "reason": reason,
                "created_at": now,
            }
        )
        lines = self.ledger.lines(invoice_id, view.revision)
        # what this invoice charged for its period and for the periods it adjusts no longer
        # stands: they are rated again by the next run (written before the void event)
        periods = {view.period} | {ln["period_ref"] for ln in lines if ln["kind"] == "adjustment"}
        self.marks.save(
            [RatingMark(view.tenant_id, period, "", "") for period in sorted(periods)], now
        )
        doc = build_document(self.config, view, lines)
        folder = self.out_root / view.period / "invoices"
        write_document(folder, doc.model_copy(update={"status": "void"}))
        write_document(folder, credit_note(doc, note_id, now, reason))
        if view.status != "void":
            self.ledger.append_event(
                view, StatusEvent("void", "void", now, _seq(now), source, source_ref, reason)
            )
        final = self.ledger.invoice(invoice_id)
        assert final is not None
        return final
