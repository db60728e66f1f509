"""``gpumeter bill --period YYYY-MM``.

For each tenant with usage in the period (brief §5, §6):

* **external**: lines rated from its rate card -> an invoice in Stripe (customer, draft
  invoice, one invoice item per line, finalize), every request with an idempotency key
  derived from what it bills -> the invoice and its lines in the ClickHouse ledger;
* **internal**: chargeback lines at the internal transfer price, debiting the team's cost
  centre and crediting the platform's, in ClickHouse and as CSV.

Idempotent: a finalized invoice whose content is unchanged is left alone (no Stripe request);
a half-done run (crash between Stripe calls) is completed with the same idempotency keys.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.config import Config
from pipeline.domain.adjustments import ADJ_PREFIX, Billed, adjustment_lines
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import Line, idempotency_key, rate_per_unit
from pipeline.domain.reference import Tenant

FINAL_STATES = {"finalized", "paid", "void"}


@dataclass
class TenantResult:
    tenant_id: str
    kind: str
    currency: str
    gpu_hours: Fraction
    amount: Decimal
    status: str  # invoiced | unchanged | charged_back | changed_after_final
    document: str = ""


@dataclass
class BillingReport:
    period: str
    results: list[TenantResult] = field(default_factory=list)
    out_dir: Path | None = None
    stripe_requests: int = 0

    def totals(self) -> dict[tuple[str, str], Decimal]:
        out: dict[tuple[str, str], Decimal] = {}
        for r in self.results:
            out[(r.kind, r.currency)] = out.get((r.kind, r.currency), Decimal(0)) + r.amount
        return out


def content_hash(lines: list[Line]) -> str:
    h = hashlib.sha256()
    for ln in lines:
        h.update(
            f"{ln.line_key}|{ln.quantity}|{ln.unit_price}|{ln.amount}|{ln.currency}\n".encode()
        )
    return h.hexdigest()


def _fmt_qty(q: Fraction) -> str:
    return f"{Decimal(q.numerator) / Decimal(q.denominator):.6f}"


class BillingRun:
    def __init__(
        self,
        config: Config,
        store: Store,
        stripe: StripeGateway,
        out_root: Path,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.stripe = stripe
        self.out_root = out_root
        self.clock = clock

    def run(self, period: Period) -> BillingReport:
        report = BillingReport(str(period), out_dir=self.out_root / str(period))
        usage = self.store.hourly_rows(period)
        closed = self.store.finalized_before(str(period))
        chargeback_rows: list[dict[str, Any]] = []
        for tenant_id in sorted(usage.keys() | closed.keys()):
            tenant = self.config.reference.tenants.get(tenant_id)
            if tenant is None:  # the worker dead-letters unknown tenants; defensive
                raise ValueError(f"usage for unknown tenant {tenant_id!r}")
            card = self.config.rate_cards[tenant.rate_card]
            lines = rate_per_unit(usage.get(tenant_id, []), card, self.config.reference.catalog)
            if tenant.kind == "external":
                lines += self._adjustments(tenant, period, closed.get(tenant_id, []))
                if lines:
                    report.results.append(self._invoice(tenant, period, lines))
            else:
                rows = self._chargeback_rows(tenant, period, lines)
                chargeback_rows.extend(rows)
                report.results.append(
                    TenantResult(
                        tenant.id,
                        tenant.kind,
                        card.currency,
                        sum((ln.quantity for ln in lines), Fraction(0)),
                        sum((ln.amount for ln in lines), Decimal(0)),
                        "charged_back",
                    )
                )
        self.store.save_chargeback(chargeback_rows)
        self._write_chargeback_files(period, chargeback_rows)
        self._write_invoice_summary(period, report)
        return report

    def _adjustments(
        self, tenant: Tenant, period: Period, closed: list[tuple[str, str]]
    ) -> list[Line]:
        """Late usage of already-invoiced periods, as lines for this period's invoice."""
        card = self.config.rate_cards[tenant.rate_card]
        out: list[Line] = []
        for original, invoice_id in closed:
            rows = self.store.hourly_rows(Period.parse(original), tenant.id).get(tenant.id, [])
            now = rate_per_unit(rows, card, self.config.reference.catalog)
            billed = {
                k: Billed(a, u)
                for k, (a, u) in self.store.billed_so_far(
                    tenant.id, invoice_id, original, str(period)
                ).items()
            }
            out += adjustment_lines(
                original, now, billed, self.config.reference.catalog, card.currency
            )
        return out

    # -- external: invoices through Stripe ------------------------------------------------
    def _invoice(self, tenant: Tenant, period: Period, lines: list[Line]) -> TenantResult:
        p = str(period)
        chash = content_hash(lines)
        total = sum((ln.amount for ln in lines), Decimal(0))
        qty = sum((ln.quantity for ln in lines), Fraction(0))
        currency = self.config.rate_cards[tenant.rate_card].currency
        invoice_id = f"GM-{p}-{tenant.id}"
        doc = self.out_root / p / "invoices" / f"{tenant.id}.json"
        existing = self.store.invoice(tenant.id, p)
        if existing and existing.status in FINAL_STATES:
            status = "unchanged" if existing.content_hash == chash else "changed_after_final"
            return TenantResult(
                tenant.id,
                "external",
                currency,
                qty,
                from_minor(existing.total_minor, currency),
                status,
                str(doc),
            )
        customer = self.store.stripe_customer(tenant.id)
        if customer is None:
            customer = self.stripe.ensure_customer(
                tenant.id, tenant.name, tenant.email, idempotency_key("customer", tenant.id)
            )
            self.store.save_stripe_customer(tenant.id, customer)
        now = self.clock()
        base = {
            "invoice_id": invoice_id,
            "tenant_id": tenant.id,
            "period": p,
            "currency": currency,
            "subtotal_minor": sum(ln.amount_minor for ln in lines),
            "total_minor": sum(ln.amount_minor for ln in lines),
            "line_count": len(lines),
            "stripe_customer_id": customer,
            "content_hash": chash,
            "issued_at": now,
        }
        self.store.save_invoice({**base, "status": "draft", "stripe_invoice_id": "", "version": 1})
        inv = self.stripe.create_invoice(
            customer,
            currency,
            {"tenant_id": tenant.id, "period": p, "invoice_id": invoice_id},
            f"GPU usage {p}",
            idempotency_key("invoice", tenant.id, p, chash),
        )
        line_rows = []
        for ln in lines:
            idem = idempotency_key("item", tenant.id, p, ln.line_key, ln.amount_minor, ln.quantity)
            item_id = self.stripe.add_item(
                customer,
                inv.id,
                ln.amount_minor,
                currency,
                f"{ln.description}, {p}: {_fmt_qty(ln.quantity)} h x {ln.unit_price}",
                {"tenant_id": tenant.id, "period": p, "line_key": ln.line_key},
                idem,
            )
            line_rows.append(
                {
                    "invoice_id": invoice_id,
                    "line_id": f"{invoice_id}/{ln.line_key}",
                    "line_key": ln.line_key,
                    "tenant_id": tenant.id,
                    "period": p,
                    "description": ln.description,
                    "gpu_model": ln.gpu_model,
                    "mig_profile": ln.mig_profile,
                    "quantity": _fmt_qty(ln.quantity),
                    "unit_price": str(ln.unit_price),
                    "amount_minor": ln.amount_minor,
                    "currency": currency,
                    "usage_us": ln.usage_us,
                    "hourly_rows": ln.hourly_rows,
                    "stripe_invoice_item_id": item_id,
                    "idempotency_key": idem,
                }
            )
        self.stripe.finalize(inv.id, idempotency_key("finalize", tenant.id, p, chash))
        self.store.save_invoice_lines(line_rows)
        self.store.save_adjustments(
            [
                {
                    "tenant_id": tenant.id,
                    "original_period": ln.line_key.split("/")[1],
                    "line_key": ln.line_key.split("/", 2)[2],
                    "applied_invoice_id": invoice_id,
                    "applied_period": p,
                    "description": ln.description,
                    "quantity": _fmt_qty(ln.quantity),
                    "amount_minor": ln.amount_minor,
                    "usage_us": ln.usage_us,
                    "currency": currency,
                    "created_at": now,
                }
                for ln in lines
                if ln.line_key.startswith(ADJ_PREFIX)
            ]
        )
        self.store.save_invoice(
            {**base, "status": "finalized", "stripe_invoice_id": inv.id, "version": 2}
        )
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(
            json.dumps(
                {
                    "invoice_id": invoice_id,
                    "tenant": {"id": tenant.id, "name": tenant.name},
                    "period": {
                        "id": p,
                        "start": period.start.isoformat(),
                        "end": period.end.isoformat(),
                    },
                    "status": "finalized",
                    "currency": currency,
                    "stripe_invoice_id": inv.id,
                    "lines": [
                        {k: v for k, v in r.items() if k not in ("tenant_id", "period")}
                        for r in line_rows
                    ],
                    "total": str(total),
                },
                indent=2,
                default=str,
            )
        )
        return TenantResult(tenant.id, "external", currency, qty, total, "invoiced", str(doc))

    # -- internal: chargeback ---------------------------------------------------------------
    def _chargeback_rows(
        self, tenant: Tenant, period: Period, lines: list[Line]
    ) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            {
                "period": str(period),
                "cost_centre": tenant.cost_centre or "",
                "tenant_id": tenant.id,
                "line_key": ln.line_key,
                "description": ln.description,
                "quantity": _fmt_qty(ln.quantity),
                "unit_price": str(ln.unit_price),
                "amount_minor": ln.amount_minor,
                "currency": ln.currency,
                "credit_cost_centre": self.config.reference.platform_cost_centre,
                "usage_us": ln.usage_us,
                "busy_us": ln.busy_us,
                "created_at": now,
            }
            for ln in lines
        ]

    def _write_chargeback_files(self, period: Period, rows: list[dict[str, Any]]) -> None:
        folder = self.out_root / str(period) / "chargeback"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "journal.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "period",
                    "entry",
                    "cost_centre",
                    "tenant_id",
                    "line_key",
                    "description",
                    "gpu_hours",
                    "unit_price",
                    "debit",
                    "credit",
                    "currency",
                ]
            )
            for r in rows:
                amount = str(from_minor(r["amount_minor"], r["currency"]))
                common = [
                    r["tenant_id"],
                    r["line_key"],
                    r["description"],
                    r["quantity"],
                    r["unit_price"],
                ]
                w.writerow(
                    [r["period"], "debit", r["cost_centre"], *common, amount, "", r["currency"]]
                )
                w.writerow(
                    [
                        r["period"],
                        "credit",
                        r["credit_cost_centre"],
                        *common,
                        "",
                        amount,
                        r["currency"],
                    ]
                )
        by_cc: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_cc.setdefault(r["cost_centre"], []).append(r)
        for cc, cc_rows in by_cc.items():
            with (folder / f"{cc.replace('/', '__')}.csv").open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(
                    [
                        "period",
                        "cost_centre",
                        "line",
                        "gpu_hours",
                        "unit_price",
                        "cost",
                        "currency",
                        "efficiency_pct",
                    ]
                )
                for r in cc_rows:
                    eff = (
                        (Decimal(r["busy_us"]) * 100 / Decimal(r["usage_us"])).quantize(
                            Decimal("0.1")
                        )
                        if r["usage_us"]
                        else ""
                    )
                    w.writerow(
                        [
                            r["period"],
                            cc,
                            r["description"],
                            r["quantity"],
                            r["unit_price"],
                            str(from_minor(r["amount_minor"], r["currency"])),
                            r["currency"],
                            eff,
                        ]
                    )

    def _write_invoice_summary(self, period: Period, report: BillingReport) -> None:
        folder = self.out_root / str(period) / "invoices"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "invoices.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                ["period", "tenant_id", "status", "gpu_hours", "total", "currency", "document"]
            )
            for r in report.results:
                if r.kind == "external":
                    w.writerow(
                        [
                            report.period,
                            r.tenant_id,
                            r.status,
                            _fmt_qty(r.gpu_hours),
                            str(r.amount),
                            r.currency,
                            r.document,
                        ]
                    )
