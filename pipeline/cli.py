"""``gpumeter``: the command line. Thin: parses arguments, wires adapters, prints."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline import cli_chargeback, cli_collect, cli_exports, cli_finance
from pipeline.domain.errors import BillingError
from pipeline.settings import Settings, SettingsError


def _now() -> datetime:
    return datetime.now(UTC)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.adapters.clickhouse import migrate
    from pipeline.bootstrap import executor

    if args.cluster:
        from pipeline.adapters.clickhouse import cluster_statements

        stmts = cluster_statements(args.cluster, settings.clickhouse_database)
        if args.print:
            print(";\n\n".join(stmts) + ";")
            return 0
        ex = executor(settings)
        args.resources.callback(ex.close)
        for stmt in stmts:
            ex.execute(stmt)
        print(f"applied {len(stmts)} statements on cluster {args.cluster}")
        return 0
    ex = executor(settings, Path(args.chdb) if args.chdb else None)
    args.resources.callback(ex.close)
    applied = migrate(ex)
    print(
        f"migrations applied on {ex.engine} database {settings.clickhouse_database}: "
        f"{', '.join(applied) or 'none (up to date)'}"
    )
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.adapters.kafka import ensure_topics

    created = ensure_topics(
        settings.kafka_bootstrap,
        {settings.usage_topic: settings.topic_partitions, settings.dlq_topic: 1}
        | {settings.unattributed_topic: 1},  # collectors' usage billed to nobody
    )
    print(f"topics created: {', '.join(created) or 'none (already there)'}")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.sim.run import publish
    from pipeline.config import Config
    from pipeline.domain.period import Period

    period = Period.parse(args.period) if args.period else Period.previous(_now())
    res = publish(
        settings,
        Config.load(settings.config_dir),
        period,
        nodes=args.nodes,
        interval_s=args.interval,
        seed=args.seed,
        bad_every=args.bad_every,
        progress=not args.quiet,
    )
    rate = res.samples / res.seconds if res.seconds else 0
    print(
        f"simulated {res.period}: nodes={res.nodes} jobs={res.jobs} messages={res.messages} "
        f"samples={res.samples} invalid={res.bad_messages} in {res.seconds:.1f}s "
        f"({rate:,.0f} samples/s); ground truth: {res.truth_path}"
    )
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.worker.app import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def cmd_bill(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bootstrap import billing_run, store, stripe_gateway
    from pipeline.config import Config
    from pipeline.domain.period import Period

    period = Period.parse(args.period)
    stripe_gateway(settings)  # no API key: refused before any I/O
    config = Config.load(settings.config_dir)
    st = store(settings)
    args.resources.callback(st.ex.close)
    run = billing_run(settings, config, st, clock=_now, progress=True)
    report = run.run(period)
    from pipeline.report import print_billing

    print_billing(report)
    if report.failed:
        for r in report.failed:
            invoice = f" ({r.invoice_id})" if r.invoice_id else ""
            print(f"bill: FAILED {r.tenant_id}{invoice}: {r.error}", file=sys.stderr)
        names = ", ".join(r.tenant_id for r in report.failed)
        print(
            f"bill: {len(report.failed)} tenant(s) failed: {names}; the others are billed. "
            f"Fix the cause (Stripe, or a rate card without a price) and rerun `gpumeter bill "
            f"--period {period}` to retry them (nothing is sent twice)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.schemas import check_schemas, write_schemas

    if args.action == "write":
        for p in write_schemas():
            print(f"wrote {p}")
        return 0
    stale = check_schemas()
    for p in stale:
        print(f"out of date: {p} (run: gpumeter schemas write)")
    return 1 if stale else 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.sim.truth import read_truth
    from devtools.verify import compare, stored_as_truth
    from pipeline.bootstrap import store
    from pipeline.domain.period import Period

    period = Period.parse(args.period)
    truth = read_truth(settings.out_dir / str(period) / "ground_truth.json")
    st = store(settings)
    args.resources.callback(st.ex.close)
    v = compare(truth, stored_as_truth(st, period))
    print(
        json.dumps(
            {
                "keys_expected": v.keys_expected,
                "keys_found": v.keys_found,
                "keys_equal": v.keys_equal,
                "lost_us": v.lost_us,
                "double_counted_us": v.double_us,
                "exact": v.exact,
            }
        )
    )
    return 0 if v.exact else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.status import group_status, render

    st = group_status(settings, args.metrics or None, window_s=args.window)
    print(render(st))
    return 0 if st.healthy else 1


def cmd_late(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.bootstrap import store
    from pipeline.domain.hours import HOUR_US
    from pipeline.domain.period import Period

    period = Period.parse(args.period)
    st = store(settings)
    args.resources.callback(st.ex.close)
    rows = st.late_usage(period)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "tenant_id": t,
                        "hour": h.isoformat(),
                        "gpu_model": g,
                        "mig_profile": m,
                        "late_us": late,
                        "usage_us": u,
                    }
                    for t, h, g, m, late, u in rows
                ]
            )
        )
        return 0
    table = Table(title=f"Late usage {period} (arrived after the grace period)")
    for col in ("tenant", "hour (UTC)", "GPU", "MIG", "late instance-hours", "of total"):
        table.add_column(col)
    for t, h, g, m, late, u in rows:
        table.add_row(
            t,
            h.strftime("%Y-%m-%d %H:00"),
            g,
            m or "-",
            f"{late / HOUR_US:.4f}",
            f"{u / HOUR_US:.4f}",
        )
    Console().print(table)
    print(f"late: period={period} hourly_keys={len(rows)} samples={st.late_samples(period)}")
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import dlq

    if args.action == "resubmit":
        from pipeline.bootstrap import executor

        ex = executor(settings)
        args.resources.callback(ex.close)
        sent, skipped = dlq.resubmit(settings, ex, args.reason, args.dry_run)
        verb = "would re-submit" if args.dry_run else "re-submitted"
        print(
            f"dlq: {verb} {sent} dead letters to {settings.usage_topic}"
            f"{f' (reason {args.reason})' if args.reason else ''}; {skipped} already done"
        )
        return 0
    letters = [
        d for d in dlq.read_dead_letters(settings) if args.reason is None or d.reason == args.reason
    ]
    if args.action == "count":
        counts = dlq.count_by_reason(iter(letters))
        if args.json:
            print(json.dumps(dict(sorted(counts.items()))))
        else:
            for reason, n in counts.most_common():
                print(f"{n:8d}  {reason}")
            print(f"dlq: total={sum(counts.values())} reasons={len(counts)}")
        return 0
    shown = letters[-args.limit :] if args.limit else letters
    for d in shown:
        row = {
            "dlq": f"{d.partition}/{d.offset}",
            "reason": d.reason,
            "detail": d.detail,
            "source": d.source,
            "bytes": len(d.value or b""),
        }
        print(
            json.dumps(row)
            if args.json
            else f"{row['dlq']:>10}  {d.reason:<24} {d.source:<40} {d.detail}"
        )
    return 0


def cmd_faults(args: argparse.Namespace, settings: Settings) -> int:
    import uuid

    from devtools.faults import FaultPlan, describe, run_faults
    from pipeline.config import Config

    name = f"faults_{uuid.uuid4().hex[:8]}"
    root = settings.out_dir / "faults" / name
    fs = settings.isolated(name, root)
    plan = FaultPlan(
        nodes=args.nodes,
        kills=args.kills,
        clickhouse_outage_s=args.outage,
        broker_restarts=1,
        duplicate_rate=0.05,
        replay_messages=args.replay,
        late_every=50,
        bad_every=500,
        workers=2,
        kill_one_of_two=True,
        seed=args.seed,
    )
    rep = run_faults(fs, Config.load(settings.config_dir), plan, root / "logs")
    print(json.dumps(describe(rep), indent=2))
    print(f"logs: {root / 'logs'}; database: {fs.clickhouse_database}")
    print(rep.line())
    ok = rep.lost_us == 0 and rep.double_us == 0 and rep.billing_equal
    return 0 if ok else 1


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from devtools.bench import cleanup, run_bench, write_results
    from pipeline.settings import REPO_ROOT

    console = Console()
    res = run_bench(settings, args.scale, say=console.print)
    doc = write_results(res, REPO_ROOT / "bench" / "results" / "latest.json")
    if not args.keep:
        cleanup(settings)
    targets = {
        "samples_per_s": (">= 50,000", lambda v: v >= 50_000),
        "p99_freshness_s": ("<= 5", lambda v: v <= 5),
        "peak_rss_mib": ("<= 1024", lambda v: v <= 1024),
        "billing_s": ("<= 60", lambda v: v <= 60),
    }
    table = Table(title=f"gpumeter bench (scale {args.scale})")
    for col in ("figure", "value", "target", "met"):
        table.add_column(col)
    for key, value in doc.items():
        if key == "measured_at":
            continue
        target, ok = targets.get(key, ("", None))
        met = "" if ok is None or value is None else ("yes" if ok(value) else "NO")
        shown = json.dumps(value) if isinstance(value, dict) else str(value)
        table.add_row(key, shown, target, met)
    console.print(table)
    console.print("written: bench/results/latest.json")
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    """Delete this deployment's state: ClickHouse database, Kafka topics (usage, dead letters,
    the worker's changelogs) and the worker's local store. For demos and development."""
    import shutil

    from kafka.admin import KafkaAdminClient

    from pipeline.bootstrap import executor

    if not args.yes:
        print("reset deletes the database, the topics and the worker state; add --yes")
        return 2
    ex = executor(settings)
    ex.execute(f"DROP DATABASE IF EXISTS {ex.database}")
    ex.close()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        ours = [
            t
            for t in admin.list_topics()
            if t in (settings.usage_topic, settings.dlq_topic)
            or t.startswith(f"{settings.worker_id}-")
        ]
        if ours:
            admin.delete_topics(ours)
    finally:
        admin.close()
    shutil.rmtree(settings.worker_data_dir, ignore_errors=True)
    print(
        f"reset: dropped database {settings.clickhouse_database}, deleted topics "
        f"{', '.join(sorted(ours)) or '(none)'}, removed {settings.worker_data_dir}"
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from devtools.demo import run_demo

    return run_demo(settings, args.period, nodes=args.nodes, interval_s=args.interval)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpumeter", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="ClickHouse schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    mig = db_sub.add_parser("migrate", help="apply schemas/clickhouse/*.sql in order")
    mig.add_argument("--chdb", metavar="PATH", help="migrate an in-process chdb store at PATH")
    mig.add_argument(
        "--cluster",
        metavar="NAME",
        help="Replicated + Distributed DDL for the ClickHouse cluster NAME",
    )
    mig.add_argument("--print", action="store_true", help="with --cluster: print, do not apply")
    mig.set_defaults(func=cmd_migrate)

    topics = sub.add_parser("topics", help="create the Kafka topics")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(func=cmd_topics)

    sim = sub.add_parser("simulate", help="publish a simulated period of fleet usage")
    sim.add_argument("--period", help="YYYY-MM (default: previous calendar month)")
    sim.add_argument("--nodes", type=int, default=40)
    sim.add_argument("--interval", type=int, default=300, help="collection interval, seconds")
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument(
        "--bad-every",
        type=int,
        default=0,
        help="also publish one invalid message every N reports (0: none)",
    )
    sim.add_argument("--quiet", action="store_true")
    sim.set_defaults(func=cmd_simulate)

    w = sub.add_parser("worker", help="run the stream worker (consumer group member)")
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=cmd_worker)

    bill = sub.add_parser("bill", help="bill a period")
    bill.add_argument("--period", required=True, help="YYYY-MM")
    bill.set_defaults(func=cmd_bill)
    cli_finance.register(sub)
    cli_chargeback.register(sub)
    cli_exports.register(sub)
    cli_collect.register(sub)

    sch = sub.add_parser("schemas", help="JSON Schemas in schemas/")
    sch.add_argument("action", choices=["write", "check"])
    sch.set_defaults(func=cmd_schemas)

    ver = sub.add_parser("verify", help="compare ClickHouse with the ground truth of a period")
    ver.add_argument("--period", required=True)
    ver.set_defaults(func=cmd_verify)

    stat = sub.add_parser(
        "status", help="lag, throughput and health of every worker in the group (exit 1: not ok)"
    )
    stat.add_argument(
        "--metrics",
        action="append",
        metavar="URL",
        help="a worker's metrics URL (repeatable); default: each member's host on "
        "GPUMETER_METRICS_PORT",
    )
    stat.add_argument("--window", type=float, default=2.0, help="seconds between two scrapes")
    stat.set_defaults(func=cmd_status)

    late = sub.add_parser("late", help="usage of a period that arrived after its grace period")
    late.add_argument("--period", required=True)
    late.add_argument("--json", action="store_true")
    late.set_defaults(func=cmd_late)

    dl = sub.add_parser("dlq", help="dead-lettered usage events")
    dl.add_argument("action", choices=["list", "count", "resubmit"])
    dl.add_argument("--reason", help="only this reason code")
    dl.add_argument("--limit", type=int, default=50, help="list: the last N (0: all)")
    dl.add_argument("--json", action="store_true")
    dl.add_argument("--dry-run", action="store_true", help="resubmit: only count")
    dl.set_defaults(func=cmd_dlq)

    fl = sub.add_parser("faults", help="fault-injection run on the local stack")
    fl.add_argument("--nodes", type=int, default=16)
    fl.add_argument("--kills", type=int, default=3)
    fl.add_argument("--outage", type=float, default=30.0, help="ClickHouse outage, seconds")
    fl.add_argument("--replay", type=int, default=2000, help="records of a partition replayed")
    fl.add_argument("--seed", type=int, default=7)
    fl.set_defaults(func=cmd_faults)

    bn = sub.add_parser("bench", help="throughput, freshness, memory and billing benchmark")
    bn.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="volume multiplier (1.0: 5,000,000 samples, 1,000,000 keys)",
    )
    bn.add_argument("--keep", action="store_true", help="keep the bench databases and topics")
    bn.set_defaults(func=cmd_bench)

    rs = sub.add_parser("reset", help="delete the database, topics and worker state")
    rs.add_argument("--yes", action="store_true")
    rs.set_defaults(func=cmd_reset)

    demo = sub.add_parser("demo", help="the whole pipeline on a simulated month")
    demo.add_argument("--period", help="YYYY-MM (default: previous calendar month)")
    demo.add_argument("--nodes", type=int, default=32)
    demo.add_argument("--interval", type=int, default=600, help="collection interval, seconds")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "aiokafka", "stripe"):  # client libraries log every request at INFO
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        with contextlib.ExitStack() as resources:  # connections a command opens close here
            args.resources = resources
            return int(args.func(args, Settings()) or 0)
    except (BillingError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
