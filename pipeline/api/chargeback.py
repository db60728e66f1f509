"""Team cost through the API (issue 11, docs/chargeback.md).

* ``GET /chargeback``                          periods with a report
* ``GET /chargeback/{period}``                 the caller's subtree: cost centres (and
  projects) with parent, GPU-hours, busy GPU-hours, efficiency, use, idle share, charged,
  currency, budget status; daily cost by GPU model; idle
* ``GET /chargeback/{period}/lines.csv``       the line list behind it, as CSV

``?cost_centre=a/b[&project=p]`` roots the answer at a node inside the caller's view.

Who sees what: a ``finance`` token everything (external customers' consumption at cost and
the platform's unshared idle included); a ``team:<cost centre>`` token its cost centre and
what is below it, and a cost centre outside it answers 404 exactly as one that does not exist
(``chargeback.not_found``); a partner token 403. The bearer token or the dashboard's session
cookie (:mod:`pipeline.api.dashboard`) authenticates. Errors are
``{"code": "chargeback....", "message": "..."}``; the numbers are those of
:meth:`pipeline.billing.teams.TeamCosts.view`, which the dashboard and the CLI render too.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from pipeline.api.auth import FINANCE, Principal, TokenAuth
from pipeline.domain.errors import BillingError, ChargebackError, ChargebackErrorCode
from pipeline.domain.hierarchy import NodeKey, parse_cost_centre
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period

if TYPE_CHECKING:
    from pipeline.billing.teams import ReportView, TeamCosts

HTTP_STATUS: dict[ChargebackErrorCode, int] = {
    ChargebackErrorCode.INVALID_PERIOD: 422,
    ChargebackErrorCode.INVALID_COST_CENTRE: 422,
    ChargebackErrorCode.UNAUTHORIZED: 401,
    ChargebackErrorCode.FORBIDDEN: 403,
    ChargebackErrorCode.NOT_FOUND: 404,
    ChargebackErrorCode.INVALID_REQUEST: 400,
}
TEAM = "team"
MAX_PROJECT = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CSV_HEADER = [
    "period",
    "usage_period",
    "kind",
    "cost_centre",
    "project",
    "tenant_id",
    "cluster",
    "gpu_model",
    "mig_profile",
    "gpu_hours",
    "busy_gpu_hours",
    "efficiency_pct",
    "idle_gpu_hours",
    "amount",
    "currency",
]


# -- parameters -------------------------------------------------------------------------------
def period_param(text: str) -> Period:
    try:
        return Period.parse(text)
    except BillingError:
        raise ChargebackError(
            ChargebackErrorCode.INVALID_PERIOD,
            f"period {text[:20]!r} is not of the form YYYY-MM (for example 2026-10)",
        ) from None


def focus_of(cost_centre: str | None, project: str | None) -> NodeKey | None:
    """The node ``?cost_centre=&project=`` names (None when neither is given)."""
    if not cost_centre:
        if project:
            raise ChargebackError(
                ChargebackErrorCode.INVALID_COST_CENTRE, "project needs a cost_centre"
            )
        return None
    try:
        path = parse_cost_centre(cost_centre)
    except ValueError as exc:
        raise ChargebackError(ChargebackErrorCode.INVALID_COST_CENTRE, str(exc)) from None
    if project is not None and project != "":
        if len(project) > MAX_PROJECT or _CONTROL.search(project):
            raise ChargebackError(
                ChargebackErrorCode.INVALID_COST_CENTRE,
                f"a project is 1-{MAX_PROJECT} characters without control characters",
            )
        return NodeKey(path, project)
    return NodeKey(path)


def scope_of(principal: Principal) -> tuple[str, ...] | None:
    """What a principal may see: None for finance (everything), a team's cost-centre path;
    :data:`ChargebackErrorCode.FORBIDDEN` for any other role."""
    if principal.role == FINANCE:
        return None
    if principal.role == TEAM:
        try:
            return parse_cost_centre(principal.subject)
        except ValueError:
            raise ChargebackError(
                ChargebackErrorCode.FORBIDDEN, "the token's cost centre is not a valid path"
            ) from None
    raise ChargebackError(
        ChargebackErrorCode.FORBIDDEN, "team cost is for finance and team tokens only"
    )


# -- rendering (the API, the dashboard and the CLI) -------------------------------------------
def money(minor: int, currency: str) -> str:
    return str(from_minor(minor, currency))


def hours(x: Fraction, places: int = 3) -> str:
    d = Decimal(x.numerator) / Decimal(x.denominator)
    return str(d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def pct(x: Fraction | None) -> str | None:
    if x is None:
        return None
    return hours(x * 100, 1)


def report_json(view: ReportView) -> dict[str, Any]:
    """The report as the API answers it (the dashboard renders this same dict)."""
    cur = view.currency
    focus = view.focus if view.focus.path else None

    def figures(f: Any) -> dict[str, Any]:
        return {
            "gpu_hours": hours(f.gpu_hours),
            "busy_gpu_hours": hours(f.busy_gpu_hours),
            "efficiency_pct": pct(f.efficiency),
            "energy_kwh": None,  # the collectors' energy is not stored yet
            "usage_cost": money(f.usage_minor, cur),
            "idle_share": money(f.idle_share_minor, cur),
            "charged": money(f.charged_minor, cur),
            "adjustments": money(f.adjustment_minor, cur),
        }

    nodes = []
    base = min((n.key.depth for n in view.nodes), default=1)
    for n in view.nodes:
        parent = n.key.parent
        budget = view.budgets.get(n.key.path) if n.key.project is None else None
        nodes.append(
            {
                "cost_centre": n.key.cost_centre,
                "project": n.key.project,
                "name": n.key.project if n.key.project is not None else n.key.path[-1],
                "parent": (
                    {"cost_centre": parent.cost_centre, "project": parent.project}
                    if parent is not None and any(m.key == parent for m in view.nodes)
                    else None
                ),
                "level": n.key.depth - base + 1,
                "subtotal": n.is_subtotal,
                **figures(n.total),
                "own": figures(n.own),
                "budget": (
                    {
                        "budget": money(budget.budget_minor, cur),
                        "month_to_date": money(budget.mtd_minor, cur),
                        "projected": money(budget.projected_minor, cur),
                        "status": budget.status,
                    }
                    if budget is not None
                    else None
                ),
            }
        )
    totals = view.totals
    root_budget = view.budgets.get(view.focus.path) if focus and focus.project is None else None
    from pipeline.domain.budgets import projected_minor

    period = Period.parse(view.period)
    # finance's whole view: the platform's cost (charged + unshared idle); otherwise what the
    # view's root is charged
    mtd = view.platform_cost_minor if view.platform_cost_minor is not None else totals.charged_minor
    projection = projected_minor(
        mtd - totals.adjustment_minor, totals.adjustment_minor, period, view.as_of
    )
    idle: dict[tuple[str, str], list[Any]] = {}
    for ln in view.lines:
        if ln.kind == "usage":
            continue
        row = idle.setdefault((ln.cluster, ln.gpu_model), [Fraction(0), 0])
        row[0] += ln.idle_gpu_hours
        row[1] += ln.amount_minor
    body: dict[str, Any] = {
        "period": view.period,
        "revision": view.revision,
        "status": view.status,
        "as_of": view.as_of.astimezone(UTC).isoformat(),
        "currency": cur,
        "scope": "/".join(view.scope) if view.scope is not None else None,
        "root": {"cost_centre": focus.cost_centre, "project": focus.project} if focus else None,
        "headline": {
            "of": "platform cost" if view.platform_cost_minor is not None else "charged",
            "month_to_date": money(mtd, cur),
            "projected": money(projection, cur),
            "budget": money(root_budget.budget_minor, cur) if root_budget else None,
            "budget_status": root_budget.status if root_budget else None,
        },
        "totals": figures(totals),
        "cost_centres": nodes,
        "daily": [
            {
                "date": (period.start + timedelta(days=day - 1)).date().isoformat(),
                "gpu_model": model,
                "usage_cost": money(minor, cur),
            }
            for (day, model), minor in view.daily.items()
        ],
        "idle": [
            {
                "cluster": c,
                "gpu_model": m,
                "idle_gpu_hours": hours(v[0]),
                "idle_cost": money(v[1], cur),
            }
            for (c, m), v in sorted(idle.items())
        ],
        "lines": len(view.lines),
    }
    if view.scope is None:
        body["clusters"] = [
            {
                **{k: u[k] for k in ("cluster", "gpu_model", "provider", "region")},
                "ownership": u["ownership"],
                "idle_policy": u["idle_policy"],
                "capacity_gpu_hours": hours(Fraction(u["capacity_gpu_hours"])),
                "allocated_gpu_hours": hours(Fraction(u["allocated_gpu_hours"])),
                "idle_gpu_hours": hours(Fraction(u["idle_gpu_hours"])),
                "over_capacity_gpu_hours": hours(Fraction(u["over_capacity_gpu_hours"])),
                "platform_cost": money(u["platform_cost_minor"], cur),
                "idle_cost": money(u["idle_cost_minor"], cur),
                "shared_idle": money(u["shared_idle_minor"], cur),
            }
            for u in view.units
        ]
    if view.platform_cost_minor is not None:
        unshared = totals.idle_minor
        body["platform"] = {
            "platform_cost": money(view.platform_cost_minor, cur),
            "charged": money(totals.charged_minor, cur),
            "usage_cost": money(totals.usage_minor, cur),
            "shared_idle": money(totals.idle_share_minor, cur),
            "unshared_idle": money(unshared, cur),
            "adjustments": money(totals.adjustment_minor, cur),
        }
    return body


def safe_cell(value: str) -> str:
    """A text cell a spreadsheet will not run: one starting with = + - @ (or a tab or carriage
    return) gets a leading apostrophe (OWASP's CSV injection advice)."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value


def lines_csv(view: ReportView) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADER)
    cur = view.currency
    for ln in view.lines:
        eff = ln.busy_gpu_hours / ln.gpu_hours if ln.kind == "usage" and ln.gpu_hours else None
        w.writerow(
            [
                view.period,
                ln.period_ref,
                ln.kind,
                safe_cell(ln.node.cost_centre),
                safe_cell(ln.node.project or ""),
                safe_cell(ln.tenant_id),
                safe_cell(ln.cluster),
                safe_cell(ln.gpu_model),
                safe_cell(ln.mig_profile),
                hours(ln.gpu_hours, 6),
                hours(ln.busy_gpu_hours, 6),
                pct(eff) or "",
                hours(ln.idle_gpu_hours, 6),
                money(ln.amount_minor, cur),
                cur,
            ]
        )
    return buf.getvalue()


