"""Invoice and credit-note documents from the ledger, and the files finance reads:
``out/<period>/invoices/<invoice id>.json|.pdf`` and ``invoices.csv``."""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.config import Config
from pipeline.domain.documents import DocumentLine, InvoiceDocument, Party, TaxLine
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period


def customer_party(config: Config, tenant_id: str) -> Party:
    t = config.reference.tenants.get(tenant_id)
    if t is None:
        return Party(id=tenant_id, name=tenant_id)
    return Party(id=t.id, name=t.name, email=t.email)


# the order lines appear on a document: usage, then what changes it
KIND_ORDER = {"usage": 0, "adjustment": 1, "discount": 2, "minimum": 3, "credit": 4, "tax": 5}


def build_document(
    config: Config, view: InvoiceView, lines: list[dict[str, Any]]
) -> InvoiceDocument:
    period = Period.parse(view.period)
    cur = view.currency
    lines = sorted(lines, key=lambda ln: (KIND_ORDER.get(ln["kind"], 9), ln["line_key"]))
    doc_lines = [
        DocumentLine(
            line_id=ln["line_id"],
            kind=ln["kind"],
            description=ln["description"],
            quantity=Decimal(ln["quantity"]),
            unit=ln["unit"],
            unit_price=Decimal(ln["unit_price"]),
            amount=from_minor(ln["amount_minor"], cur),
            period_ref=ln["period_ref"] or view.period,
        )
        for ln in lines
    ]
    notes = []
    if not lines:
        notes.append("No GPU usage in this period; issued as a zero invoice under the contract.")
    if any(ln["kind"] == "adjustment" for ln in lines):
        notes.append(
            "Adjustment lines charge usage of an earlier period that reached us after that "
            "period was invoiced; the earlier invoice is unchanged."
        )
    notes.append(
        "GPU-hours are allocated GPUs x wall time; a MIG instance counts as its fraction of "
        "the GPU. Amounts are rounded half up to the cent once per line."
    )
    return InvoiceDocument(
        invoice_id=view.invoice_id,
        status=view.status,  # type: ignore[arg-type]
        seller=config.seller,
        customer=customer_party(config, view.tenant_id),
        period=view.period,
        period_start=period.start,
        period_end=period.end,
        issued_at=view.issued_at,
        due_at=view.due_at,
        currency=cur,
        lines=doc_lines,
        subtotal=from_minor(view.subtotal_minor, cur),
        credits=from_minor(view.credits_minor, cur),
        tax=TaxLine(amount=from_minor(view.tax_minor, cur)),
        total=from_minor(view.total_minor, cur),
        stripe_invoice_id=view.stripe_invoice_id,
        notes=notes,
    )


def credit_note(doc: InvoiceDocument, note_id: str, at: datetime, reason: str) -> InvoiceDocument:
    """A credit note cancelling ``doc`` in full: the same lines, negated."""
    return doc.model_copy(
        update={
            "kind": "credit_note",
            "invoice_id": note_id,
            "credits_invoice_id": doc.invoice_id,
            "status": "finalized",
            "issued_at": at,
            "due_at": None,
            "lines": [
                ln.model_copy(update={"amount": -ln.amount, "line_id": f"{note_id}/{ln.line_id}"})
                for ln in doc.lines
            ],
            "subtotal": -doc.subtotal,
            "credits": -doc.credits,
            "total": -doc.total,
            "notes": [f"Cancels invoice {doc.invoice_id} in full. Reason: {reason}"],
        }
    )


def load_document(config: Config, ledger: Ledger, invoice_id: str) -> InvoiceDocument | None:
    view = ledger.invoice(invoice_id)
    if view is None:
        return None
    return build_document(config, view, ledger.lines(view.invoice_id, view.revision))


def _render(doc: InvoiceDocument) -> bytes:
    from pipeline.billing.pdf import render_pdf

    return render_pdf(doc)


def write_document(
    folder: Path, doc: InvoiceDocument, pdf: bytes | None = None
) -> tuple[Path, Path]:
    """Write ``<id>.json`` and ``<id>.pdf`` (rendered here unless given); returns their
    paths."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / f"{doc.invoice_id}.json"
    pdf_path = folder / f"{doc.invoice_id}.pdf"
    js.write_text(doc.model_dump_json(indent=2))
    pdf_path.write_bytes(_render(doc) if pdf is None else pdf)
    return js, pdf_path


def write_documents(docs: list[tuple[Path, InvoiceDocument]], parallel_from: int = 16) -> None:
    """Write many documents; PDFs are rendered in worker processes (CPU-bound, pure Python)
    when there are at least ``parallel_from`` of them."""
    if len(docs) < parallel_from:
        for folder, doc in docs:
            write_document(folder, doc)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding connections
    workers = min(os.cpu_count() or 1, 8)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pdfs = pool.map(_render, [doc for _, doc in docs], chunksize=8)
        for (folder, doc), pdf in zip(docs, pdfs, strict=True):
            write_document(folder, doc, pdf)


CSV_HEADER = [
    "invoice_id",
    "period",
    "tenant_id",
    "customer",
    "status",
    "issued_at",
    "due_at",
    "currency",
    "subtotal",
    "credits",
    "tax",
    "total",
    "stripe_invoice_id",
]


def invoices_csv(config: Config, views: list[InvoiceView]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_HEADER)
    for v in views:
        w.writerow(
            [
                v.invoice_id,
                v.period,
                v.tenant_id,
                customer_party(config, v.tenant_id).name,
                v.status,
                v.issued_at.date().isoformat(),
                v.due_at.date().isoformat(),
                v.currency,
                from_minor(v.subtotal_minor, v.currency),
                from_minor(v.credits_minor, v.currency),
                from_minor(v.tax_minor, v.currency),
                from_minor(v.total_minor, v.currency),
                v.stripe_invoice_id,
            ]
        )
    return buf.getvalue()


def fraction_text(q: Fraction) -> str:
    return f"{q.numerator}/{q.denominator}"


class DocumentQueue:
    """The documents a billing run writes (JSON + PDF per invoice): queued while it runs,
    rendered at its end (in parallel). A finalized invoice's documents are derived from the
    ledger, so one missing on disk is queued again by the next run."""

    def __init__(self, config: Config, ledger: Ledger, out_root: Path) -> None:
        self.config = config
        self.ledger = ledger
        self.out_root = out_root
        self.queued: list[tuple[Path, InvoiceDocument]] = []

    def folder(self, period: str) -> Path:
        return self.out_root / period / "invoices"

    def queue(self, view: InvoiceView, lines: list[dict[str, Any]] | None = None) -> None:
        """``lines`` as the ledger holds them (read from it when not given)."""
        if lines is None:
            lines = self.ledger.lines(view.invoice_id, view.revision)
        self.queued.append((self.folder(view.period), build_document(self.config, view, lines)))

    def ensure(self, view: InvoiceView) -> None:
        """Queue a finalized invoice's documents again if its PDF is missing."""
        if not (self.folder(view.period) / f"{view.invoice_id}.pdf").exists():
            self.queue(view)

    def write(self) -> None:
        write_documents(self.queued)
        self.queued.clear()
