"""Voiding a finalized invoice: in Stripe (unless Stripe told us), a credit note cancelling it
in full (``CN-<invoice id>``, JSON + PDF), then the ``void`` event. The next ``bill`` for the
period issues a replacement ``<id>-R<n>``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.billing.documents import build_document, credit_note, write_document
from pipeline.billing.ledger_rows import seq
from pipeline.config import Config
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.fingerprint import RatingMark
from pipeline.domain.lifecycle import StatusEvent, allowed
from pipeline.domain.rating import idempotency_key


def void_invoice(
    config: Config,
    ledger: Ledger,
    stripe: StripeGateway,
    marks: RatingMarks,
    out_root: Path,
    clock: Callable[[], datetime],
    invoice_id: str,
    reason: str,
    source: str = "cli",
    source_ref: str = "",
) -> InvoiceView:
    """Idempotent: the credit note, the cleared rating marks and the documents are written
    before the ``void`` event, so a crash in between is completed by the next call."""
    view = ledger.invoice(invoice_id)
    if view is None:
        raise BillingError(BillingErrorCode.INVOICE_NOT_FOUND, f"no invoice {invoice_id!r}")
    if view.status == "void" and ledger.credit_notes(invoice_id):
        return view
    if view.status != "void" and not allowed(view.status, "void"):
        raise BillingError(
            BillingErrorCode.INVALID_TRANSITION,
            f"invoice {invoice_id} is {view.status}; only a finalized or unpaid invoice can "
            "be voided",
        )
    if source == "cli" and view.stripe_invoice_id and view.status != "void":
        stripe.void_invoice(view.stripe_invoice_id, idempotency_key("void", invoice_id))
    now = clock()
    note_id = f"CN-{invoice_id}"
    ledger.save_credit_note(
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
    lines = ledger.lines(invoice_id, view.revision)
    # what this invoice charged for its period and for the periods it adjusts no longer
    # stands: they are rated again by the next run
    periods = {view.period} | {ln["period_ref"] for ln in lines if ln["kind"] == "adjustment"}
    marks.save([RatingMark(view.tenant_id, p, "", "") for p in sorted(periods)], now)
    doc = build_document(config, view, lines)
    folder = out_root / view.period / "invoices"
    write_document(folder, doc.model_copy(update={"status": "void"}))
    write_document(folder, credit_note(doc, note_id, now, reason))
    if view.status != "void":
        ledger.append_event(
            view, StatusEvent("void", "void", now, seq(now), source, source_ref, reason)
        )
    final = ledger.invoice(invoice_id)
    assert final is not None
    return final
