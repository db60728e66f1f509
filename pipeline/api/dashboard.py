"""The team dashboard (issue 11): a web page served by the finance API for people who would
rather look than read.

* ``GET /dashboard``: a login form (a token, once, in a POST body: never in a URL), then the
  latest period the caller can see;
* ``POST /dashboard/login`` checks the token like the API does and sets a **session cookie**:
  signed with ``GPUMETER_DASHBOARD_SECRET`` (itsdangerous, HMAC-SHA1 over a timestamped
  payload holding the role and subject, never the token), ``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` unless served over plain HTTP on a loopback address, valid
  ``GPUMETER_DASHBOARD_SESSION_MINUTES`` (30) and honoured only while a configured token still
  grants its role; ``POST /dashboard/logout`` clears it. Both POSTs refuse another origin;
* ``GET /dashboard/{period}[?cost_centre=&project=]``: the page: month-to-date cost and the
  run-rate projection against the budget, daily cost by GPU model (a chart), the breakdown
  down the hierarchy (subtotal rows labelled), efficiency and idle, the line list and the CSV
  download (``/chargeback/{period}/lines.csv``, with the same cookie). Every number comes
  from :func:`pipeline.api.chargeback.report_json`, the dict ``GET /chargeback/{period}``
  answers; another team's cost centre is 404 as in the API.

Everything the page loads comes from this app: the chart is drawn by Chart.js, vendored under
``static/vendor`` (see its README), and every dashboard response carries a
Content-Security-Policy that allows scripts, styles, images and requests from this origin only
(no inline script or style: the chart's data is a JSON data block read by ``dashboard.js``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from pipeline.api.auth import Principal, TokenAuth
from pipeline.domain.errors import ChargebackError, ChargebackErrorCode
from pipeline.settings import Settings, SettingsError, required

if TYPE_CHECKING:
    from pipeline.api.chargeback import Access
    from pipeline.billing.teams import ReportView

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
COOKIE = "gpumeter_session"
MIN_SECRET = 32
MAX_LOGIN_BODY = 4096
LINES_SHOWN = 1000
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on a form
    # POST, and the login's origin check needs the real one
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class Sessions:
    """Signed, short-lived session cookies (see the module doc)."""

    def __init__(self, secret: str, max_age_s: int, auth: TokenAuth) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="gpumeter.dashboard.session")
        self.max_age_s = max_age_s
        self.auth = auth

    @classmethod
    def from_settings(cls, settings: Settings, auth: TokenAuth) -> Sessions:
        secret = required(
            settings.dashboard_secret,
            "dashboard_secret",
            "the team dashboard signs its session cookies with it",
        ).get_secret_value()
        if len(secret) < MIN_SECRET:
            raise SettingsError(
                f"GPUMETER_DASHBOARD_SECRET is too short: at least {MIN_SECRET} characters"
            )
        return cls(secret, settings.dashboard_session_minutes * 60, auth)

    def issue(self, principal: Principal) -> str:
        return str(self._signer.dumps({"r": principal.role, "s": principal.subject}))

    def read(self, request: Request) -> Principal | None:
        value = request.cookies.get(COOKIE)
        if not value or len(value) > 1024:
            return None
        try:
            data = self._signer.loads(value, max_age=self.max_age_s)
        except BadSignature:  # expired sessions too (SignatureExpired is one)
            return None
        if not isinstance(data, dict):
            return None
        principal = Principal(str(data.get("r", "")), str(data.get("s", "")))
        return principal if self.auth.grants(principal) else None

    def set(self, response: Response, request: Request, principal: Principal) -> None:
        response.set_cookie(
            COOKIE,
            self.issue(principal),
            max_age=self.max_age_s,
            path="/",
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )

    def clear(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
        )


def _secure(request: Request) -> bool:
    """Secure cookies, except over plain HTTP on a loopback address (the local demo)."""
    return request.url.scheme == "https" or (request.url.hostname or "") not in LOOPBACK


def _same_origin(request: Request) -> bool:
    """A form POST from this app's own pages (a browser's Origin and Sec-Fetch-Site say so;
    a client that sends neither, such as curl, is let through: it holds the token anyway)."""
    site = request.headers.get("sec-fetch-site")
    if site not in (None, "same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or (origin == "null" and site == "same-origin"):
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def _page(name: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=http_status, headers={"Cache-Control": "no-store"})


def error_page(exc: ChargebackError, status: int) -> HTMLResponse:
    return _page("error.html", status, code=exc.code.value, message=exc.message, status=status)


def _json_block(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` data block: nothing in it can close
    the element or start markup."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return Markup(text)


def _label(p: Principal) -> str:
    return "finance" if p.role == "finance" else f"{p.role} {p.subject}"


def _link(period: str, cost_centre: str | None = None, project: str | None = None) -> str:
    q = {k: v for k, v in (("cost_centre", cost_centre), ("project", project)) if v}
    return f"/dashboard/{period}" + (f"?{urlencode(q)}" if q else "")


def _lines(view: ReportView) -> list[dict[str, Any]]:
    from pipeline.api.chargeback import hours, money, pct

    out = []
    for ln in view.lines[:LINES_SHOWN]:
        eff = ln.busy_gpu_hours / ln.gpu_hours if ln.kind == "usage" and ln.gpu_hours else None
        what = {
            "usage": f"{ln.gpu_model}{' ' + ln.mig_profile if ln.mig_profile else ''} GPU-hours",
            "idle_share": f"share of idle {ln.gpu_model} capacity",
            "idle": f"idle {ln.gpu_model} capacity (not shared)",
        }[ln.kind]
        out.append(
            {
                "description": what
                + (f" (late usage of {ln.period_ref})" if ln.period_ref != view.period else ""),
                "kind": ln.kind,
                "cost_centre": ln.node.cost_centre,
                "project": ln.node.project or "",
                "cluster": ln.cluster,
                "gpu_hours": hours(ln.gpu_hours if ln.kind == "usage" else ln.idle_gpu_hours),
                "efficiency_pct": pct(eff),
                "amount": money(ln.amount_minor, view.currency),
            }
        )
    return out


def _up(view: ReportView) -> str | None:
    """The page one level up from the view's root, if the caller may see it."""
    parent = view.focus.parent if view.focus.path else None
    if parent is None or not parent.within(view.scope):
        return None
    if view.scope is not None and len(parent.path) < len(view.scope):
        return None
    return _link(view.period, parent.cost_centre, parent.project)


