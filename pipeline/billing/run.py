"""``gpumeter bill --period YYYY-MM``: rate every tenant's usage for a period (brief §5, §6).

* **external** tenants: an invoice per tenant through its lifecycle (draft during the grace
  period, then finalized and sent through Stripe), see :mod:`pipeline.billing.invoicing`;
  tenants whose contract asks for it get a zero invoice for a period without usage;
* **internal** tenants: chargeback lines at the internal transfer price, see
  :mod:`pipeline.billing.chargeback`.

Order: every tenant is composed and its draft saved first; the drafts that are due are then
finalized together, their Stripe requests running in ``stripe_threads`` threads, and the
ledger records them after Stripe. Idempotent: rerunning a period changes nothing that is final
and sends nothing twice to Stripe. A Stripe failure for one tenant is recorded and the run goes
on; the report lists the failed tenants (and ``gpumeter bill`` exits non-zero).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rich.progress import Progress

from pipeline.adapters.chargeback import ChargebackLedger
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.billing.chargeback import Chargebacks
from pipeline.billing.documents import invoices_csv
from pipeline.billing.invoicing import Due, Invoicer, Known, TenantResult
from pipeline.config import Config
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow, usage_hours
from pipeline.domain.reference import Tenant


@dataclass
class BillingReport:
    period: str
    results: list[TenantResult] = field(default_factory=list)
    out_dir: Path | None = None

    def totals(self) -> dict[tuple[str, str], Decimal]:
        out: dict[tuple[str, str], Decimal] = {}
        for r in self.results:
            out[(r.kind, r.currency)] = out.get((r.kind, r.currency), Decimal(0)) + r.amount
        return out

    @property
    def failed(self) -> list[TenantResult]:
        return [r for r in self.results if r.status == "failed"]


class BillingRun:
    def __init__(
        self,
        config: Config,
        store: Store,
        stripe: StripeGateway,
        out_root: Path,
        clock: Callable[[], datetime],
        ledger: Ledger | None = None,
        grace: timedelta = timedelta(hours=72),
        progress: bool = False,
        stripe_threads: int = 1,
    ) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger or Ledger(store.ex)
        self.out_root = out_root
        self.clock = clock
        self.progress = progress
        self.stripe_threads = stripe_threads
        self.invoicer = Invoicer(config, store, self.ledger, stripe, out_root, clock, grace)
        self.chargebacks = Chargebacks(
            config, store, ChargebackLedger(store.ex), out_root, clock, grace
        )

    def _kind(self, tenant_id: str) -> str:
        tenant = self.config.reference.tenants.get(tenant_id)
        return tenant.kind if tenant is not None else ""

    def tenants(self, with_usage: set[str], known: Known) -> list[str]:
        zero = {
            t.id
            for t in self.config.reference.tenants.values()
            if t.kind == "external" and self.config.contract(t.id).zero_invoice
        }
        return sorted(with_usage | set(known.closed) | zero | set(known.views))

    def _unrated(
        self,
        tenant: Tenant,
        period: Period,
        rows: list[UsageRow],
        known: Known,
        exc: BillingError,
    ) -> TenantResult:
        """A tenant whose usage (or an earlier period's, for an adjustment) has a row its rate
        card cannot price: it fails alone, recorded like a Stripe failure, and nothing of it
        is written; the run goes on with the other tenants."""
        current = known.current(tenant.id) if tenant.kind == "external" else None
        invoice_id = current.invoice_id if current is not None else ""
        self.ledger.record_failure(
            {
                "period": str(period),
                "tenant_id": tenant.id,
                "invoice_id": invoice_id,
                "at": self.clock(),
                "stage": "rating",
                "transient": 0,
                "http_status": 0,
                "code": exc.code.value,
                "message": exc.message,
            }
        )
        return TenantResult(
            tenant.id,
            tenant.kind,
            self.config.card_for(tenant.id).currency,
            usage_hours(rows, self.config.reference.catalog),
            Decimal(0),
            "failed",
            invoice_id=invoice_id,
            error=f"{exc.code.value}: {exc.message}",
        )

    def run(self, period: Period) -> BillingReport:
        report = BillingReport(str(period), out_dir=self.out_root / str(period))
        usage = self.store.hourly_rows(period)
        due: list[tuple[int, Due]] = []
        known = self.invoicer.prefetch(period)
        charged_before = self.chargebacks.prefetch(period)
        internal = {
            t for t in self.chargebacks.tenants(charged_before) if self._kind(t) == "internal"
        }
        tenant_ids = sorted(set(self.tenants(set(usage), known)) | internal)
        unrated_internal = False
        with Progress(disable=not self.progress, transient=True) as bar:
            task = bar.add_task(f"billing {period}", total=len(tenant_ids))
            for tenant_id in tenant_ids:
                bar.advance(task)
                tenant = self.config.reference.tenants.get(tenant_id)
                if tenant is None:  # the worker dead-letters unknown tenants; defensive
                    raise ValueError(f"usage for unknown tenant {tenant_id!r}")
                rows = usage.get(tenant_id, [])
                try:
                    if tenant.kind == "external":
                        o, d = self.invoicer.prepare(tenant, period, rows, known)
                        if d is not None:
                            due.append((len(report.results), d))
                        if o.status != "no_invoice":
                            report.results.append(o)
                        continue
                    charged = self.chargebacks.charge(tenant, period, rows, charged_before)
                except BillingError as exc:
                    if exc.code is not BillingErrorCode.NO_PRICE:
                        raise
                    report.results.append(self._unrated(tenant, period, rows, known, exc))
                    unrated_internal = unrated_internal or tenant.kind == "internal"
                    continue
                if charged is not None:
                    report.results.append(
                        TenantResult(
                            tenant.id,
                            "internal",
                            charged.currency,
                            charged.gpu_hours,
                            charged.amount,
                            charged.status,
                        )
                    )
        self.invoicer.flush_drafts()
        finalized = self.invoicer.finalize_all([d for _, d in due], self.stripe_threads)
        for (i, _), result in zip(due, finalized, strict=True):
            report.results[i] = result
        self.invoicer.write_documents()
        self.chargebacks.finish(period, charged_before, failed=unrated_internal)
        folder = self.out_root / str(period) / "invoices"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "invoices.csv").write_text(
            invoices_csv(self.config, self.ledger.invoices(str(period)))
        )
        return report
