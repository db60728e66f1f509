"""``make demo``: migrate, simulate a month, run the worker until the topic is drained, verify
against the ground truth, bill, and print where everything is."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich.console import Console

from devtools.exports_demo import show_exports
from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import start_worker, stop_worker, wait_drained
from devtools.verify import compare, stored_as_truth
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import end_offsets
from pipeline.billing.reconcile import reconcile
from pipeline.bootstrap import billing_run, executor, ledger, store
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.report import print_billing
from pipeline.settings import REPO_ROOT, Settings


def run_demo(
    settings: Settings, period_text: str | None, nodes: int = 40, interval_s: int = 300
) -> int:
    console = Console()
    t0 = time.monotonic()
    period = Period.parse(period_text) if period_text else Period.previous(datetime.now(UTC))
    config = Config.load(settings.config_dir)
    console.rule(f"gpumeter demo: {period}, {len(config.reference.tenants)} tenants, {nodes} nodes")
    applied = migrate(executor(settings))
    console.print(f"ClickHouse migrations: {', '.join(applied) or 'up to date'}")
    sim = publish(
        settings,
        config,
        period,
        nodes=nodes,
        interval_s=interval_s,
        bad_every=5000,
        late_every=500,
        duplicate_rate=0.01,
    )
    console.print(
        f"published {sim.messages:,} messages / {sim.samples:,} samples "
        f"(+{sim.bad_messages} invalid, for the dead-letter topic) in {sim.seconds:.0f}s"
    )
    log = REPO_ROOT / ".local" / "logs" / "worker-demo.log"
    worker = start_worker(settings, log)
    try:
        drained = wait_drained(settings, worker, timeout=1800, console=console)
    finally:
        stop_worker(worker)
    console.print(
        f"worker drained the topic in {drained:.0f}s "
        f"({sim.samples / max(drained, 1e-9):,.0f} samples/s); log: {log}"
    )
    st = store(settings)
    v = compare(read_truth(sim.truth_path), stored_as_truth(st, period))
    verdict = "[green]exact[/green]" if v.exact else "[red]MISMATCH[/red]"
    console.print(
        f"ClickHouse vs ground truth: {v.keys_equal}/{v.keys_expected} hourly keys equal, "
        f"lost={v.lost_us}us double_counted={v.double_us}us: {verdict}"
    )
    report = billing_run(settings, config, st, progress=True).run(period)
    print_billing(report, console)
    rec = reconcile(config, st, ledger(st), period)
    pdfs = sorted((settings.out_dir / str(period) / "invoices").glob("*.pdf"))
    console.print(
        f"{len(pdfs)} invoice PDFs, e.g. {pdfs[0] if pdfs else '-'} "
        f"(gpumeter invoices list --period {period}; gpumeter invoices show ID)"
    )
    console.print(f"reconciliation (gpumeter reconcile --period {period}):")
    example = next((t for t in rec.tenants if t.explained.get("minimum")), None)
    if example is not None:
        console.print(
            f"for example {settings.out_dir / str(period) / 'invoices' / example.invoice_id}.pdf:"
        )
        console.print(example.line(), markup=False, soft_wrap=True)
    console.print(rec.summary_line(), markup=False, soft_wrap=True)
    exports_ok = show_exports(settings, config, st, period, console)
    dlq = sum(end_offsets(settings.kafka_bootstrap, settings.dlq_topic).values())
    console.print(
        f"published with {sim.duplicates} resent messages (deduplicated) and {sim.late_messages} "
        f"held back past the grace period: {st.late_samples(period)} late samples counted and "
        f"marked (gpumeter late --period {period})"
    )
    console.print(f"dead-letter topic {settings.dlq_topic}: {dlq} records (gpumeter dlq count)")
    parts = ", ".join(f"{t}={n}" for t, n in st.active_parts().items())
    console.print(f"ClickHouse active parts: {parts}")
    from devtools import dashboard

    teams_ok = dashboard.show(settings, config, st, period, console)
    console.print(f"ground truth: {sim.truth_path}")
    console.print(f"demo finished in {time.monotonic() - t0:.0f}s")
    return 0 if v.exact and rec.clean and not report.failed and exports_ok and teams_ok else 1
