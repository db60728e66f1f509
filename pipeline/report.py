"""Printing summaries for people (rich tables)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from rich.console import Console
from rich.table import Table

from pipeline.billing.run import BillingReport


def _h(q: Fraction) -> str:
    return f"{Decimal(q.numerator) / Decimal(q.denominator):,.2f}"


def billing_table(report: BillingReport, title: str | None = None) -> Table:
    t = Table(title=title or f"Billing {report.period}")
    for col, just in (
        ("tenant", "left"),
        ("kind", "left"),
        ("GPU-hours", "right"),
        ("amount", "right"),
        ("cur", "left"),
        ("status", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in report.results:
        t.add_row(r.tenant_id, r.kind, _h(r.gpu_hours), f"{r.amount:,.2f}", r.currency, r.status)
    for (kind, cur), amount in sorted(report.totals().items()):
        hours = sum(
            (r.gpu_hours for r in report.results if (r.kind, r.currency) == (kind, cur)),
            Fraction(0),
        )
        t.add_row(
            f"[b]total {kind}[/b]", "", f"[b]{_h(hours)}[/b]", f"[b]{amount:,.2f}[/b]", cur, ""
        )
    return t


def print_billing(report: BillingReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(billing_table(report))
    if report.out_dir:
        console.print(f"invoices:   {report.out_dir / 'invoices'}")
        console.print(f"chargeback: {report.out_dir / 'chargeback'}")
