"""The team dashboard in a real browser (issue 11): Debian's headless Chromium driven by
Selenium through chromium-driver, against the app served by uvicorn on a loopback port, with
a month of the simulated fleet's usage (its ground truth written to an in-process ClickHouse).

A team logs in with its token once, reads the headline and the totals off the page and checks
them against the report's ledger (``team_cost_lines``, summed by ClickHouse) to the cent, sees
the chart drawn by the vendored Chart.js under the page's CSP, opens another team's page and
is refused, and a screenshot is saved (``out/test-artifacts/``, or
``$GPUMETER_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.adapters.clickhouse import ChdbExecutor, migrate
from pipeline.adapters.ledger import Ledger
from pipeline.api import create_app
from pipeline.config import Config
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.settings import REPO_ROOT, Settings

pytestmark = [pytest.mark.browser, pytest.mark.chdb, pytest.mark.slow]

FINANCE = "fin_browser_5Xv9Qe2Lm7Rt"
RESEARCH = "team_research_browser_8Kp3Zw6Jd1"
ASR = "team_asr_browser_2Hq7Nc4Vb9"
TOKENS = f"{FINANCE}=finance,{RESEARCH}=team:research,{ASR}=team:speech/asr"
PERIOD = Period.parse("2026-10")
NOW = datetime(2026, 11, 20, tzinfo=UTC)
ARTIFACTS = Path(os.environ.get("GPUMETER_TEST_ARTIFACTS", REPO_ROOT / "out" / "test-artifacts"))


def load_month(ex: ChdbExecutor, config: Config, nodes: int = 10) -> None:
    """A month of the simulator's ground truth (its job schedule, not its events) as hourly
    rows, busy time from each row's key so efficiency varies."""
    import hashlib

    from devtools.sim.run import plan
    from devtools.sim.truth import ground_truth
    from pipeline.domain.aggregate import Agg
    from pipeline.domain.usage import HourlyKey
    from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row

    _fleet, jobs = plan(config, PERIOD, nodes, 300, 42)
    truth = ground_truth([j for js in jobs for j in js])
    rows = []
    for (tenant, hour, project, model, mig, region, provider, cluster), us in truth.items():
        hour_s = int(datetime.strptime(hour, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        key = HourlyKey(tenant, hour_s, project, model, mig, region, provider, cluster)
        pct = 30 + hashlib.sha256(f"{tenant}{project}".encode()).digest()[0] % 60
        rows.append(hourly_row(key, Agg(us, us * pct // 100, 1, 1), NOW))
    ex.insert("usage_hourly", HOURLY_COLUMNS, rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, config: Config) -> Iterator[dict[str, Any]]:
    import uvicorn

    tmp = tmp_path_factory.mktemp("browser")
    ex = ChdbExecutor(tmp / "chdb", "gm_browser")
    migrate(ex)
    load_month(ex, config)
    settings = Settings(api_tokens=SecretStr(TOKENS), config_dir=REPO_ROOT / "config")
    app = create_app(settings, config=config, ledger=Ledger(ex), clock=lambda: NOW)
    built = app.state.chargeback.costs().build(PERIOD)
    assert built.status == "closed"
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield {"base": f"http://127.0.0.1:{port}", "ex": ex, "revision": built.revision}
    server.should_exit = True
    thread.join(timeout=10)
    ex.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "headless Chromium is missing: make browser (infra/browser.sh)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,2400",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def ledger_minor(ex: ChdbExecutor, revision: int, cost_centre: str) -> int:
    """What the report's ledger charges a cost centre's subtree, summed by ClickHouse."""
    rows = ex.execute(
        "SELECT sum(amount_minor) FROM team_cost_lines FINAL WHERE period = %(p)s "
        "AND revision = %(r)s AND (cost_centre = %(cc)s OR startsWith(cost_centre, %(prefix)s))",
        {"p": str(PERIOD), "r": revision, "cc": cost_centre, "prefix": cost_centre + "/"},
    )
    return int(rows[0][0] or 0)


def login(d: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    d.get(base + "/dashboard")
    box = d.find_element(By.ID, "token")
    box.send_keys(token)
    d.find_element(By.ID, "login-submit").click()
    wait_for(d, "headline-mtd")


def wait_for(d: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(d, 30).until(ec.presence_of_element_located((By.ID, element_id)))
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / f"failed-waiting-for-{element_id}.png"))
        raise AssertionError(
            f"no #{element_id} on {d.current_url}: {d.page_source[:2000]}"
        ) from None


def text(d: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(d.find_element(By.ID, element_id).text).strip()


def test_a_team_sees_its_cost_to_the_cent_and_not_another_teams(
    served: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    d, base = browser, served["base"]
    login(d, base, RESEARCH)
    assert d.current_url == f"{base}/dashboard/{PERIOD}"  # no token in any URL
    assert RESEARCH not in d.current_url and RESEARCH not in d.page_source
    cookie = d.get_cookie("gpumeter_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert RESEARCH not in cookie["value"]

    expected = from_minor(ledger_minor(served["ex"], served["revision"], "research"), "USD")
    assert expected > 0
    assert text(d, "headline-mtd") == str(expected)
    assert text(d, "totals-charged") == str(expected)
    assert text(d, "lines-total") == str(expected)
    assert text(d, "headline-projected") == str(expected)  # a closed month: its actual
    assert text(d, "headline-status") in {"ok", "at risk", "over"}
    # every team row of the breakdown against the ledger too
    for team in ("research/vision", "research/llm-pretraining", "research/rl"):
        row = d.find_element(By.CSS_SELECTOR, f'tr[data-cost-centre="{team}"][data-project=""]')
        charged = row.find_element(By.CSS_SELECTOR, "td.charged").text
        assert charged == str(
            from_minor(ledger_minor(served["ex"], served["revision"], team), "USD")
        )
    subtotal = d.find_element(By.CSS_SELECTOR, 'tr[data-cost-centre="research"][data-project=""]')
    assert "subtotal" in subtotal.get_attribute("class") and "subtotal" in subtotal.text
    # the chart was drawn by the vendored Chart.js under the CSP, and nothing was refused
    canvas = d.find_element(By.ID, "daily-chart")
    assert canvas.get_attribute("data-rendered") == "yes"
    assert d.execute_script("return typeof Chart") == "function"
    logs = d.get_log("browser")
    assert not [e for e in logs if "Content Security Policy" in e["message"]], logs
    assert not [e for e in logs if e["level"] == "SEVERE"], logs
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-team-research.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # another team's page: refused, and nothing of it shown
    d.get(f"{base}/dashboard/{PERIOD}?cost_centre=speech/asr")
    wait_for(d, "error-status")
    assert text(d, "error-status") == "404" and text(d, "error-code") == "chargeback.not_found"
    assert "speech/asr" in text(d, "error-message")  # it names what was asked, not its cost
    d.save_screenshot(str(ARTIFACTS / "dashboard-team-refused.png"))
    d.get(f"{base}/chargeback/{PERIOD}?cost_centre=speech")  # the API with the same cookie
    assert "chargeback.not_found" in d.page_source

    # signing out ends the session
    d.get(f"{base}/dashboard/{PERIOD}")
    d.find_element(By.ID, "logout").click()
    wait_for(d, "token")
    d.get(f"{base}/chargeback/{PERIOD}")
    assert "chargeback.unauthorized" in d.page_source


def test_finance_sees_the_platform_cost_identity(served: dict[str, Any], browser: Any) -> None:
    d, base = browser, served["base"]
    login(d, base, FINANCE)
    total = ledger_minor(served["ex"], served["revision"], "")  # '' prefix '/': nothing
    rows = served["ex"].execute(
        "SELECT sum(amount_minor), sumIf(amount_minor, kind = 'idle') FROM team_cost_lines "
        "FINAL WHERE period = %(p)s AND revision = %(r)s",
        {"p": str(PERIOD), "r": served["revision"]},
    )
    platform, unshared = int(rows[0][0]), int(rows[0][1])
    assert total == 0
    assert text(d, "platform-cost") == str(from_minor(platform, "USD"))
    assert text(d, "platform-unshared") == str(from_minor(unshared, "USD"))
    assert text(d, "platform-charged") == str(from_minor(platform - unshared, "USD"))
    assert text(d, "headline-mtd") == str(from_minor(platform, "USD"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "dashboard-finance.png"))