def install(app: FastAPI, access: Access, auth: TokenAuth, sessions: Sessions) -> None:
    from pipeline.api.chargeback import money, period_param, report_json, scope_of

    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if request.url.path.startswith(("/dashboard", "/chargeback")):
            for k, v in SECURITY_HEADERS.items():
                response.headers.setdefault(k, v)
        return response

    @app.get("/dashboard", include_in_schema=False)
    def home(request: Request) -> Response:
        who = sessions.read(request)
        if who is None:
            return _page("login.html")
        periods = access.periods(who)
        if not periods:
            raise ChargebackError(
                ChargebackErrorCode.NOT_FOUND,
                "no team cost report yet (gpumeter chargeback build --period YYYY-MM)",
            )
        return RedirectResponse(_link(periods[0]), status_code=303)

    @app.post("/dashboard/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            raise ChargebackError(ChargebackErrorCode.INVALID_REQUEST, "cross-origin login refused")
        body = await request.body()
        if len(body) > MAX_LOGIN_BODY:
            raise ChargebackError(ChargebackErrorCode.INVALID_REQUEST, "login form too large")
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            raise ChargebackError(
                ChargebackErrorCode.INVALID_REQUEST, "unreadable login form"
            ) from None
        token = (form.get("token") or [""])[0].strip()
        who = auth.authenticate(token)
        if who is None:
            return _page("login.html", 401, error="Unknown token.")
        scope_of(who)  # a partner token: 403, no session
        response = RedirectResponse("/dashboard", status_code=303)
        sessions.set(response, request, who)
        return response

    @app.post("/dashboard/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if not _same_origin(request):
            raise ChargebackError(
                ChargebackErrorCode.INVALID_REQUEST, "cross-origin logout refused"
            )
        response = RedirectResponse("/dashboard", status_code=303)
        sessions.clear(response, request)
        return response

    @app.get("/dashboard/{period}", include_in_schema=False)
    def page(
        request: Request,
        period: str,
        cost_centre: str | None = None,
        project: str | None = None,
    ) -> Response:
        who = sessions.read(request)
        if who is None:
            return RedirectResponse("/dashboard", status_code=303)
        p = str(period_param(period))
        view = access.view(who, p, cost_centre, project)
        report = report_json(view)
        for n in report["cost_centres"]:
            n["link"] = _link(p, n["cost_centre"], n["project"])
        root = report["root"] or {}
        csv_q = {k: v for k, v in root.items() if v}
        return _page(
            "dashboard.html",
            r=report,
            who=_label(who),
            finance=who.role == "finance",
            periods=[(q, _link(q, cost_centre, project)) for q in access.periods(who)],
            lines=_lines(view),
            lines_total=len(view.lines),
            lines_sum=money(sum(ln.amount_minor for ln in view.lines), view.currency),
            lines_shown=min(len(view.lines), LINES_SHOWN),
            csv_url=f"/chargeback/{p}/lines.csv" + (f"?{urlencode(csv_q)}" if csv_q else ""),
            up=_up(view),
            top=_link(p) if root and view.focus.path != (view.scope or ()) else None,
            daily=_json_block(report["daily"]),
        )
