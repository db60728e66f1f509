"""``gpumeter exports``: partner usage exports in FinOps FOCUS 1.2 (docs/exports.md)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from pipeline.domain.errors import ExportError
from pipeline.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]


def _exports_errors(fn: Command) -> Command:
    @functools.wraps(fn)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return fn(args, settings)
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def _exporter(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.bootstrap import exporter, store
    from pipeline.config import Config

    config = Config.load(settings.config_dir)
    ex = exporter(settings, config, store(settings))  # no pseudonym key: refused here
    args.resources.callback(ex.store.ex.close)
    return ex


@_exports_errors
def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.domain.period import Period

    period = Period.parse(args.period)
    results = _exporter(args, settings).build(period, args.partner)
    for res in results:
        print(res.line())
    return 1 if any(r.state == "failed" for r in results) else 0


@_exports_errors
def cmd_deliver(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.bootstrap import bucket
    from pipeline.domain.period import Period

    period = Period.parse(args.period)
    ex = _exporter(args, settings)
    opener = None if args.no_push else functools.partial(bucket, settings)
    results = ex.deliver(period, args.partner, opener)
    for res in results:
        print(res.line())
    return 1 if any(r.state == "failed" for r in results) else 0


@_exports_errors
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.domain.period import Period
    from pipeline.exports.verify import verify

    v = verify(_exporter(args, settings), Period.parse(args.period), args.partner)
    for p in v.partners:
        print(p.line())
    print(v.summary_line())
    return 0 if v.clean else 1


@_exports_errors
def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.domain.period import Period
    from pipeline.exports.files import read_manifest
    from pipeline.exports.validator import ValidatorUnavailable, run_validator

    period = Period.parse(args.period)
    ex = _exporter(args, settings)
    failed = files = 0
    try:
        for partner in ex.partners(args.partner):
            directory = ex.directory(str(period), partner.id)
            manifest = read_manifest(directory)
            if manifest is None:
                print(f"{partner.id}: no export (gpumeter exports build --period {period})")
                failed += 1
                continue
            for entry in manifest["files"]:
                if args.format not in ("both", entry["format"]):
                    continue
                report = run_validator(settings.focus_validator_venv, directory / entry["name"])
                files += 1
                failed += not report.ok
                print(f"{partner.id}: {report.line()}")
    except ValidatorUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"focus-validator: period={period} files={files} failed={failed}")
    return 1 if failed else 0


@_exports_errors
def cmd_consumers(args: argparse.Namespace, settings: Settings) -> int:
    mapping = _exporter(args, settings).consumers(args.partner)
    if args.json:
        print(json.dumps(mapping, indent=2))
    else:
        for pseudonym, tenant in mapping.items():
            print(f"{pseudonym}  {tenant}")
    return 0


def register(sub: Any) -> None:
    ex = sub.add_parser("exports", help="partner usage exports (FinOps FOCUS 1.2)")
    esub = ex.add_subparsers(dest="exports_command", required=True)
    b = esub.add_parser("build", help="write each partner's export of a period (not delivered)")
    b.add_argument("--period", required=True, help="YYYY-MM")
    b.add_argument("--partner", help="only this partner")
    b.set_defaults(func=cmd_build)
    d = esub.add_parser(
        "deliver", help="build, record and push to partners' buckets (after the period)"
    )
    d.add_argument("--period", required=True, help="YYYY-MM")
    d.add_argument("--partner", help="only this partner")
    d.add_argument("--no-push", action="store_true", help="record the delivery, push nothing")
    d.set_defaults(func=cmd_deliver)
    v = esub.add_parser("verify", help="files, hashes and GPU-hours vs metered usage")
    v.add_argument("--period", required=True, help="YYYY-MM")
    v.add_argument("--partner", help="only this partner")
    v.set_defaults(func=cmd_verify)
    val = esub.add_parser("validate", help="run the FinOps focus-validator on the files")
    val.add_argument("--period", required=True, help="YYYY-MM")
    val.add_argument("--partner", help="only this partner")
    val.add_argument("--format", choices=("csv", "parquet", "both"), default="both")
    val.set_defaults(func=cmd_validate)
    c = esub.add_parser("consumers", help="finance: a partner's pseudonyms -> tenants")
    c.add_argument("--partner", required=True)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_consumers)
