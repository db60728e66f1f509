"""Finance commands: ``gpumeter invoices list|show|export|trace|void``, ``gpumeter reconcile``
and ``gpumeter api serve``. Thin: the work is in :mod:`pipeline.billing`."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.money import from_minor
from pipeline.settings import Settings

STATUSES = ("draft", "finalized", "paid", "payment_failed", "void")


def _console() -> Console:
    """Wide enough that ids and amounts are never cut when the output is not a terminal."""
    return Console(width=220)


def _now() -> datetime:
    return datetime.now(UTC)


def _deps(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any, Any]:
    """Config, store and ledger; the ClickHouse connection closes when the command ends."""
    from pipeline.bootstrap import ledger, store
    from pipeline.config import Config

    config = Config.load(settings.config_dir)
    st = store(settings)
    args.resources.callback(st.ex.close)
    return config, st, ledger(st)


def _period(text: str) -> str:
    from pipeline.domain.period import Period

    return str(Period.parse(text))


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    config, _store, ledger = _deps(args, settings)
    views = [
        v
        for v in ledger.invoices(_period(args.period))
        if args.status is None or v.status == args.status
    ]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "invoice_id": v.invoice_id,
                        "tenant_id": v.tenant_id,
                        "period": v.period,
                        "status": v.status,
                        "currency": v.currency,
                        "total": str(v.total),
                        "issued_at": v.issued_at.isoformat(),
                        "due_at": v.due_at.isoformat(),
                        "stripe_invoice_id": v.stripe_invoice_id,
                    }
                    for v in views
                ],
                indent=2,
            )
        )
        return 0
    t = Table(title=f"Invoices {args.period}" + (f" ({args.status})" if args.status else ""))
    for col in ("invoice", "tenant", "status", "issued", "due", "total", "cur"):
        t.add_column(col, justify="right" if col == "total" else "left")
    for v in views:
        t.add_row(
            v.invoice_id,
            v.tenant_id,
            v.status,
            v.issued_at.date().isoformat(),
            v.due_at.date().isoformat(),
            f"{v.total:,}",
            v.currency,
        )
    _console().print(t)
    return 0


def _document(args: argparse.Namespace, settings: Settings, invoice_id: str) -> Any:
    from pipeline.billing.documents import load_document

    config, _store, ledger = _deps(args, settings)
    doc = load_document(config, ledger, invoice_id)
    if doc is None:
        raise BillingError(BillingErrorCode.INVOICE_NOT_FOUND, f"no invoice {invoice_id!r}")
    return doc


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    doc = _document(args, settings, args.invoice_id)
    if args.json:
        print(doc.model_dump_json(indent=2))
        return 0
    c = _console()
    c.print(
        f"[b]{doc.invoice_id}[/b]  {doc.status}  {doc.customer.name} ({doc.customer.id})  "
        f"period {doc.period}  issued {doc.issued_at.date()}  due "
        f"{doc.due_at.date() if doc.due_at else '-'}  Stripe {doc.stripe_invoice_id or '-'}"
    )
    t = Table()
    for col in ("line id", "kind", "description", "quantity", "unit price", "amount"):
        t.add_column(
            col, justify="right" if col in ("quantity", "unit price", "amount") else "left"
        )
    for ln in doc.lines:
        t.add_row(
            ln.line_id,
            ln.kind,
            ln.description,
            f"{ln.quantity} {ln.unit}".strip(),
            str(ln.unit_price),
            f"{ln.amount:,}",
        )
    c.print(t)
    c.print(
        f"subtotal {doc.subtotal:,}  credits {doc.credits:,}  tax {doc.tax.amount}  "
        f"[b]total {doc.total:,} {doc.currency}[/b]"
    )
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.billing.documents import build_document, invoices_csv, write_document

    config, _store, ledger = _deps(args, settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    views = ledger.invoices(_period(args.period))
    if args.format == "csv":
        path = out / f"invoices-{args.period}.csv"
        path.write_text(invoices_csv(config, views))
        print(f"export: {len(views)} invoices -> {path}")
        return 0
    for v in views:
        write_document(out, build_document(config, v, ledger.lines(v.invoice_id, v.revision)))
    print(f"export: {len(views)} invoices -> {out}/<invoice id>.pdf (+ .json)")
    return 0


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.billing.trace import trace_line

    _config, store, ledger = _deps(args, settings)
    tr = trace_line(
        ledger, store, args.line_id, event_limit=args.limit, max_interval_s=settings.max_interval_s
    )
    ln = tr.line
    c = _console()
    c.print(
        f"[b]{ln['line_id']}[/b] ({tr.status}) {ln['kind']}: {ln['description']}: "
        f"{ln['quantity']} {ln['unit']} x {ln['unit_price']} = "
        f"{from_minor(ln['amount_minor'], ln['currency'])} {ln['currency']}"
    )
    if ln["kind"] == "adjustment":
        c.print(
            f"an adjustment for {ln['period_ref']}: usage that arrived after that period was "
            f"invoiced; see `gpumeter late --period {ln['period_ref']}`"
        )
        return 0
    if ln["kind"] != "usage":
        c.print("a fixed line (no usage behind it)")
        return 0
    t = Table(title=f"{len(tr.rows)} hourly usage rows")
    for col in ("hour", "project", "MIG", "region", "provider", "cluster", "GPU-s billed", "now"):
        t.add_column(col)
    for r in tr.rows:
        t.add_row(
            r["hour"].strftime("%Y-%m-%d %H:00"),
            r["project_id"],
            r["mig_profile"] or "-",
            r["region"],
            r["provider"],
            r["cluster"],
            f"{r['usage_us'] / 1e6:.3f}",
            f"{r['usage_us_now'] / 1e6:.3f}",
        )
    c.print(t)
    c.print(f"{tr.events_total} usage events behind these rows; first {len(tr.events)}:")
    for e in tr.events:
        c.print(
            f"  {e['event_source']} {e['event_id']}  {e['hour']:%Y-%m-%d %H:00}  "
            f"{e['node']} {e['gpu_uuid']} x{e['gpu_count']}" + ("  late" if e["late"] else "")
        )
    return 0


def cmd_void(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bootstrap import invoicer

    config, store, _ledger = _deps(args, settings)
    inv = invoicer(settings, config, store, clock=_now)
    view = inv.void(args.invoice_id, args.reason)
    print(f"void: {view.invoice_id} is {view.status}; credit note CN-{view.invoice_id} issued")
    return 0


def _amount(v: Fraction, cur: str) -> str:
    from pipeline.domain.money import round_money

    return f"{round_money(v, cur):,}"


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.billing.reconcile import EXPLANATIONS, reconcile
    from pipeline.domain.period import Period

    config, store, ledger = _deps(args, settings)
    rec = reconcile(config, store, ledger, Period.parse(args.period))
    t = Table(title=f"Reconciliation {rec.period}: metered usage value vs invoiced")
    for col in ("tenant", "invoice", "status", "metered", *EXPLANATIONS, "invoiced", "unexpl."):
        t.add_column(col, justify="left" if col in ("tenant", "invoice", "status") else "right")
    for r in rec.tenants:
        t.add_row(
            r.tenant_id,
            r.invoice_id or "-",
            r.status,
            _amount(r.metered, r.currency),
            *(
                _amount(r.explained[k], r.currency) if r.explained.get(k) else ""
                for k in EXPLANATIONS
            ),
            f"{r.invoiced:,} {r.currency}",
            "0" if r.unexplained == 0 else f"[red]{float(r.unexplained):,.6f}[/red]",
        )
    _console().print(t)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "tenant_id": r.tenant_id,
                        "invoice_id": r.invoice_id,
                        "status": r.status,
                        "currency": r.currency,
                        "metered_exact": f"{r.metered.numerator}/{r.metered.denominator}",
                        "invoiced": str(r.invoiced),
                        "explained": {
                            k: f"{v.numerator}/{v.denominator}" for k, v in r.explained.items()
                        },
                        "unexplained": f"{r.unexplained.numerator}/{r.unexplained.denominator}",
                    }
                    for r in rec.tenants
                ],
                indent=2,
            )
        )
    for r in rec.tenants:
        if args.tenant in (r.tenant_id, "all"):
            print(r.line())
    print(rec.summary_line())
    return 0 if rec.clean else 1


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.api.app import serve

    serve(settings)
    return 0


def register(sub: Any) -> None:
    inv = sub.add_parser("invoices", help="finance: list, show, export, trace and void invoices")
    isub = inv.add_subparsers(dest="invoices_command", required=True)
    ls = isub.add_parser("list", help="invoices of a period")
    ls.add_argument("--period", required=True, help="YYYY-MM")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    sh = isub.add_parser("show", help="one invoice with its lines")
    sh.add_argument("invoice_id")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)
    ex = isub.add_parser("export", help="a period's invoices as one CSV or PDFs")
    ex.add_argument("--period", required=True, help="YYYY-MM")
    ex.add_argument("--format", choices=("csv", "pdf"), required=True)
    ex.add_argument("--out", required=True, metavar="DIR")
    ex.set_defaults(func=cmd_export)
    tr = isub.add_parser("trace", help="an invoice line -> hourly usage rows -> event ids")
    tr.add_argument("line_id", help="<invoice id>/<line key>, as `invoices show` lists them")
    tr.add_argument("--limit", type=int, default=50, help="event ids to print")
    tr.set_defaults(func=cmd_trace)
    vo = isub.add_parser("void", help="void a finalized invoice and issue a credit note")
    vo.add_argument("invoice_id")
    vo.add_argument("--reason", required=True)
    vo.set_defaults(func=cmd_void)

    rc = sub.add_parser("reconcile", help="metered usage value vs invoiced, every difference")
    rc.add_argument("--period", required=True, help="YYYY-MM")
    rc.add_argument("--json", metavar="FILE", help="also write the per-tenant figures as JSON")
    rc.add_argument(
        "--tenant", default="", help="also print this tenant's line ('all': every tenant's)"
    )
    rc.set_defaults(func=cmd_reconcile)

    api = sub.add_parser("api", help="the finance HTTP API and the Stripe webhook endpoint")
    asub = api.add_subparsers(dest="api_command", required=True)
    sv = asub.add_parser("serve", help="run it (GPUMETER_API_HOST / GPUMETER_API_PORT)")
    sv.set_defaults(func=cmd_api)
