"""``/chargeback`` and the dashboard's HTTP side (issue 11) on an in-process ClickHouse (chdb):
who sees what, CSV (and its injection guard), hostile parameters, the session cookie and the
security headers. The browser itself is in tests/browser."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipeline.adapters.clickhouse import ChdbExecutor, migrate
from pipeline.adapters.ledger import Ledger
from pipeline.api import create_app
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.errors import ChargebackErrorCode
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.settings import REPO_ROOT, Settings, SettingsError
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row

pytestmark = [pytest.mark.chdb]

FINANCE = "fin_Zq81mW0vT5kLp3Nb"
RESEARCH = "team_research_9dK2s7QxV1"
VISION = "team_vision_4Hn6Lc0Rb8"
PARTNER = "partner_nw_2Jf5Tg9Yw3"
ODD = "team_odd_7Ue1Xa4Pm6"
TOKENS = (
    f"{FINANCE}=finance,{RESEARCH}=team:research,{VISION}=team:research/vision,"
    f"{PARTNER}=partner:northwind-cloud,{ODD}=team:research/../finance"
)
NOW = datetime(2026, 11, 10, tzinfo=UTC)  # October is closed (72 h grace)
CLUSTER = ("northwind-cloud-us-east-1-c1", "us-east-1", "northwind-cloud")
H = 3_600_000_000


def usage(
    ex: ChdbExecutor, tenant: str, hours: int, per_hour_us: int, project: str, model: str = "H100"
) -> None:
    cluster, region, provider = CLUSTER
    start = int(datetime(2026, 10, 3, tzinfo=UTC).timestamp())
    rows = [
        hourly_row(
            HourlyKey(tenant, start + 3600 * h, project, model, "", region, provider, cluster),
            Agg(per_hour_us, per_hour_us * 3 // 5, 1, h + 1),
            NOW,
        )
        for h in range(hours)
    ]
    ex.insert("usage_hourly", HOURLY_COLUMNS, rows)


@pytest.fixture(scope="module")
def app_env(
    tmp_path_factory: pytest.TempPathFactory, config: Config
) -> Iterator[tuple[TestClient, Any]]:
    tmp_path = tmp_path_factory.mktemp("cb_api")
    ex = ChdbExecutor(tmp_path / "chdb", "gm_cb_api")
    migrate(ex)
    usage(ex, "team-vision", 100, H, '=HYPERLINK("http://x")')
    usage(ex, "team-vision", 20, H // 2, "detector/v2")
    usage(ex, "team-llm-pretraining", 50, 2 * H, "pretrain", model="B200")
    usage(ex, "team-asr", 30, H, "asr-1", model="H200")
    usage(ex, "acme-ai", 40, H, "secret-customer-project")
    settings = Settings(
        api_tokens=SecretStr(TOKENS),
        config_dir=REPO_ROOT / "config",
        out_dir=tmp_path / "out",
    )
    app = create_app(settings, config=config, ledger=Ledger(ex), clock=lambda: NOW)
    app.state.chargeback.costs().build(Period.parse("2026-10"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, app
    ex.close()


def get(client: TestClient, url: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(url, headers=headers, **kw)


def test_finance_sees_everything_and_the_identity_holds(app_env: Any) -> None:
    client, _ = app_env
    r = get(client, "/chargeback/2026-10", FINANCE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "closed" and body["scope"] is None
    roots = {n["cost_centre"] for n in body["cost_centres"] if n["parent"] is None}
    assert roots == {"research", "speech", "external", "platform"}
    pl = body["platform"]
    assert float(pl["charged"]) + float(pl["unshared_idle"]) == pytest.approx(
        float(pl["platform_cost"]), abs=0.001
    )
    from decimal import Decimal

    assert Decimal(pl["charged"]) + Decimal(pl["unshared_idle"]) == Decimal(pl["platform_cost"])
    assert body["clusters"] and r.headers["content-security-policy"].startswith("default-src")


def test_a_team_sees_its_subtree_only_and_another_cost_centre_is_404(app_env: Any) -> None:
    client, _ = app_env
    body = get(client, "/chargeback/2026-10", RESEARCH).json()
    assert body["scope"] == "research"
    assert {n["cost_centre"] for n in body["cost_centres"]} == {
        "research",
        "research/vision",
        "research/llm-pretraining",
    }
    assert "platform" not in body and "clusters" not in body
    assert "secret-customer-project" not in str(body) and "acme" not in str(body)
    research = body["cost_centres"][0]
    kids = [
        n
        for n in body["cost_centres"]
        if n["parent"] == {"cost_centre": "research", "project": None}
    ]
    from decimal import Decimal

    assert research["subtotal"] is True
    assert Decimal(research["charged"]) == sum(Decimal(k["charged"]) for k in kids) + Decimal(
        research["own"]["charged"]
    )
    vision = get(client, "/chargeback/2026-10", VISION).json()
    assert vision["scope"] == "research/vision" and vision["headline"]["budget_status"]
    assert {n["cost_centre"] for n in vision["cost_centres"]} == {"research/vision"}
    for url in (
        "/chargeback/2026-10?cost_centre=research",
        "/chargeback/2026-10?cost_centre=research/llm-pretraining",
        "/chargeback/2026-10?cost_centre=speech/asr",
        "/chargeback/2026-10?cost_centre=external/acme-ai",
        "/chargeback/2026-10?cost_centre=platform/gpu",
        "/chargeback/2026-10?cost_centre=research/visionary",
        "/chargeback/2026-10/lines.csv?cost_centre=speech",
    ):
        r = get(client, url, VISION)
        assert r.status_code == 404, url
        assert r.json()["code"] == ChargebackErrorCode.NOT_FOUND.value
    ok = get(client, "/chargeback/2026-10?cost_centre=research/vision&project=detector/v2", VISION)
    assert ok.status_code == 200 and ok.json()["root"]["project"] == "detector/v2"


@pytest.mark.parametrize(
    ("token", "url", "status", "code"),
    [
        (None, "/chargeback/2026-10", 401, "chargeback.unauthorized"),
        ("not-a-token", "/chargeback/2026-10", 401, "chargeback.unauthorized"),
        (PARTNER, "/chargeback/2026-10", 403, "chargeback.forbidden"),
        (PARTNER, "/chargeback", 403, "chargeback.forbidden"),
        (ODD, "/chargeback/2026-10", 403, "chargeback.forbidden"),
        (FINANCE, "/chargeback/2026-13", 422, "chargeback.invalid_period"),
        (FINANCE, "/chargeback/%2e%2e", 422, "chargeback.invalid_period"),
        (FINANCE, "/chargeback/2026-10%00", 422, "chargeback.invalid_period"),
        (
            FINANCE,
            "/chargeback/2026-10?cost_centre=../finance",
            422,
            "chargeback.invalid_cost_centre",
        ),
        (
            FINANCE,
            "/chargeback/2026-10?cost_centre=research%2F%2Fvision",
            422,
            "chargeback.invalid_cost_centre",
        ),
        (
            FINANCE,
            "/chargeback/2026-10?cost_centre=r%C3%A9search",
            422,
            "chargeback.invalid_cost_centre",
        ),
        (
            FINANCE,
            "/chargeback/2026-10?cost_centre=" + "a" * 400,
            422,
            "chargeback.invalid_cost_centre",
        ),
        (FINANCE, "/chargeback/2026-10?project=x", 422, "chargeback.invalid_cost_centre"),
        (
            FINANCE,
            "/chargeback/2026-10?cost_centre=research/vision&project=%07bell",
            422,
            "chargeback.invalid_cost_centre",
        ),
        (FINANCE, "/chargeback/2026-10?cost_centre=nobody/here", 404, "chargeback.not_found"),
        (FINANCE, "/chargeback/2026-09", 404, "chargeback.not_found"),
    ],
)
def test_hostile_and_unauthorised_requests_get_stable_codes(
    app_env: Any, token: str | None, url: str, status: int, code: str
) -> None:
    client, _ = app_env
    r = get(client, url, token)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert set(r.json()) == {"code", "message"}


def test_lines_csv_adds_up_and_cannot_inject_formulas(app_env: Any) -> None:
    client, _ = app_env
    r = get(client, "/chargeback/2026-10/lines.csv", VISION)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    projects = {row["project"] for row in rows}
    assert '\'=HYPERLINK("http://x")' in projects and "detector/v2" in projects
    for row in rows:
        for cell in row.values():
            assert not cell or cell[0] not in "=+@" or cell.startswith("'")
    from decimal import Decimal

    body = get(client, "/chargeback/2026-10", VISION).json()
    assert sum(Decimal(row["amount"]) for row in rows) == Decimal(body["totals"]["charged"])


def test_dashboard_login_sets_a_signed_httponly_strict_cookie(app_env: Any) -> None:
    client, app = app_env
    client.cookies.clear()
    assert client.get("/dashboard").status_code == 200  # the login form
    bad = client.post("/dashboard/login", data={"token": "nope"})
    assert bad.status_code == 401 and "gpumeter_session" not in bad.headers.get("set-cookie", "")
    partner = client.post("/dashboard/login", data={"token": PARTNER}, follow_redirects=False)
    assert partner.status_code == 403
    evil = client.post(
        "/dashboard/login",
        data={"token": VISION},
        headers={"Origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert evil.status_code == 400
    ok = client.post("/dashboard/login", data={"token": VISION}, follow_redirects=False)
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Max-Age=1800" in cookie and VISION not in cookie
    page = client.get("/dashboard/2026-10")
    assert page.status_code == 200 and "headline-mtd" in page.text
    assert VISION not in page.text and "secret-customer-project" not in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "http" not in csp
    # the page's CSV link works with the cookie; another team's page is refused
    assert client.get("/chargeback/2026-10/lines.csv").status_code == 200
    refused = client.get("/dashboard/2026-10?cost_centre=speech/asr")
    assert refused.status_code == 404 and "chargeback.not_found" in refused.text
    # a forged or tampered cookie is no session
    value = cookie.split(";")[0].split("=", 1)[1]
    client.cookies.clear()
    client.cookies.set("gpumeter_session", value[:-2] + "xx")
    assert client.get("/chargeback/2026-10").status_code == 401
    # the vendored chart library is served by the app itself
    js = client.get("/dashboard/static/vendor/chart.umd.min.js")
    assert js.status_code == 200 and "Chart.js v4" in js.text[:200]
    client.cookies.clear()


def test_the_api_refuses_to_start_without_a_dashboard_secret(config: Config) -> None:
    settings = Settings(api_tokens=SecretStr(TOKENS), dashboard_secret=SecretStr(""))
    with pytest.raises(SettingsError, match="GPUMETER_DASHBOARD_SECRET"):
        create_app(settings, config=config)
    short = Settings(api_tokens=SecretStr(TOKENS), dashboard_secret=SecretStr("short"))
    with pytest.raises(SettingsError, match="too short"):
        create_app(short, config=config)
