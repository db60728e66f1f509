"""The demo's team cost step: build the month's team cost report, check that it rolls up
exactly and that charged + unshared idle is the platform cost, and start the finance API with
the dashboard in the background with LOCAL-ONLY demo tokens (printed: they are public)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.settings import REPO_ROOT, Settings

# Public, for the local demo only: never configure these anywhere else.
DEMO_FINANCE_TOKEN = "local-demo-only-finance-token"
DEMO_TEAM = "research"
DEMO_TEAM_TOKEN = "local-demo-only-team-research-token"
DEMO_TOKENS = f"{DEMO_FINANCE_TOKEN}=finance,{DEMO_TEAM_TOKEN}=team:{DEMO_TEAM}"


def check_report(settings: Settings, config: Config, st: Store, period: Period) -> dict[str, Any]:
    """Build the period's report and check it: every node equals its own lines plus its
    children; roots + unshared idle == platform cost == the sum of the ledger's lines."""
    from pipeline.bootstrap import team_costs
    from pipeline.domain.hierarchy import Figures

    costs = team_costs(settings, config, st)
    built = costs.build(period)
    view = costs.view(period, None)
    nodes = {n.key: n for n in view.nodes}
    exact = True
    for n in view.nodes:
        expect = Figures()
        expect.add(n.own)
        for c in n.children:
            expect.add(nodes[c].total)
        exact = exact and expect == n.total
    roots = [n for n in view.nodes if n.key.parent is None]
    charged = sum(n.total.charged_minor for n in roots)
    unshared = sum(n.total.idle_minor for n in roots)
    ledger = costs.book.total_minor(str(period), view.revision)
    platform = view.platform_cost_minor or 0
    return {
        "status": built.status,
        "revision": view.revision,
        "currency": view.currency,
        "platform": platform,
        "charged": charged,
        "use": sum(n.total.usage_minor for n in roots),
        "shared": sum(n.total.idle_share_minor for n in roots),
        "unshared": unshared,
        "ledger": ledger,
        "ok": exact and charged + unshared == platform == ledger,
        "budgets": costs.budget_list(period),
    }


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def start_api(settings: Settings, log: Path) -> tuple[int | None, str]:
    """The finance API with the dashboard, in the background, with the demo tokens (unless
    something already listens on the port). Returns (pid or None, what happened)."""
    host, port = settings.api_host, settings.api_port
    if _port_open(host, port):
        return None, f"something already listens on {host}:{port} (an API from an earlier demo?)"
    env = dict(
        os.environ,
        GPUMETER_API_TOKENS=DEMO_TOKENS,
        GPUMETER_API_HOST=host,
        GPUMETER_API_PORT=str(port),
        GPUMETER_CLICKHOUSE_DATABASE=settings.clickhouse_database,
    )
    if not env.get("GPUMETER_DASHBOARD_SECRET"):  # `make` exports it; a bare CLI run may not
        for line in (REPO_ROOT / "infra" / "local.env").read_text().splitlines():
            if line.startswith("GPUMETER_") and "=" in line:
                key, _, value = line.partition("=")
                env.setdefault(key, value)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "api", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the demo; stop it with kill <pid>
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"the API exited with {proc.returncode}; see {log}"
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    (REPO_ROOT / ".local" / "api-demo.pid").write_text(str(proc.pid))
                    return proc.pid, "started"
        except OSError:
            time.sleep(0.3)
    return proc.pid, f"started but not answering yet; see {log}"


def show(settings: Settings, config: Config, st: Store, period: Period, console: Console) -> bool:
    r = check_report(settings, config, st, period)
    cur = r["currency"]

    def m(v: int) -> str:
        return f"{cur} {from_minor(v, cur)}"

    verdict = "[green]exact[/green]" if r["ok"] else "[red]MISMATCH[/red]"
    console.print(
        f"team cost report {period} (gpumeter chargeback show --period {period}): "
        f"{r['status']}, revision {r['revision']}; platform cost {m(r['platform'])} = charged "
        f"{m(r['charged'])} (use {m(r['use'])} + idle shares {m(r['shared'])}) + unshared idle "
        f"{m(r['unshared'])}; ledger lines {m(r['ledger'])}; roll-ups: {verdict}"
    )
    over = [b.cost_centre for b in r["budgets"] if b.status == "over"]
    risk = [b.cost_centre for b in r["budgets"] if b.status == "at_risk"]
    console.print(
        f"budgets (gpumeter chargeback budgets --period {period}): {len(r['budgets'])}, "
        f"over: {', '.join(over) or 'none'}; at risk: {', '.join(risk) or 'none'}"
    )
    log = REPO_ROOT / ".local" / "logs" / "api-demo.log"
    pid, what = start_api(settings, log)
    url = f"http://{settings.api_host}:{settings.api_port}/dashboard"
    console.print(f"[bold]dashboard:[/bold] {url}  ({what}{f', pid {pid}' if pid else ''})")
    console.print(
        "  LOCAL DEMO ONLY tokens (public, never use them elsewhere): "
        f"finance [bold]{DEMO_FINANCE_TOKEN}[/bold], team {DEMO_TEAM} "
        f"[bold]{DEMO_TEAM_TOKEN}[/bold]",
        soft_wrap=True,
    )
    if pid:
        console.print(f"  stop it: kill {pid}   (log: {log})")
    return bool(r["ok"])
