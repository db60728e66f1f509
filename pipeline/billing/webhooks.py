"""Stripe webhook events applied to the invoice ledger (pure logic: the HTTP endpoint that
verifies the signature lives in :mod:`pipeline.api.app`).

* ``invoice.paid`` -> status ``paid``; ``invoice.payment_failed`` -> ``payment_failed``;
  ``invoice.voided`` -> the invoice is voided and a credit note issued
  (:meth:`Invoicer.void` with ``source="stripe_webhook"``: nothing is sent back to Stripe).
* Our invoice is found by the Stripe invoice id recorded when it was finalized, else by the
  ``invoice_id`` metadata we set on the Stripe invoice.
* Idempotent by Stripe event id: every processed event is recorded in
  ``stripe_webhook_events`` with its outcome, **after** it was applied; an event already
  recorded is a no-op (``duplicate``, not recorded again: the row keyed by the event id keeps
  the original outcome). A crash between applying and recording re-applies the
  event on Stripe's retry, which changes nothing: the status event's key
  (``stripe/<event id>``) is deterministic, and an event already applied is recognised by the
  ledger rows that carry its id.
* A transition the lifecycle does not allow (a payment for a void invoice) is recorded as
  ``ignored_transition`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.billing.invoicing import Invoicer
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.lifecycle import StatusEvent, allowed

SOURCE = "stripe_webhook"
VOID_REASON = "voided in Stripe"

# Stripe event type -> the status it moves our invoice to
STATUS_BY_TYPE: dict[str, str] = {
    "invoice.paid": "paid",
    "invoice.payment_failed": "payment_failed",
    "invoice.voided": "void",
}

APPLIED = "applied"
DUPLICATE = "duplicate"
IGNORED_UNKNOWN_INVOICE = "ignored_unknown_invoice"
IGNORED_TRANSITION = "ignored_transition"
IGNORED_TYPE = "ignored_type"


class NotYetFinalized(BillingError):
    """An event for an invoice whose finalization the ledger has not recorded yet."""

    def __init__(self, message: str) -> None:
        super().__init__(BillingErrorCode.INVOICE_NOT_FINALIZED, message)


def _seq(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _invoice_object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def find_invoice(ledger: Ledger, obj: dict[str, Any]) -> InvoiceView | None:
    """Our invoice for a Stripe invoice object: by the Stripe id recorded at finalization,
    else by the ``invoice_id`` metadata, unless that invoice is synced to another Stripe
    invoice (then it is not ours to change)."""
    stripe_id = str(obj.get("id") or "")
    if stripe_id:
        found = ledger.by_stripe_id(stripe_id)
        if found is not None:
            return found
    metadata = obj.get("metadata")
    ours = metadata.get("invoice_id") if isinstance(metadata, dict) else None
    if not ours:
        return None
    view = ledger.invoice(str(ours))
    if view is None or (view.stripe_invoice_id and view.stripe_invoice_id != stripe_id):
        return None
    return view


def _already_applied(ledger: Ledger, view: InvoiceView, event_id: str) -> bool:
    """Whether the ledger already holds a status event written for this Stripe event (the
    event was applied, then the process stopped before recording it)."""
    events = ledger.events_for([view.invoice_id]).get(view.invoice_id, [])
    return any(e.source == SOURCE and e.source_ref == event_id for e in events)


def apply_stripe_event(
    event: dict[str, Any],
    ledger: Ledger,
    invoicer: Invoicer,
    clock: Callable[[], datetime],
) -> str:
    """Apply one verified Stripe event to the ledger; returns the outcome (see module doc).

    Raises :class:`BillingError` ``billing.webhook_event_invalid`` for an event without an id
    or type, :class:`NotYetFinalized` for an invoice whose finalization is not recorded yet.
    Errors of the ledger propagate (the endpoint answers 5xx and Stripe retries; nothing was
    recorded)."""
    event_id = str(event.get("id") or "")
    event_type = str(event.get("type") or "")
    if not event_id or not event_type:
        raise BillingError(
            BillingErrorCode.WEBHOOK_EVENT_INVALID, "Stripe event without an id or a type"
        )
    if ledger.webhook_seen(event_id):
        return DUPLICATE
    obj = _invoice_object(event)
    stripe_invoice_id = (
        str(obj.get("id") or "") if obj.get("object", "invoice") == "invoice" else ""
    )
    view: InvoiceView | None = None
    new_status = STATUS_BY_TYPE.get(event_type)
    if new_status is None:
        outcome = IGNORED_TYPE
    else:
        view = find_invoice(ledger, obj)
        if view is None:
            outcome = IGNORED_UNKNOWN_INVOICE
        elif view.status == "draft":
            # Stripe knows the invoice as finalized but our run has not recorded it yet (it
            # crashed between Stripe's finalize and the ledger): refuse, so Stripe retries the
            # event after the next billing run has completed the finalization.
            raise NotYetFinalized(
                f"invoice {view.invoice_id} is not finalized in the ledger yet; rerun "
                f"`gpumeter bill --period {view.period}` (Stripe will retry this event)"
            )
        elif _already_applied(ledger, view, event_id):
            outcome = APPLIED
        elif not allowed(view.status, new_status):
            outcome = IGNORED_TRANSITION
        else:
            outcome = _apply(event_id, event_type, new_status, view, ledger, invoicer, clock)
    ledger.save_webhook(
        {
            "event_id": event_id,
            "type": event_type,
            "stripe_invoice_id": stripe_invoice_id,
            "invoice_id": view.invoice_id if view is not None else "",
            "received_at": clock(),
            "outcome": outcome,
        }
    )
    return outcome


def _apply(
    event_id: str,
    event_type: str,
    new_status: str,
    view: InvoiceView,
    ledger: Ledger,
    invoicer: Invoicer,
    clock: Callable[[], datetime],
) -> str:
    if new_status == "void":
        try:
            invoicer.void(view.invoice_id, reason=VOID_REASON, source=SOURCE, source_ref=event_id)
        except BillingError as exc:  # its status changed since we read it
            if exc.code == BillingErrorCode.INVALID_TRANSITION:
                return IGNORED_TRANSITION
            raise
        return APPLIED
    at = clock()
    ledger.append_event(
        view,
        StatusEvent(
            key=f"stripe/{event_id}",
            status=new_status,
            at=at,
            seq=_seq(at),
            source=SOURCE,
            source_ref=event_id,
            detail=event_type,
        ),
    )
    return APPLIED
