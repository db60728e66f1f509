"""Team cost commands (issue 11): ``gpumeter chargeback build|show|budgets``. Thin: the work
is in :mod:`pipeline.billing.teams`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from pipeline.domain.errors import ChargebackError, ChargebackErrorCode
from pipeline.domain.money import from_minor
from pipeline.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


def _costs(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.bootstrap import store, team_costs
    from pipeline.config import Config

    config = Config.load(settings.config_dir)
    st = store(settings)
    args.resources.callback(st.ex.close)
    return team_costs(settings, config, st, clock=_now)


def period_of(text: str) -> Any:
    """A ``YYYY-MM`` period, or :data:`ChargebackErrorCode.INVALID_PERIOD`."""
    from pipeline.domain.errors import BillingError
    from pipeline.domain.period import Period

    try:
        return Period.parse(text)
    except BillingError as exc:
        raise ChargebackError(ChargebackErrorCode.INVALID_PERIOD, exc.message) from None


def _fail(exc: ChargebackError) -> int:
    print(f"chargeback: {exc}", file=sys.stderr)
    return 2


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    try:
        r = _costs(args, settings).build(period_of(args.period))
    except ChargebackError as exc:
        return _fail(exc)
    cur = r.currency

    def m(v: int) -> str:
        return f"{from_minor(v, cur)}"

    print(
        f"chargeback build: period={r.period} revision={r.revision} status={r.status} "
        f"lines={r.lines} platform_cost={cur}:{m(r.platform_cost_minor)} "
        f"charged={cur}:{m(r.usage_minor + r.idle_share_minor)} (use {m(r.usage_minor)} + "
        f"idle share {m(r.idle_share_minor)}) unshared_idle={cur}:{m(r.idle_minor)} "
        f"adjustments={cur}:{m(r.adjustment_minor)}"
    )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.api.chargeback import report_json

    try:
        costs = _costs(args, settings)
        focus = None
        if args.cost_centre:
            from pipeline.api.chargeback import focus_of

            focus = focus_of(args.cost_centre, None)
        view = costs.view(period_of(args.period), None, focus)
    except ChargebackError as exc:
        return _fail(exc)
    body = report_json(view)
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 0
    print(
        f"period {body['period']} ({body['status']}, revision {body['revision']}, "
        f"as of {body['as_of']}), {body['currency']}"
    )
    print(
        f"{'cost centre':<48} {'GPU-h':>12} {'eff.':>6} {'use':>12} {'idle share':>11} "
        f"{'charged':>12} budget"
    )
    for n in body["cost_centres"]:
        name = "  " * (n["level"] - 1) + (n["project"] if n["project"] is not None else n["name"])
        budget = n["budget"]["status"] if n["budget"] else ""
        eff = f"{n['efficiency_pct']}%" if n["efficiency_pct"] is not None else ""
        print(
            f"{name[:48]:<48} {n['gpu_hours']:>12} {eff:>6} {n['usage_cost']:>12} "
            f"{n['idle_share']:>11} {n['charged']:>12} {budget}"
        )
    if body.get("platform"):
        pl = body["platform"]
        print(
            f"platform cost {pl['platform_cost']} = charged {pl['charged']} + unshared idle "
            f"{pl['unshared_idle']} (idle shared: {pl['shared_idle']})"
        )
    return 0


def cmd_budgets(args: argparse.Namespace, settings: Settings) -> int:
    """Every budget in force in the period; exits 1 when any is over."""
    try:
        costs = _costs(args, settings)
        period = period_of(args.period)
        rows = costs.budget_list(period)
        currency = costs.team.capacity.currency
    except ChargebackError as exc:
        return _fail(exc)
    out = [
        {
            "cost_centre": b.cost_centre,
            "budget": str(from_minor(b.budget_minor, currency)),
            "month_to_date": str(from_minor(b.mtd_minor, currency)),
            "projected": str(from_minor(b.projected_minor, currency)),
            "status": b.status,
            "currency": currency,
        }
        for b in rows
    ]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'cost centre':<32} {'budget':>12} {'month to date':>14} {'projected':>12} status")
        for b in out:
            print(
                f"{b['cost_centre']:<32} {b['budget']:>12} {b['month_to_date']:>14} "
                f"{b['projected']:>12} {b['status']}"
            )
    over = [b["cost_centre"] for b in out if b["status"] == "over"]
    if over:
        print(f"budgets: {len(over)} over in {period}: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    cb = sub.add_parser("chargeback", help="team cost: hierarchy, idle capacity, budgets")
    csub = cb.add_subparsers(dest="chargeback_command", required=True)
    b = csub.add_parser("build", help="allocate a period's platform cost (draft, then closed)")
    b.add_argument("--period", required=True, help="YYYY-MM")
    b.set_defaults(func=cmd_build)
    s = csub.add_parser("show", help="a period's report down the hierarchy")
    s.add_argument("--period", required=True, help="YYYY-MM")
    s.add_argument("--cost-centre", default="", help="only this cost centre's subtree")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
    bu = csub.add_parser("budgets", help="budgets of a period; exits 1 when any is over")
    bu.add_argument("--period", required=True, help="YYYY-MM")
    bu.add_argument("--json", action="store_true")
    bu.set_defaults(func=cmd_budgets)