# -- wiring -----------------------------------------------------------------------------------
def principal(request: Request) -> Principal:
    """The caller: a bearer token, else the dashboard's session cookie; 401 without either."""
    auth, sessions = request.app.state.chargeback_auth
    header = request.headers.get("authorization")
    found: Principal | None
    if header is not None:
        scheme, _, token = header.partition(" ")
        found = auth.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    else:
        found = sessions.read(request)
    if found is None:
        raise ChargebackError(
            ChargebackErrorCode.UNAUTHORIZED,
            "missing or unknown bearer token (Authorization: Bearer <token>) or session",
        )
    return found


Who = Annotated[Principal, Depends(principal)]
CostCentreQ = Annotated[
    str | None, Query(description="root the answer at this cost centre (a/b/c)")
]
ProjectQ = Annotated[str | None, Query(description="a project of that cost centre")]


@dataclass
class Access:
    """How the chargeback routes reach the report: the app's lock around ClickHouse and a
    lazily built :class:`TeamCosts`."""

    lock: threading.RLock
    build: Callable[[], TeamCosts]
    _costs: TeamCosts | None = None

    def costs(self) -> TeamCosts:
        with self.lock:
            if self._costs is None:
                self._costs = self.build()
            return self._costs

    def view(
        self, principal: Principal, period: str, cost_centre: str | None, project: str | None
    ) -> ReportView:
        scope = scope_of(principal)
        p = period_param(period)
        focus = focus_of(cost_centre, project)
        with self.lock:
            return self.costs().view(p, scope, focus)

    def periods(self, principal: Principal) -> list[str]:
        scope_of(principal)
        with self.lock:
            return self.costs().periods()


