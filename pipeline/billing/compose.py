"""Composing an external tenant's invoice for a period, late usage of its closed periods
included (:mod:`pipeline.domain.invoice`, :mod:`pipeline.domain.adjustments`).

A closed period (one with a finalized invoice) is composed again only when its usage changed
since it was last rated: its usage fingerprint differs from its rating mark (see
``docs/billing.md``, *Rating marks*). Its adjustment lines on the new invoice are what it
comes to now minus what was charged for it so far; the periods they settle are marked once that
invoice is final, and a period composed again to no difference is marked at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.adjustments import Billed, adjustment_lines
from pipeline.domain.charged import billed, carried_in, charging, credits_drawn
from pipeline.domain.fingerprint import EMPTY, RatingMark, usage_fingerprint
from pipeline.domain.invoice import Composition, compose
from pipeline.domain.lifecycle import current_of
from pipeline.domain.line_key import LineKey
from pipeline.domain.period import Period
from pipeline.domain.rating import Line, UsageRow, rate_usage
from pipeline.domain.reference import Tenant


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


def _merge(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, Decimal(0)) + v
    return out


class Composer:
    def __init__(self, config: Config, store: Store, ledger: Ledger, marks: RatingMarks) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.marks = marks
        self.settled: list[RatingMark] = []  # found settled: the invoicer writes them

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

    def compose(
        self, tenant: Tenant, period: Period, rows: list[UsageRow], known: Known
    ) -> tuple[Composition, list[RatingMark]]:
        """The period's composition, and the closed periods its adjustment lines settle."""
        contract = self.config.contract(tenant.id)
        card = self.config.card_for(tenant.id)
        rated = rate_usage(rows, card, self.config.reference.catalog, contract.tier_of)
        adjustments, drawn, settles = self.adjustments(tenant, known, str(period))
        used: dict[str, Decimal] = {}
        if contract.credits:
            charged = self.ledger.charged_lines(tenant.id, before=str(period))
            used = _merge(credits_drawn(charged), drawn)
        return compose(period, rated, contract, card.currency, adjustments, used), settles

    def adjustments(
        self, tenant: Tenant, known: Known, period: str
    ) -> tuple[list[Line], dict[str, Decimal], list[RatingMark]]:
        """Late usage of the tenant's already-invoiced earlier periods, as lines for this one,
        the prepaid credit those lines draw (so this period cannot draw it again), and the
        periods those lines settle.

        Only a closed period whose usage changed since it was last rated is composed again,
        so a run's cost does not grow with the tenant's history. It is composed with the
        credit balances left by every other invoice (earlier and later ones: a credit is never
        drawn past its balance)."""
        card = self.config.card_for(tenant.id)
        out: list[Line] = []
        drawn: dict[str, Decimal] = {}
        settles: list[RatingMark] = []
        for closed in known.closed.get(tenant.id, []):
            mark = known.marks.get((tenant.id, closed.period))
            now_print = known.fingerprints.get((tenant.id, closed.period), EMPTY)
            if mark is not None and mark.current(now_print):
                continue
            rows = self.store.hourly_rows(Period.parse(closed.period), tenant.id).get(tenant.id, [])
            now = self.recompose(tenant, closed, drawn, rows)
            billed = self.billed(tenant, closed.period, excluding_period=period)
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

    def recompose(
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
            used = credits_drawn(
                self.ledger.charged_lines(tenant.id),
                excluding_document=closed.invoice_id,
                excluding_ref=closed.period,
            )
        return compose(
            original, rated, contract, card.currency, credits_used=_merge(used, drawn)
        ).lines

    def billed(self, tenant: Tenant, period: str, excluding_period: str) -> dict[str, Billed]:
        """Line key -> what has been charged for it so far for ``period``."""
        lines = self.ledger.charged_lines(tenant.id, since=period)
        return billed(charging(period, lines, excluding_period))

    def standing(
        self, tenant: Tenant, current: InvoiceView, rows: list[UsageRow], known: Known
    ) -> str:
        """Where a finalized invoice's period stands: ``unchanged``, ``changed_after_final``
        (late usage not yet on a later invoice) or ``adjusted`` (carried by one), rating it
        again only when its usage changed since it was last rated."""
        p = current.period
        fingerprint = usage_fingerprint(rows)
        mark = known.marks.get((tenant.id, p))
        if mark is not None and mark.current(fingerprint):
            return "unchanged" if mark.settled_in == p else "adjusted"
        now = self.recompose(tenant, current, {}, rows)
        lines = charging(p, self.ledger.charged_lines(tenant.id, since=p))
        if adjustment_lines(p, now, billed(lines), current.currency):
            return "changed_after_final"
        carried = carried_in(p, lines)
        self.settled.append(RatingMark(tenant.id, p, fingerprint, max(carried, default=p)))
        return "adjusted" if carried else "unchanged"
