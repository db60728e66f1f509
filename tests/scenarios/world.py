"""The world a billing scenario runs in (shared by the modules of ``tests/scenarios``).

Each scenario builds a small configuration of its own (1-3 tenants, a rate card and a contract
written in the test), inserts hourly usage straight into ``usage_hourly`` of an in-process
current ClickHouse (chdb), bills through :class:`BillingRun` against the recording fake Stripe,
and checks amounts computed by hand in the test.

The clock is a mutable holder the test advances; the billing code reads it through
``clock.now``. With the default 72 h grace, October 2026 stays a draft until
2026-11-04T00:00Z and is finalized from that instant on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.adapters.clickhouse import ChdbExecutor
from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.billing.reconcile import Reconciliation, reconcile
from pipeline.billing.run import BillingReport, BillingRun, TenantResult
from pipeline.config import Config
from pipeline.domain.contracts import Contract
from pipeline.domain.period import Period
from pipeline.domain.rating import RateCard
from pipeline.domain.reference import GpuCatalog, ReferenceData
from pipeline.worker.sink import HOURLY_COLUMNS
from tests.stripe_fake import FakeStripe

H = 3_600_000_000  # one GPU-hour in micro-seconds
OCT, NOV, DEC = Period.parse("2026-10"), Period.parse("2026-11"), Period.parse("2026-12")
USAGE_COLUMNS = [c for c in HOURLY_COLUMNS if c != "late_us"]


def at(month: int, day: int, hour: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


# The first instant each period is finalized (period end + 72 h grace).
OCT_FINAL = at(11, 4)
NOV_FINAL = at(12, 4)
DEC_FINAL = at(1, 4, year=2027)


# -- the world a scenario runs in --------------------------------------------------------------


@dataclass
class Clock:
    current: datetime

    def now(self) -> datetime:
        return self.current

    def set(self, when: datetime) -> None:
        self.current = when

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@dataclass
class World:
    ex: ChdbExecutor
    store: Store
    ledger: Ledger
    fake: FakeStripe
    stripe: StripeGateway
    clock: Clock
    out: Path
    config: Config | None = None
    _run: BillingRun | None = field(default=None, repr=False)

    # configuration
    def configure(
        self,
        tenants: list[dict[str, Any]],
        cards: list[dict[str, Any]],
        contracts: list[dict[str, Any]] | None = None,
    ) -> Config:
        catalog = GpuCatalog.model_validate(
            {
                "gpus": {
                    "H100": {"memory_gb": 80, "compute_slices": 7, "mig_profiles": {"3g.40gb": 3}},
                    "H200": {"memory_gb": 141, "compute_slices": 7},
                    "A100": {"memory_gb": 80, "compute_slices": 7},
                }
            }
        )
        reference = ReferenceData.model_validate(
            {"catalog": catalog, "tenants": tenants, "partners": []}
        )
        rate_cards = {c.id: c for c in (RateCard.model_validate(c) for c in cards)}
        terms = {c.tenant: c for c in (Contract.model_validate(c) for c in contracts or [])}
        self.config = Config(reference, rate_cards, terms)
        self._run = None
        return self.config

    @property
    def billing(self) -> BillingRun:
        assert self.config is not None, "configure() first"
        if self._run is None:
            self._run = BillingRun(
                self.config, self.store, self.stripe, self.out, self.clock.now, self.ledger
            )
        return self._run

    # usage
    def usage(
        self,
        tenant: str,
        hour: datetime,
        usage_us: int,
        *,
        version: int = 1,
        gpu: str = "H100",
        mig: str = "",
        region: str = "us-east-1",
        provider: str = "fjord-compute",
        project: str = "p1",
        cluster: str = "c1",
    ) -> None:
        """One hourly row; a later row for the same key with a higher version replaces it."""
        self.ex.insert(
            "usage_hourly",
            USAGE_COLUMNS,
            [
                (
                    tenant,
                    hour,
                    project,
                    gpu,
                    mig,
                    region,
                    provider,
                    cluster,
                    usage_us,
                    usage_us // 2,
                    1,
                    version,
                    self.clock.now(),
                )
            ],
        )

    def spread(
        self, tenant: str, first_hour: datetime, rows: int, total_us: int, **dims: Any
    ) -> None:
        """``total_us`` GPU-µs over ``rows`` consecutive hourly rows (the remainder on the last)."""
        each, rest = divmod(total_us, rows)
        for i in range(rows):
            self.usage(
                tenant,
                first_hour + timedelta(hours=i),
                each + (rest if i == rows - 1 else 0),
                **dims,
            )

    # billing and what it left
    def bill(self, period: Period, when: datetime | None = None) -> BillingReport:
        if when is not None:
            self.clock.set(when)
        return self.billing.run(period)

    def lines(self, invoice_id: str) -> dict[str, dict[str, Any]]:
        view = self.ledger.invoice(invoice_id)
        assert view is not None
        return {ln["line_key"]: ln for ln in self.ledger.lines(invoice_id, view.revision)}

    def amounts(self, invoice_id: str) -> dict[str, tuple[str, Decimal]]:
        """line_key -> (kind, amount) of the invoice's latest revision."""
        return {
            key: (ln["kind"], Decimal(ln["amount_minor"]).scaleb(-2))
            for key, ln in self.lines(invoice_id).items()
        }

    def invoice(self, invoice_id: str) -> InvoiceView:
        view = self.ledger.invoice(invoice_id)
        assert view is not None
        return view

    def stripe_counts(self) -> tuple[int, int, int]:
        """Stripe objects really created (replays excluded): customers, invoices, items."""
        created = self.fake.created
        return len(created("customer")), len(created("invoice")), len(created("invoiceitem"))

    def chargebacks(self, period: str) -> list[dict[str, Any]]:
        """The chargeback entries of a period as they stand (every tenant's latest revision)."""
        from pipeline.adapters.chargeback import ChargebackLedger

        return ChargebackLedger(self.ex).journal(period)

    def reconcile(self, period: Period) -> Reconciliation:
        assert self.config is not None
        return reconcile(self.config, self.store, self.ledger, period)


def external(tenant_id: str, card: str, currency: str = "USD") -> dict[str, Any]:
    return {
        "id": tenant_id,
        "name": tenant_id.title(),
        "kind": "external",
        "currency": currency,
        "rate_card": card,
        "email": f"billing@{tenant_id}.example",
    }


def per_unit_card(
    card_id: str = "list-usd", price: str = "2.00", currency: str = "USD"
) -> dict[str, Any]:
    return {"id": card_id, "currency": currency, "prices": {"H100": price}}


def result(report: BillingReport, tenant_id: str) -> TenantResult:
    found = [r for r in report.results if r.tenant_id == tenant_id]
    assert len(found) == 1, (tenant_id, report.results)
    return found[0]


def gm(period: Period, tenant_id: str) -> str:
    return f"GM-{period}-{tenant_id}"