def error_response(exc: ChargebackError) -> JSONResponse:
    status = HTTP_STATUS.get(exc.code, 500)
    return JSONResponse(
        {"code": exc.code.value, "message": exc.message},
        status_code=status,
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


def install(app: FastAPI, services: Any, auth: TokenAuth) -> Access:
    """Add ``/chargeback`` and the dashboard (:mod:`pipeline.api.dashboard`) to ``app``. The
    report is built on first use from the app's services (settings, configuration, ClickHouse);
    a test may set ``app.state.chargeback._costs``. Raises
    :class:`~pipeline.settings.SettingsError` without a usable dashboard secret."""
    from pipeline.api import dashboard

    def build() -> TeamCosts:
        from pipeline.adapters.store import Store
        from pipeline.bootstrap import team_costs

        return team_costs(
            services.settings, services.config, Store(services.ledger.ex), clock=services.clock
        )

    access = Access(services.lock, build)
    from pipeline.bootstrap import dashboard_sessions

    sessions = dashboard_sessions(services.settings, auth)
    app.state.chargeback = access
    app.state.chargeback_auth = (auth, sessions)

    @app.exception_handler(ChargebackError)
    async def chargeback_error(request: Request, exc: ChargebackError) -> Response:
        if request.url.path.startswith("/dashboard"):
            return dashboard.error_page(exc, HTTP_STATUS.get(exc.code, 500))
        return error_response(exc)

    router = APIRouter(prefix="/chargeback", tags=["chargeback"])
    errors: dict[int | str, dict[str, Any]] = {
        c: {"description": "error", "content": {"application/json": {}}}
        for c in (401, 403, 404, 422)
    }

    @router.get("", summary="Periods with a team cost report", responses=errors)
    def periods(who: Who) -> dict[str, list[str]]:
        return {"periods": access.periods(who)}

    @router.get("/{period}", summary="A period's team cost, the caller's subtree", responses=errors)
    def report(
        period: str, who: Who, cost_centre: CostCentreQ = None, project: ProjectQ = None
    ) -> dict[str, Any]:
        return report_json(access.view(who, period, cost_centre, project))

    @router.get(
        "/{period}/lines.csv",
        response_class=Response,
        summary="The lines behind it, as CSV",
        responses={200: {"content": {"text/csv": {}}}, **errors},
    )
    def lines(
        period: str, who: Who, cost_centre: CostCentreQ = None, project: ProjectQ = None
    ) -> Response:
        view = access.view(who, period, cost_centre, project)
        return Response(
            lines_csv(view),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="chargeback-{view.period}.csv"',
                "Cache-Control": "no-store",
            },
        )

    app.include_router(router)
    dashboard.install(app, access, auth, sessions)
    return access
