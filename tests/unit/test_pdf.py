"""The invoice PDF: rendered, then read back with pypdf and checked for what a customer reads."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from pipeline.billing.pdf import _latin1, _num, render_pdf
from pipeline.domain.documents import DocumentLine, InvoiceDocument, Party, TaxLine

pytestmark = pytest.mark.unit

INVOICE_ID = "INV-2024-05-acme-0001"
LONG_DESCRIPTION = (
    "GPU usage on the shared training cluster, H100 80GB SXM nodes in eu-west, including "
    "interactive notebooks, batch fine-tuning jobs and the evaluation sweeps scheduled by "
    "the research platform team for the quarter"
)


def _line(
    key: str,
    kind: Any,
    description: str,
    quantity: str,
    unit: str,
    price: str,
    amount: str,
    period_ref: str = "2024-05",
) -> DocumentLine:
    return DocumentLine(
        line_id=f"{INVOICE_ID}/{key}",
        kind=kind,
        description=description,
        quantity=Decimal(quantity),
        unit=unit,
        unit_price=Decimal(price),
        amount=Decimal(amount),
        period_ref=period_ref,
    )


LINES = [
    _line("u1", "usage", LONG_DESCRIPTION, "1234.567891", "GPU-h", "2.50", "3086.42"),
    _line(
        "u2",
        "usage",
        "A100 40GB \u00d7 8 \u2013 inference",
        "123.456789",
        "GPU-h",
        "1.75",
        "216.05",
    ),
    _line("u3", "usage", "L4 GPU-hours", "10.000000", "GPU-h", "0.40", "4.00"),
    _line(
        "adj",
        "adjustment",
        "Correction of April usage (late events)",
        "1",
        "",
        "57.31",
        "57.31",
        period_ref="2024-04",
    ),
    _line("disc", "discount", "Committed-use discount 5%", "1", "", "-168.17", "-168.17"),
    _line("cred", "credit", "Promotional credit", "1", "", "-100.00", "-100.00"),
]
# The usage+adjustment+discount lines sum to the subtotal, the credit line to the credits.
SUBTOTAL, CREDITS, TOTAL = Decimal("3195.61"), Decimal("-100.00"), Decimal("3095.61")


def make_doc(**overrides: Any) -> InvoiceDocument:
    fields: dict[str, Any] = {
        "invoice_id": INVOICE_ID,
        "status": "finalized",
        "seller": Party(
            id="seller",
            name="GPU Cloud GmbH",
            address=["Friedrichstra\u00dfe 1", "10117 Berlin", "Germany"],
            tax_id="DE123456789",
            email="billing@gpucloud.example",
        ),
        "customer": Party(
            id="cust-acme",
            name="Acme Robotics B.V.",
            email="ap@acme.example",
            address=["Keizersgracht 100", "1015 AA Amsterdam", "Netherlands"],
            tax_id="NL000099998B57",
        ),
        "period": "2024-05",
        "period_start": datetime(2024, 5, 1, tzinfo=UTC),
        "period_end": datetime(2024, 6, 1, tzinfo=UTC),
        "issued_at": datetime(2024, 6, 3, 9, 30, tzinfo=UTC),
        "due_at": datetime(2024, 7, 3, tzinfo=UTC),
        "currency": "EUR",
        "lines": LINES,
        "subtotal": SUBTOTAL,
        "credits": CREDITS,
        "tax": TaxLine(),
        "total": TOTAL,
        "stripe_invoice_id": "in_1PabcXYZ",
        "notes": ["Payment by SEPA transfer within 30 days \u2013 thank you."],
    }
    fields.update(overrides)
    return InvoiceDocument(**fields)


def read_pdf(data: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(data))
    text = "\n".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), " ".join(text.split())  # wrapping/cell breaks become spaces


def test_invoice_contains_what_the_customer_reads() -> None:
    data = render_pdf(make_doc())
    assert data.startswith(b"%PDF")
    pages, text = read_pdf(data)
    assert pages == 1
    assert "INVOICE" in text and "CREDIT NOTE" not in text and "DRAFT" not in text
    for expected in (
        INVOICE_ID,
        "Finalized",
        "GPU Cloud GmbH",
        "Friedrichstra\u00dfe 1",  # latin-1 survives as is
        "DE123456789",
        "Acme Robotics B.V.",
        "cust-acme",
        "ap@acme.example",
        "Keizersgracht 100",
        "Issue date 2024-06-03",
        "Due date 2024-07-03",
        "2024-05 (2024-05-01 to 2024-05-31)",  # period end is exclusive: last day is the 31st
        "2024-04",  # the adjustment's own period
        "1,234.567891 GPU-h",
        "123.456789 GPU-h",
        "Subtotal 3,195.61",
        "Credits applied -100.00",
        "Tax (not calculated: placeholder) @ 0% 0.00",  # placeholder Decimal(0) padded
        "Total (EUR) 3,095.61",
        "Payment reference (Stripe): in_1PabcXYZ",
        "within 30 days - thank you.",
        "Page 1 of 1",
    ):
        assert expected in text, expected
    for line in LINES:
        assert _num(line.amount) in text, line.line_id
    for amount in ("3,086.42", "216.05", "4.00", "57.31", "-168.17", "-100.00"):
        assert amount in text
    # The long description wraps inside its column instead of overflowing the page.
    assert "evaluation sweeps scheduled by" in text and "for the quarter" in text


def test_non_latin1_text_is_folded_not_fatal() -> None:
    _, text = read_pdf(render_pdf(make_doc()))
    assert "A100 40GB \u00d7 8 - inference" in text  # "x" sign is latin-1; the en dash is not
    assert (
        _latin1("a \u2013 b \u2014 c \u201cq\u201d \u20ac5 \u0142 \u0101")
        == 'a - b - c "q" EUR5 ? a'
    )
    assert _latin1("x\x85y\u200bz") == "xyz"  # C1 controls would be WinAnsi glyphs: dropped
    assert _latin1("one\ntwo\tthree") == "one two three"
    assert _latin1("one\ntwo", multiline=True) == "one\ntwo"


def test_number_formatting() -> None:
    assert _num(Decimal("1234567.891")) == "1,234,567.891"
    assert _num(Decimal("-0.00")) == "0.00"
    assert _num(Decimal("5")) == "5"
    assert _num(Decimal("-1234.5")) == "-1,234.5"
    assert _num(Decimal(0), 2) == "0.00" and _num(Decimal("1.234"), 2) == "1.234"


def test_credit_note_names_the_invoice_it_credits() -> None:
    doc = make_doc(
        kind="credit_note",
        invoice_id="CN-2024-06-acme-0001",
        credits_invoice_id=INVOICE_ID,
        lines=[_line("cn", "adjustment", "Refund of May overbilling", "1", "", "-57.31", "-57.31")],
        subtotal=Decimal("-57.31"),
        credits=Decimal("0.00"),
        total=Decimal("-57.31"),
    )
    _, text = read_pdf(render_pdf(doc))
    assert "CREDIT NOTE" in text
    assert f"Credits invoice {INVOICE_ID}" in text
    assert "Credit note number CN-2024-06-acme-0001" in text
    assert "Total (EUR) -57.31" in text
    assert "Credits applied 0.00" in text


@pytest.mark.parametrize("status", ["draft", "void"])
def test_draft_and_void_are_marked(status: str) -> None:
    _, text = read_pdf(render_pdf(make_doc(status=status, due_at=None)))
    assert status.upper() in text
    assert "Due date n/a" in text


def test_many_lines_break_pages_and_keep_every_amount() -> None:
    lines = [
        _line(
            f"u{i}",
            "usage",
            f"Cluster {i} " + "GPU usage " * (i % 7),
            f"{i}.5",
            "GPU-h",
            "2.00",
            f"{1000 * i + i / 100:.2f}",
        )
        for i in range(1, 61)
    ]
    total = sum((line.amount for line in lines), Decimal(0))
    doc = make_doc(lines=lines, subtotal=total, credits=Decimal("0.00"), total=total)
    pages, text = read_pdf(render_pdf(doc))
    assert pages > 1
    assert f"Page 1 of {pages}" in text and f"Page {pages} of {pages}" in text
    assert text.count("Unit price (EUR)") >= 2  # the table headings repeat after a break
    for line in lines:
        assert f" {_num(line.amount)}" in text, line.line_id
    assert f"Total (EUR) {_num(total)}" in text


def test_same_document_same_bytes() -> None:
    doc = make_doc()
    first = render_pdf(doc)
    assert render_pdf(doc) == first
    assert render_pdf(InvoiceDocument.model_validate(doc.model_dump())) == first
    assert render_pdf(make_doc(status="draft")) != first
    info = PdfReader(io.BytesIO(first)).metadata
    assert info is not None
    assert info.title == INVOICE_ID and info.author == "GPU Cloud GmbH"
    assert info.creation_date == datetime(2024, 6, 3, 9, 30, tzinfo=UTC)
