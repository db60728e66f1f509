"""Render an :class:`~pipeline.domain.documents.InvoiceDocument` as the PDF a customer receives.

Pure Python (fpdf2, imported lazily so the rest of the pipeline does not need it) with the
built-in Helvetica font only: every string is first folded to latin-1, so an en dash or a
smart quote in a description becomes its ASCII equivalent instead of an encoding error.
The bytes are deterministic for a given document (and fpdf2 version): the creation date is
the issue date and the metadata is fixed, so re-rendering an invoice reproduces the file.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pipeline.domain.documents import InvoiceDocument, Party

FONT = "Helvetica"
# Characters outside latin-1 that have a better fallback than the NFKD decomposition or "?".
_FALLBACKS = str.maketrans(
    {
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201a": "'",
        "\u201b": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2022": "*",
        "\u2026": "...", "\u2030": " per mille", "\u20ac": "EUR", "\u2122": "TM",
        "\u2190": "<-", "\u2192": "->", "\u2194": "<->", "\u21d2": "=>", "\u2248": "~",
        "\u2260": "!=", "\u2264": "<=", "\u2265": ">=", "\u2217": "*", "\u22c5": "*",
        "\t": " ", "\r": "",
    }
)  # fmt: skip
_COLUMNS = ("Description", "Period", "Quantity", "Unit price", "Amount")
_COL_WIDTHS = (64, 18, 40, 26, 32)  # mm of the 180 mm text width on A4 with 15 mm margins
_STATUS = {"payment_failed": "Payment failed"}


def _latin1(text: str, *, multiline: bool = False) -> str:
    """Fold ``text`` into what the core fonts can show (latin-1 minus control characters)."""
    out: list[str] = []
    for ch in text.translate(_FALLBACKS):
        if ch == "\n" or " " <= ch <= "~" or "\xa0" <= ch <= "\xff":
            out.append(ch)
            continue
        folded = "".join(
            c
            for c in unicodedata.normalize("NFKD", ch)
            if (" " <= c <= "~" or "\xa0" <= c <= "\xff") and not unicodedata.combining(c)
        )
        # Control and format characters (zero-width space...) are dropped: fpdf2 writes latin-1
        # bytes into a WinAnsi font, where the C1 controls 0x80-0x9f are other glyphs.
        out.append(folded or ("" if unicodedata.category(ch) in ("Cc", "Cf") else "?"))
    result = "".join(out)
    return result if multiline else " ".join(result.split())


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _num(value: Decimal, min_places: int = 0) -> str:
    """``1234.5`` -> ``"1,234.5"``: thousands separators and exactly the decimals it carries
    (or ``min_places``, so a placeholder ``Decimal(0)`` tax reads ``0.00`` next to ``12.34``)."""
    places = max(_places(value), min_places)
    if value.is_zero():
        value = value.copy_abs()  # never print "-0.00"
    return f"{value:,.{places}f}"


def _quantity(quantity: Decimal, unit: str) -> str:
    if not unit and quantity == quantity.to_integral_value():
        return _num(quantity.quantize(Decimal(1)))  # a fixed line: just "1"
    return f"{_num(quantity)} {unit}".strip()


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _party_lines(party: Party, *, customer: bool) -> list[str]:
    lines = [party.name]
    if customer:
        lines.append(f"Customer ID: {party.id}")
    lines.extend(party.address)
    if party.email:
        lines.append(party.email)
    if party.tax_id:
        lines.append(f"Tax ID: {party.tax_id}")
    return lines


def render_pdf(doc: InvoiceDocument) -> bytes:
    """Render ``doc`` (an invoice or a credit note) as PDF bytes, identical for equal inputs."""
    try:
        from fpdf import FPDF
        from fpdf.fonts import FontFace
    except ImportError as exc:
        raise RuntimeError("PDF invoices need fpdf2: pip install fpdf2") from exc

    credit_note = doc.kind == "credit_note"
    title = "CREDIT NOTE" if credit_note else "INVOICE"
    marker = doc.status.upper() if doc.status in ("draft", "void") else ""
    page_label = _latin1(f"{title.title()} {doc.invoice_id}")

    class _InvoicePDF(FPDF):
        def header(self) -> None:
            if not marker:
                return
            with self.local_context(text_color=(235, 200, 200)):  # a watermark on every page
                self.set_font(FONT, "B", 110)
                with self.rotation(45, self.w / 2, self.h / 2):
                    self.text(self.w / 2 - self.get_string_width(marker) / 2, self.h / 2, marker)

        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(FONT, "", 8)
            self.set_text_color(110)
            text = f"{page_label}  -  Page {self.page_no()} of {{nb}}"
            self.cell(0, 5, text, align="C")

    pdf = _InvoicePDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(auto=True, margin=18)
    issued = doc.issued_at if doc.issued_at.tzinfo else doc.issued_at.replace(tzinfo=UTC)
    pdf.set_creation_date(issued)  # not "now": same document, same bytes
    pdf.set_title(doc.invoice_id)
    pdf.set_author(doc.seller.name)
    pdf.set_subject(f"{title.title()} {doc.invoice_id} for {doc.customer.name}, {doc.period}")
    pdf.add_page()
    half = pdf.epw / 2

    # Title, draft/void marker and the reference a credit note corrects.
    pdf.set_font(FONT, "B", 22)
    pdf.cell(half, 10, title)
    if marker:
        pdf.set_font(FONT, "B", 16)
        box = pdf.get_string_width(marker) + 8
        pdf.set_x(pdf.l_margin + pdf.epw - box)
        with pdf.local_context(text_color=(200, 0, 0), draw_color=(200, 0, 0), line_width=0.6):
            pdf.cell(box, 10, marker, border=1, align="C")
    pdf.ln(11)
    if credit_note:
        pdf.set_font(FONT, "", 11)
        pdf.cell(0, 6, _latin1(f"Credits invoice {doc.credits_invoice_id or '(unknown)'}"))
        pdf.ln(7)
    pdf.ln(3)

    # Seller on the left, the document's facts on the right, then the customer.
    top = pdf.get_y()
    pdf.set_font(FONT, "B", 9)
    pdf.cell(half - 5, 5, "From", new_x="LEFT", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    for text in _party_lines(doc.seller, customer=False):
        pdf.multi_cell(half - 5, 4.5, _latin1(text), new_x="LEFT", new_y="NEXT")
    left_bottom = pdf.get_y()
    last_day = doc.period_end - timedelta(days=1)  # period_end is exclusive
    facts = [
        ("Credit note number" if credit_note else "Invoice number", doc.invoice_id),
        ("Status", _STATUS.get(doc.status, doc.status.capitalize())),
        ("Issue date", _day(doc.issued_at)),
        ("Due date", _day(doc.due_at) if doc.due_at else "n/a"),
        ("Usage period", f"{doc.period} ({_day(doc.period_start)} to {_day(last_day)})"),
    ]
    if credit_note:
        facts.insert(1, ("Credits invoice", doc.credits_invoice_id or "(unknown)"))
    pdf.set_xy(pdf.l_margin + half, top)
    for label, value in facts:
        pdf.set_font(FONT, "B", 9)
        pdf.cell(36, 5, label, new_x="RIGHT", new_y="TOP")
        pdf.set_font(FONT, "", 9)
        pdf.multi_cell(half - 36, 5, _latin1(value), new_x="LMARGIN", new_y="NEXT")
        pdf.set_x(pdf.l_margin + half)
    pdf.set_xy(pdf.l_margin, max(left_bottom, pdf.get_y()) + 5)
    pdf.set_font(FONT, "B", 9)
    pdf.cell(0, 5, "Bill to", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    for text in _party_lines(doc.customer, customer=True):
        pdf.multi_cell(half - 5, 4.5, _latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)

    # The lines, in the order the document gives them; headings repeat after a page break.
    currency = _latin1(doc.currency)
    headings = [*_COLUMNS[:3], f"Unit price ({currency})", f"Amount ({currency})"]
    pdf.set_font(FONT, "", 8.5)
    with pdf.table(
        col_widths=_COL_WIDTHS,
        text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
        borders_layout="HORIZONTAL_LINES",
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        line_height=4.5,
        padding=(1, 1.5),
        repeat_headings=1,
    ) as table:
        table.row(headings)
        for line in doc.lines:
            table.row(
                [
                    _latin1(line.description, multiline=True),
                    _latin1(line.period_ref),
                    _latin1(_quantity(line.quantity, line.unit)),
                    _num(line.unit_price),
                    _num(line.amount),
                ]
            )
    pdf.ln(4)

    # Totals, kept together on one page.
    tax = doc.tax
    totals = [
        ("Subtotal", doc.subtotal),
        ("Credits applied", doc.credits),
        (f"{tax.label} @ {_num(tax.rate_pct)}%", tax.amount),
    ]
    if pdf.will_page_break(30):
        pdf.add_page()
    pdf.set_font(FONT, "", 9.5)
    with pdf.table(
        width=110,
        col_widths=(75, 35),
        align="RIGHT",
        text_align=("RIGHT", "RIGHT"),
        borders_layout="NONE",
        first_row_as_headings=False,
        line_height=5,
        padding=(0.8, 1.5),
    ) as table:
        for label, amount in totals:
            table.row([_latin1(label), _num(amount, _places(doc.total))])
        total_style = FontFace(emphasis="BOLD", size_pt=11, fill_color=(235, 235, 235))
        table.row([f"Total ({currency})", _num(doc.total)], style=total_style)

    # Payment reference and notes, small print.
    small_print = list(doc.notes)
    if doc.stripe_invoice_id:
        small_print.insert(0, f"Payment reference (Stripe): {doc.stripe_invoice_id}")
    if small_print:
        pdf.ln(8)
        pdf.set_font(FONT, "", 8)
        pdf.set_text_color(80)
        for text in small_print:
            pdf.multi_cell(0, 4, _latin1(text, multiline=True), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
