"""``gpumeter reconcile --period``: for each invoiced tenant, the value of its metered usage
(re-rated now from ClickHouse) against what its invoice charges, with every difference
explained. The pass mark is zero unexplained difference.

    invoiced = metered
             + rounding            (usage lines rounded once each, minus their exact value)
             + discount + minimum true-up + credits + adjustments (of earlier periods)
             - usage since invoicing (hourly rows that grew after the invoice was made: they
               are billed as adjustments on a later invoice, never on this one)
             - void                (a voided invoice charges nothing; its credit note cancels it)
             + unexplained

"Usage since invoicing" is measured from evidence, not from the difference: the invoice keeps
the hourly rows (and their GPU-µs) behind each usage line, and those rows re-rated must equal
the invoice's exact usage value. So a line whose amount disagrees with its usage, a header
whose total disagrees with its lines, or metered usage that no invoice charged all show up as
unexplained. Internal tenants are charged back, not invoiced, and are not reconciled here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from pipeline.adapters.ledger import InvoiceView, Ledger, source_key
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.charged import charging
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.lifecycle import current_of
from pipeline.domain.money import from_minor, round_money
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow, rate_usage
from pipeline.domain.usage import HourlyKey

EXPLANATIONS = (
    "rounding",
    "discount",
    "minimum",
    "credit",
    "adjustment",
    "usage_since_invoicing",
    "void",
)


@dataclass
class TenantReconciliation:
    tenant_id: str
    currency: str
    invoice_id: str
    status: str
    metered: Fraction
    invoiced: Decimal
    explained: dict[str, Fraction] = field(default_factory=dict)
    adjusted_later: Decimal = Decimal(0)  # usage since invoicing already billed later
    error: str = ""  # usage its rate card cannot price (status no_price): never clean

    @property
    def unexplained(self) -> Fraction:
        return Fraction(self.invoiced) - self.metered - sum(self.explained.values(), Fraction(0))

    def line(self) -> str:
        """One line for this tenant: every term of the equation above, in its currency."""

        def m(v: Fraction | Decimal) -> str:
            return str(round_money(Fraction(v), self.currency))

        terms = " ".join(f"{k}={m(v)}" for k, v in self.explained.items() if v)
        return (
            f"reconcile: tenant={self.tenant_id} invoice={self.invoice_id or '-'} "
            f"status={self.status} currency={self.currency} metered={m(self.metered)} "
            + (terms + " " if terms else "")
            + f"invoiced={self.invoiced} unexplained={m(self.unexplained)}"
            + (f" error={self.error}" if self.error else "")
        )


@dataclass
class Reconciliation:
    period: str
    tenants: list[TenantReconciliation]

    def totals(self) -> dict[str, tuple[Fraction, Decimal, Fraction]]:
        out: dict[str, tuple[Fraction, Decimal, Fraction]] = {}
        for t in self.tenants:
            m, i, u = out.get(t.currency, (Fraction(0), Decimal(0), Fraction(0)))
            out[t.currency] = (m + t.metered, i + t.invoiced, u + t.unexplained)
        return out

    @property
    def clean(self) -> bool:
        return all(t.unexplained == 0 and not t.error for t in self.tenants)

    def summary_line(self) -> str:
        tot = sorted(self.totals().items())

        def fmt(idx: int) -> str:
            return ",".join(f"{cur}:{round_money(Fraction(v[idx]), cur)}" for cur, v in tot) or "0"

        return (
            f"reconcile: period={self.period} tenants={len(self.tenants)} metered={fmt(0)} "
            f"invoiced={fmt(1)} unexplained={fmt(2)}"
        )


def reconcile(config: Config, store: Store, ledger: Ledger, period: Period) -> Reconciliation:
    p = str(period)
    usage = store.hourly_rows(period)
    by_tenant: dict[str, list[InvoiceView]] = {}
    for v in ledger.invoices(p):
        by_tenant.setdefault(v.tenant_id, []).append(v)
    views = {t: cur for t, vs in by_tenant.items() if (cur := current_of(vs)) is not None}
    later_adjustments = _later_adjustments(ledger, p)
    out = []
    external = {t.id for t in config.reference.tenants.values() if t.kind == "external"}
    for tenant_id in sorted((set(usage) & external) | set(views)):
        try:
            out.append(_tenant(config, ledger, tenant_id, usage, views, later_adjustments))
        except BillingError as exc:  # usage without a price: this tenant only
            if exc.code is not BillingErrorCode.NO_PRICE:
                raise
            view = views.get(tenant_id)
            out.append(
                TenantReconciliation(
                    tenant_id,
                    config.card_for(tenant_id).currency,
                    view.invoice_id if view is not None else "",
                    "no_price",
                    Fraction(0),  # unknown: the usage cannot be valued
                    view.total if view is not None and view.status != "void" else Decimal(0),
                    error=f"{exc.code.value}: {exc.message}",
                )
            )
    return Reconciliation(p, out)


def _tenant(
    config: Config,
    ledger: Ledger,
    tenant_id: str,
    usage: dict[str, list[UsageRow]],
    views: dict[str, InvoiceView],
    later_adjustments: dict[str, Decimal],
) -> TenantReconciliation:
    """One tenant's metered value against its invoice (the equation in the module doc)."""
    contract = config.contract(tenant_id)
    card = config.card_for(tenant_id)
    catalog = config.reference.catalog
    metered = sum(
        (
            ln.exact
            for ln in rate_usage(usage.get(tenant_id, []), card, catalog, contract.tier_of).lines
        ),
        Fraction(0),
    )
    view = views.get(tenant_id)
    if view is None:
        return TenantReconciliation(
            tenant_id, card.currency, "", "not_invoiced", metered, Decimal(0)
        )
    lines = ledger.lines(view.invoice_id, view.revision)
    by_kind: dict[str, Fraction] = defaultdict(Fraction)
    usage_exact = Fraction(0)
    for ln in lines:
        amount = Fraction(from_minor(ln["amount_minor"], view.currency))
        by_kind[ln["kind"]] += amount
        if ln["kind"] == "usage":
            usage_exact += Fraction(ln["exact_amount"])
    lineage: dict[HourlyKey, UsageRow] = {}
    for src in ledger.line_sources(view.invoice_id, view.revision):
        key = source_key(tenant_id, src)
        lineage[key] = UsageRow(key, int(src["usage_us"]))  # once, even behind 2 tier lines
    billed_value = sum(
        (ln.exact for ln in rate_usage(lineage.values(), card, catalog, contract.tier_of).lines),
        Fraction(0),
    )
    rec = TenantReconciliation(
        tenant_id,
        view.currency,
        view.invoice_id,
        view.status,
        metered,
        Decimal(0) if view.status == "void" else view.total,
        adjusted_later=later_adjustments.get(tenant_id, Decimal(0)),
    )
    rec.explained = {
        "rounding": by_kind["usage"] - usage_exact,
        "discount": by_kind["discount"],
        "minimum": by_kind["minimum"],
        "credit": by_kind["credit"],
        "adjustment": by_kind["adjustment"],
        "usage_since_invoicing": billed_value - metered,
        "void": -Fraction(view.total) if view.status == "void" else Fraction(0),
    }
    return rec


def _later_adjustments(ledger: Ledger, period: str) -> dict[str, Decimal]:
    """Tenant -> adjustments for ``period`` already on later finalized invoices."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for ln in charging(period, ledger.charged_lines(since=period)):
        if ln.key.is_adjustment:
            out[ln.tenant_id] += ln.amount
    return dict(out)
