"""Invoice arithmetic for one tenant and period: usage lines -> discount -> minimum true-up
-> adjustments -> prepaid credits -> total. Pure; the billing run does the I/O.

Order, and why:

1. **Usage** lines from the rate card (each rounded once).
2. **Discount**: the contract's percentage off the usage subtotal (one line, rounded once).
3. **Minimum commitment**: if usage after discount falls short of the commitment, a true-up
   line brings it up to the commitment (exact: both sides are whole minor units).
4. **Adjustments**: late usage of earlier, already invoiced periods (their own lines,
   referencing the period they belong to).
5. **Credits**: prepaid credits pay for this period's charges (usage after discount, and the
   true-up, dated at the period's last instant), each only for charges incurred while it is
   valid, soonest expiry first; never more than those charges. Adjustments are not paid
   from credits (they belong to an earlier period's terms).
6. **Tax**: a placeholder at 0 (tax is out of scope; the line is on every document).

Total = sum of all lines. Nothing is rounded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from pipeline.domain.charges import credits as credit_model
from pipeline.domain.charges import discount, minimum
from pipeline.domain.contracts import Contract
from pipeline.domain.money import round_money
from pipeline.domain.period import Period
from pipeline.domain.rating import Line, RatedUsage, fixed_line


@dataclass(frozen=True)
class Composition:
    lines: list[Line]
    drawdowns: list[credit_model.Drawdown]

    def total_of(self, *kinds: str) -> Decimal:
        return sum((ln.amount for ln in self.lines if ln.kind in kinds), Decimal(0))

    @property
    def total(self) -> Decimal:
        return sum((ln.amount for ln in self.lines), Decimal(0))

    @property
    def credits(self) -> Decimal:
        return self.total_of("credit")

    @property
    def subtotal(self) -> Decimal:
        return self.total - self.credits


def compose(
    period: Period,
    usage: RatedUsage,
    contract: Contract,
    currency: str,
    adjustments: list[Line] | None = None,
    credits_used: dict[str, Decimal] | None = None,
) -> Composition:
    lines = list(usage.lines)
    usage_total = usage.subtotal

    # 2. discount
    pct = contract.discount_pct
    disc = discount.apply("Contract discount", usage_total, pct, currency)
    lines += [fixed_line("discount", "discount", c.label, c.amount, currency) for c in disc]
    after_discount = usage_total + sum((c.amount for c in disc), Decimal(0))

    # 3. minimum commitment
    trued: Decimal = Decimal(0)
    if contract.minimum_commitment is not None:
        commitment = round_money(contract.minimum_commitment, currency)
        for c in minimum.true_up(after_discount, commitment):
            lines.append(fixed_line("minimum", "minimum", c.label, c.amount, currency))
            trued += c.amount

    # 4. adjustments of earlier periods
    lines += adjustments or []

    # 5. prepaid credits, drawn against this period's charges in time order
    drawdowns: list[credit_model.Drawdown] = []
    if contract.credits:
        keep = 1 - Fraction(pct) / 100
        charges = [
            (datetime.fromtimestamp(h, UTC), amount * keep)
            for h, amount in sorted(usage.hourly.items())
            if amount
        ]
        if trued:
            charges.append((period.end - timedelta(microseconds=1), Fraction(trued)))
        drawdowns = credit_model.draw(charges, contract.credits, currency, credits_used)
        cap = after_discount + trued  # credits never pay more than this period's charges
        for d in drawdowns:
            paid = min(d.used, cap)
            cap -= paid
            if paid > 0:
                lines.append(
                    fixed_line(
                        f"credit/{d.credit_id}",
                        "credit",
                        f"Prepaid credit {d.credit_id} applied "
                        f"(remaining {d.remaining + d.used - paid} {currency})",
                        -paid,
                        currency,
                    )
                )
        drawdowns = [
            credit_model.Drawdown(d.credit_id, -ln.amount, d.remaining + d.used + ln.amount)
            for d in drawdowns
            for ln in lines
            if ln.line_key == f"credit/{d.credit_id}"
        ]
    return Composition(lines, drawdowns)
