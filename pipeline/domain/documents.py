"""The invoice and credit-note documents finance and customers read (JSON, PDF, API).

A document is a frozen snapshot of what was billed: it is rendered from the ledger and never
edited after its invoice is finalized (a correction is a credit note or an adjustment on a
later invoice). Amounts are Decimal strings in the document's currency, already rounded once
at the line (see :mod:`pipeline.domain.money`); totals are sums of lines.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LineKind = Literal["usage", "discount", "minimum", "credit", "adjustment", "tax"]
DocumentKind = Literal["invoice", "credit_note"]
Status = Literal["draft", "finalized", "paid", "payment_failed", "void"]


class Party(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    email: str | None = None
    address: list[str] = Field(default_factory=list)
    tax_id: str | None = None


class DocumentLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_id: str  # "<invoice id>/<line key>", what `gpumeter invoices trace` takes
    kind: LineKind
    description: str
    quantity: Decimal  # GPU-hours (6 decimals, display) or 1 for a fixed line
    unit: str  # "GPU-h" or "" for a fixed line
    unit_price: Decimal
    amount: Decimal  # rounded once, to the minor unit
    period_ref: str  # the usage period the line belongs to (differs for adjustments)


class TaxLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = "Tax (not calculated: placeholder)"
    rate_pct: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)


class InvoiceDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: DocumentKind = "invoice"
    invoice_id: str  # for a credit note: its own number; ``credits_invoice_id`` points back
    credits_invoice_id: str | None = None
    status: Status
    seller: Party
    customer: Party
    period: str  # YYYY-MM, the usage period
    period_start: datetime
    period_end: datetime  # exclusive
    issued_at: datetime  # invoice date (may be days after the usage period ends)
    due_at: datetime | None = None
    currency: str
    lines: list[DocumentLine]
    subtotal: Decimal  # usage + minimum true-up + adjustments + discounts (before credits)
    credits: Decimal  # negative or zero
    tax: TaxLine = Field(default_factory=TaxLine)
    total: Decimal
    stripe_invoice_id: str = ""
    notes: list[str] = Field(default_factory=list)
