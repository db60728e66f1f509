"""Sending a due invoice revision to Stripe: customer -> invoice -> one item per line ->
finalize -> send, every request with an idempotency key derived from what it sends. Stripe
only (no ledger I/O): invoices are synced in threads, each invoice's requests in order."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.adapters.ledger import InvoiceView
from pipeline.adapters.stripe_gateway import StripeGateway, StripeSyncError
from pipeline.domain.invoice import Composition
from pipeline.domain.rating import Line, idempotency_key
from pipeline.domain.reference import Tenant


@dataclass(frozen=True)
class Synced:
    customer: str
    invoice: str  # Stripe invoice id ("" when it failed)
    items: dict[str, str]  # line key -> Stripe invoice item id
    error: StripeSyncError | None


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


def sync_invoice(
    stripe: StripeGateway,
    tenant: Tenant,
    view: InvoiceView,
    comp: Composition,
    customers: dict[str, str],
) -> Synced:
    """Customer -> invoice -> items -> finalize -> send, each with its idempotency key. A run
    that finds this revision's sync begun earlier (maybe past Stripe's 24-hour idempotency
    window) looks the invoice and its items up and creates only what is missing."""
    inv_id, p, cur = view.invoice_id, view.period, view.currency
    basis = (inv_id, view.revision, view.content_hash)
    customer = customers.get(tenant.id, "")
    try:
        if not customer:
            customer = stripe.ensure_customer(
                tenant.id, tenant.name, tenant.email, idempotency_key("customer", tenant.id)
            )
        found = stripe.find_invoice(customer, inv_id, view.revision) if view.sync_started else None
        have = stripe.items_of(found.id) if found is not None else {}
        inv = found or stripe.create_invoice(
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
            items[ln.line_key] = stripe.add_item(
                customer,
                inv.id,
                ln.amount_minor,
                cur,
                item_description(ln),
                {"tenant_id": tenant.id, "period": p, "line_id": line_id},
                item_key(inv_id, view.revision, ln),
            )
        if found is None or found.status == "draft":
            stripe.finalize(inv.id, idempotency_key("finalize", *basis))
        stripe.send_invoice(inv.id, idempotency_key("send", *basis))
    except StripeSyncError as exc:
        return Synced(customer, "", {}, exc)
    return Synced(customer, inv.id, items, None)


def sync_all(
    stripe: StripeGateway,
    invoices: Sequence[tuple[Tenant, InvoiceView, Composition]],
    customers: dict[str, str],
    threads: int = 1,
) -> list[Synced]:
    """:func:`sync_invoice` for each, ``threads`` invoices at a time, in the given order."""

    def one(invoice: tuple[Tenant, InvoiceView, Composition]) -> Synced:
        tenant, view, comp = invoice
        return sync_invoice(stripe, tenant, view, comp, customers)

    if threads > 1 and len(invoices) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(one, invoices))
    return [one(i) for i in invoices]
