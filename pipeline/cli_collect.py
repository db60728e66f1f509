"""``gpumeter collect dcgm|nvml`` and ``gpumeter import sacct``: the real usage sources
(issue 13). Thin: parses arguments, wires the collector, prints."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings, SettingsError

log = logging.getLogger("gpumeter.collect")
EX_TEMPFAIL = 75  # records left in the spool: Kafka did not take them in time


def _now_us() -> int:
    return time.time_ns() // 1000


def _site(args: argparse.Namespace, settings: Settings, kind: str) -> tuple[Any, Any, Any]:
    from pipeline.collectors.reference import load_collector_reference, resolve_site
    from pipeline.config import load_reference

    ref = load_reference(settings.config_dir)
    cref = load_collector_reference(settings.config_dir, ref)
    site = resolve_site(kind, args.cluster, args.region, args.provider, ref, cref)
    return ref, cref, site


def _outlet(args: argparse.Namespace, settings: Settings, name: str) -> Any:
    from pipeline.bootstrap import collector_outlet
    from pipeline.collectors.publish import PrintOutlet, StateLocked

    if args.dry_run:
        return PrintOutlet()
    state_dir = Path(args.state_dir) if args.state_dir else settings.collector_state_dir / name
    try:
        outlet = collector_outlet(settings, state_dir)
    except StateLocked as exc:
        raise SettingsError(str(exc)) from None
    args.resources.callback(outlet.close)
    log.info("state (cursor, spool) in %s; publishing to %s", state_dir, settings.kafka_bootstrap)
    return outlet


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _summary(kind: str, stats: Any) -> None:
    unatt = " ".join(
        f"{r}={n}/{stats.unattributed_us[r] / 3.6e9:.4f}h"
        for r, n in sorted(stats.unattributed.items())
    )
    print(
        f"collect {kind}: scrapes={stats.scrapes} samples={stats.samples} "
        f"gpu_h={stats.usage_us / 3.6e9:.4f} unattributed={sum(stats.unattributed.values())}"
        f"{f' ({unatt})' if unatt else ''} source_errors={stats.source_errors} gaps={stats.gaps} "
        f"invalid={stats.invalid} spool_full={stats.spool_full} sent={stats.sent_messages}",
        file=sys.stderr,
    )


def _loop_options(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.collectors.loop import LoopOptions

    if args.interval <= 0:
        raise SettingsError("--interval must be positive")
    max_gap = min(args.max_gap, settings.max_interval_s)
    return LoopOptions(
        interval_s=args.interval,
        scrapes=args.scrapes,
        max_gap_s=max_gap,
        drain_budget_s=max(1.0, min(30.0, args.interval / 2)),
    )


def cmd_collect_dcgm(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.collectors import loop
    from pipeline.collectors.dcgm import DcgmSource, namespace_tenants

    ref, cref, site = _site(args, settings, "dcgm")
    tenant_of = namespace_tenants(site.cluster, ref, cref)
    sources = [DcgmSource(u, ref, tenant_of, args.node, args.timeout) for u in args.url]
    outlet = _outlet(args, settings, f"dcgm-{site.cluster}")
    stop = _stop_on_sigterm()
    stats = loop.run(site, sources, outlet, _loop_options(args, settings), _now_us, stop.wait, stop)
    _summary("dcgm", stats)
    return 0


def cmd_collect_nvml(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.collectors import loop
    from pipeline.collectors.nvml import NvmlSource, load_nvml, tenant_holders
    from pipeline.collectors.tokens import to_token

    ref, _cref, site = _site(args, settings, "nvml")
    if args.tenant is not None and args.tenant not in ref.tenants:
        raise SettingsError(f"--tenant {args.tenant!r} is not in config/tenants.yaml")
    node = to_token(args.node or socket.gethostname(), "node")
    try:
        nv = load_nvml()
        source = NvmlSource(nv, ref.catalog, node, tenant_holders(args.tenant, args.project))
    except Exception as exc:  # noqa: BLE001 - no bindings, no driver, no GPU: say so
        print(f"error: NVML unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    args.resources.callback(source.close)
    outlet = _outlet(args, settings, f"nvml-{site.cluster}")
    stop = _stop_on_sigterm()
    stats = loop.run(
        site, [source], outlet, _loop_options(args, settings), _now_us, stop.wait, stop
    )
    _summary("nvml", stats)
    return 0


def cmd_import_sacct(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.collectors.sacct import import_text, zone
    from pipeline.collectors.sacct_parse import SacctFormatError, describe_zone

    ref, cref, site = _site(args, settings, "slurm")
    tz = zone(args.timezone, site)
    if args.file == "-":
        text = sys.stdin.read()
    else:
        text = Path(args.file).read_text(encoding="utf-8", errors="replace")
    outlet = _outlet(args, settings, f"slurm-{site.cluster}")
    try:
        res = import_text(text, site, ref, cref, outlet, tz, wait_s=args.wait)
    except SacctFormatError as exc:
        raise SettingsError(f"{args.file}: {exc}") from None
    rep = res.report
    attributed = [s for s in res.spans if s.tenant_id is not None]
    gpu_h = sum(s.usage_us for s in attributed) / 3.6e9
    for (reason, detail), us in sorted(rep.unattributed_us.items()):
        print(
            f"sacct: unattributed {reason} {detail!r}: {us / 3.6e9:.4f} GPU-hours", file=sys.stderr
        )
    for p in rep.problems:
        print(f"sacct: skipped {p}", file=sys.stderr)
    for p in res.invalid:
        print(f"sacct: invalid (not sent) {p}", file=sys.stderr)
    skipped = " ".join(f"{k}={v}" for k, v in sorted(rep.skipped.items()))
    print(
        json.dumps(
            {
                "rows": rep.rows,
                "runs": rep.runs,
                "running": rep.running,
                "samples": len(attributed),
                "gpu_hours": round(gpu_h, 6),
                "unattributed_samples": len(res.spans) - len(attributed),
                "unattributed_gpu_hours": round(sum(rep.unattributed_us.values()) / 3.6e9, 6),
                "skipped": dict(sorted(rep.skipped.items())),
                "timezone": describe_zone(tz),
                "messages": res.messages,
                "sent": res.sent,
                "spooled_bytes": res.pending_bytes,
            }
        )
        if args.json
        else f"sacct: rows={rep.rows} runs={rep.runs} running={rep.running} "
        f"samples={len(attributed)} gpu_h={gpu_h:.4f} "
        f"unattributed={len(res.spans) - len(attributed)} skipped={sum(rep.skipped.values())}"
        f"{f' ({skipped})' if skipped else ''} timezone={describe_zone(tz)} "
        f"messages={res.messages} sent={res.sent} spooled_bytes={res.pending_bytes}",
        file=sys.stderr if args.dry_run else sys.stdout,
    )
    if res.pending_bytes:
        print(
            f"sacct: Kafka did not take every record ({res.kafka_error}); {res.pending_bytes} "
            "bytes stay in the spool and are sent by the next run (same --cluster)",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", required=True, help="cluster name (a token)")
    p.add_argument("--region", help="default: the cluster's in config/collectors.yaml")
    p.add_argument("--provider", help="default: the cluster's in config/collectors.yaml")
    p.add_argument(
        "--state-dir",
        help="spool and cursor (default: GPUMETER_COLLECTOR_STATE_DIR/"
        "<collector>-<cluster>); one process per directory",
    )
    p.add_argument(
        "--dry-run",
        "--print",
        dest="dry_run",
        action="store_true",
        help="print the events as JSON lines instead of publishing (no Kafka)",
    )


def _loop_args(p: argparse.ArgumentParser, interval: float) -> None:
    p.add_argument("--interval", type=float, default=interval, help="seconds between scrapes")
    p.add_argument("--scrapes", type=int, help="stop after N scrapes (tests, cron)")
    p.add_argument(
        "--max-gap",
        type=float,
        default=900.0,
        help="longest pause between two scrapes still counted (s, at most GPUMETER_MAX_INTERVAL_S)",
    )
    p.add_argument("--node", help="node name when the source does not say it")


def register(sub: Any) -> None:
    col = sub.add_parser("collect", help="collect GPU usage from a real source")
    csub = col.add_subparsers(dest="collect_command", required=True)

    dcgm = csub.add_parser("dcgm", help="scrape NVIDIA DCGM-exporter endpoints")
    dcgm.add_argument(
        "--url",
        action="append",
        required=True,
        help="exporter metrics URL, e.g. http://node:9400/metrics (repeatable)",
    )
    dcgm.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout, seconds")
    _common(dcgm)
    _loop_args(dcgm, 60.0)
    dcgm.set_defaults(func=cmd_collect_dcgm)

    nvml = csub.add_parser("nvml", help="this host's GPUs through NVML (nvidia-ml-py)")
    nvml.add_argument("--tenant", help="tenant of this host's GPUs (default: none, idle)")
    nvml.add_argument("--project", default="", help="project_id of the samples")
    _common(nvml)
    _loop_args(nvml, 60.0)
    nvml.set_defaults(func=cmd_collect_nvml)

    imp = sub.add_parser("import", help="import GPU usage from accounting records")
    isub = imp.add_subparsers(dest="import_command", required=True)
    sacct = isub.add_parser(
        "sacct",
        help="Slurm accounting: sacct -a -P -X --format=JobID,"
        "JobIDRaw,Account,User,Partition,AllocTRES,Start,End,Elapsed,State",
    )
    sacct.add_argument("file", help="sacct output, - for standard input")
    sacct.add_argument(
        "--timezone",
        help="IANA zone of sacct's timestamps (default: the "
        "cluster's in config/collectors.yaml, else UTC)",
    )
    sacct.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for Kafka before leaving records in the spool",
    )
    sacct.add_argument("--json", action="store_true", help="summary as JSON")
    _common(sacct)
    sacct.set_defaults(func=cmd_import_sacct)
