"""What has been charged: rules over the lines of final documents (finalized, not void
invoices; closed chargebacks). The ledger adapters only read the lines; which of them charge a
period, what they bill per line and what prepaid credit they draw is decided here, with the
typed :class:`~pipeline.domain.line_key.LineKey` (no caller splits a key)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from pipeline.domain.adjustments import Billed
from pipeline.domain.line_key import LineKey


@dataclass(frozen=True, slots=True)
class ChargedLine:
    """A line of a final document."""

    tenant_id: str
    document_id: str  # the invoice (or chargeback) carrying it
    period: str  # the period of that document
    key: LineKey
    kind: str
    amount: Decimal
    amount_minor: int
    usage_us: int
    quantity: Fraction

    @property
    def charges(self) -> str:
        """The usage period this line charges: its document's, or the one it adjusts."""
        return self.key.adjusts or self.period


def charging(
    period: str, lines: Iterable[ChargedLine], excluding_period: str = ""
) -> list[ChargedLine]:
    """Every line charging ``period``: the own lines of its document and the adjustments for
    it on later ones (except those on ``excluding_period``'s document)."""
    return [ln for ln in lines if ln.charges == period and ln.period != excluding_period]


def billed(lines: Iterable[ChargedLine]) -> dict[str, Billed]:
    """Line key (in its own period) -> what ``lines`` charged for it, in total."""
    out: dict[str, Billed] = {}
    for ln in lines:
        was = out.get(ln.key.base, Billed(0, 0, Fraction(0)))
        out[ln.key.base] = Billed(
            was.amount_minor + ln.amount_minor,
            was.usage_us + ln.usage_us,
            was.quantity + ln.quantity,
        )
    return out


def carried_in(period: str, lines: Iterable[ChargedLine]) -> list[str]:
    """The periods whose documents carry adjustments for ``period``, in order."""
    return sorted({ln.period for ln in lines if ln.key.adjusts == period})


def credits_drawn(
    lines: Iterable[ChargedLine], excluding_document: str = "", excluding_ref: str = ""
) -> dict[str, Decimal]:
    """Prepaid credit id -> amount drawn by ``lines``: credit lines (except
    ``excluding_document``'s) and credit adjustments (except those for the period
    ``excluding_ref``)."""
    used: dict[str, Decimal] = defaultdict(Decimal)
    for ln in lines:
        credit_id = ln.key.credit_id
        if credit_id is None:
            continue
        if ln.key.is_adjustment:
            if ln.key.adjusts == excluding_ref:
                continue
        elif ln.document_id == excluding_document:
            continue
        used[credit_id] -= ln.amount
    return dict(used)
