"""Slurm accounting (``sacct -P``) -> usage spans (pure).

Input: the output of ``sacct -a -P -X --format=JobID,JobIDRaw,Account,User,Partition,
AllocTRES,Start,End,Elapsed,State`` (pipe-separated; a header line is used when present, in
any column order, and may add ``NodeList``; without one the columns are read in that order).

* **GPUs**: from ``AllocTRES``: ``gres/gpu=N`` is the job's GPU count; ``gres/gpu:<type>=N``
  beside it names the type of those same GPUs (never counted on top). Typed entries are the
  units (one per type); GPUs of the plain count that no typed entry names are of the
  cluster's default model. A type is a catalogue model or alias (``a100``), or a MIG profile
  of the cluster's default model (``1g.10gb``); an unknown type is unattributed
  (``unknown_gpu_model``), never dropped.
* **Time**: ``Start``/``End`` as sacct prints them, usually without a zone: read in
  ``--timezone`` (an IANA name; default the cluster's zone in ``config/collectors.yaml``,
  else UTC); a timestamp with an offset is read as it says. In a repeated hour (DST ends) the
  first occurrence is taken, the second for an ``End`` that would otherwise precede ``Start``.
* **Slices**: a run ``[Start, End)`` is cut at every UTC hour boundary, so every slice is at
  most an hour and lies in one hour. A running job (``End=Unknown``) has been observed until
  ``Start + Elapsed``; only its slices that end on an hour boundary by then are emitted, and
  the rest waits for a later import. So importing a job again, or importing a running job
  again once it ended, makes the same slices with the same identities
  (``//gpumeter/slurm/<cluster>``, ``slurm-job/<JobIDRaw>/<type>@<start_us>-<end_us>``) and the
  worker counts each once.
* **Requeued jobs** reuse their JobID: each run is its own row (``sacct -D`` shows them all)
  with its own Start, and runs never overlap, so their slices never share an identity. The
  same run twice in one input (a running and a finished row) counts once, as finished.
* **Tenant**: the account through ``config/collectors.yaml`` (``accounts``), or an account
  that is a tenant id; other accounts are unattributed (``unknown_account``) and reported with
  their GPU-hours. ``project_id`` is the account, ``job_id`` the JobID.
* Job steps (``123.batch``, when ``-X`` was left out) are skipped: the allocation row covers
  them. Malformed lines, times or TRES are skipped and counted with a reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from pipeline.collectors.events import Reason, Span
from pipeline.collectors.tokens import TokenError, to_text, to_token
from pipeline.domain.hours import HOUR_US, US_PER_SECOND, to_us
from pipeline.domain.reference import GpuCatalog

COLUMNS = (
    "JobID",
    "JobIDRaw",
    "Account",
    "User",
    "Partition",
    "AllocTRES",
    "Start",
    "End",
    "Elapsed",
    "State",
)
REQUIRED = ("JobID", "JobIDRaw", "Account", "AllocTRES", "Start", "End", "Elapsed")
NOT_A_TIME = {"", "unknown", "none", "n/a"}
MAX_PROBLEMS = 10
MAX_GPUS_PER_SAMPLE = 1024  # gpu_count of one gpu.usage.v1 sample

# account -> tenant id, or None
TenantOf = Callable[[str], str | None]


@dataclass(slots=True)
class ImportReport:
    rows: int = 0
    runs: int = 0  # job runs with GPUs that made spans
    running: int = 0  # of which still running (slices after the last hour boundary wait)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows
    unattributed_us: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, detail)
    problems: list[str] = field(default_factory=list)

    def skip(self, reason: str, line_no: int, text: str) -> None:
        self.skipped[reason] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"line {line_no}: {reason}: {text[:200]}")


class SacctFormatError(ValueError):
    """The input is not sacct's pipe-separated output (a header without the columns)."""


class RowError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_elapsed(text: str) -> int:
    """``[D-]HH:MM:SS``, ``MM:SS`` (optionally ``.fff``) -> micro-seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.(\d{1,6}))?", text.strip())
    if not m:
        raise RowError("bad_elapsed", f"Elapsed {text!r}")
    days, hours, minutes, seconds, frac = m.groups()
    total_s = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    return total_s * US_PER_SECOND + (int(frac.ljust(6, "0")) if frac else 0)


def parse_time(text: str, zone: tzinfo, fold: int = 0) -> int | None:
    """A sacct timestamp -> µs since the epoch; None for Unknown/None."""
    if text.strip().lower() in NOT_A_TIME:
        return None
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RowError("bad_time", f"timestamp {text!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=zone, fold=fold)
    return to_us(ts)


def parse_tres(text: str) -> tuple[int | None, dict[str, int]]:
    """AllocTRES -> (``gres/gpu`` count or None, {type: count} of ``gres/gpu:<type>``)."""
    plain: int | None = None
    typed: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        if not name.startswith("gres/gpu"):
            continue
        if not sep or not re.fullmatch(r"\d{1,6}", value):
            raise RowError("bad_tres", f"AllocTRES entry {item!r}")
        if name == "gres/gpu":
            plain = int(value)
        elif name.startswith("gres/gpu:") and len(name) > len("gres/gpu:"):
            kind = name[len("gres/gpu:") :]
            typed[kind] = typed.get(kind, 0) + int(value)
        else:
            raise RowError("bad_tres", f"AllocTRES entry {item!r}")
    return plain, typed


def hour_slices(start_us: int, end_us: int) -> list[tuple[int, int]]:
    out = []
    s = start_us
    while s < end_us:
        e = min(end_us, s - s % HOUR_US + HOUR_US)
        out.append((s, e))
        s = e
    return out


@dataclass(frozen=True, slots=True)
class Unit:
    kind: str  # the gres type, "" for untyped GPUs
    count: int
    gpu_model: str | None
    mig_profile: str


def units(
    plain: int | None, typed: dict[str, int], catalog: GpuCatalog, default_model: str | None
) -> list[Unit]:
    out = []
    for kind, n in sorted(typed.items()):
        if n <= 0:
            continue
        model = catalog.resolve(kind)
        profile = ""
        if model is None and default_model:
            if kind in catalog.gpus[default_model].mig_profiles:
                model, profile = default_model, kind
        out.append(Unit(kind, n, model, profile))
    rest = (plain or 0) - sum(typed.values())
    if rest > 0:
        out.append(Unit("", rest, default_model, ""))
    return out


@dataclass(frozen=True, slots=True)
class _Run:
    line_no: int
    fields: dict[str, str]
    start_us: int
    end_us: int | None  # None: running
    elapsed_us: int


def spans(
    text: str,
    catalog: GpuCatalog,
    tenant_of: TenantOf,
    zone: tzinfo = UTC,
    default_model: str | None = None,
    report: ImportReport | None = None,
) -> list[Span]:
    """Every hourly slice of every GPU job run in ``text`` (see the module's docstring)."""
    report = report if report is not None else ImportReport()
    columns: tuple[str, ...] = COLUMNS
    runs: dict[tuple[str, int], _Run] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split("|")
        if "JobIDRaw" in cells and "AllocTRES" in cells:
            columns = tuple(c.strip() for c in cells)
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise SacctFormatError(
                    f"line {line_no}: the header lacks {', '.join(missing)}; run sacct -P "
                    f"--format={','.join(COLUMNS)}"
                )
            continue
        report.rows += 1
        if len(cells) != len(columns):
            report.skip(
                "malformed_line", line_no, f"{len(cells)} fields, not {len(columns)}: {line!r}"
            )
            continue
        f = dict(zip(columns, cells, strict=True))
        if "." in f["JobID"] or "." in f["JobIDRaw"]:
            report.skipped["job_step"] += 1
            continue
        if not f["JobIDRaw"].strip():
            report.skip("malformed_line", line_no, "empty JobIDRaw")
            continue
        try:
            start = parse_time(f["Start"], zone)
            if start is None:
                report.skipped["not_started"] += 1
                continue
            end = parse_time(f["End"], zone)
            if end is not None and end < start:
                end = parse_time(f["End"], zone, fold=1)
            elapsed = parse_elapsed(f["Elapsed"])
        except RowError as exc:
            report.skip(exc.reason, line_no, str(exc))
            continue
        if end is not None and end < start:
            report.skip("end_before_start", line_no, f"Start {f['Start']} End {f['End']}")
            continue
        key = (f["JobIDRaw"].strip(), start)
        seen = runs.get(key)
        if seen is None or (seen.end_us is None and end is not None):
            runs[key] = _Run(line_no, f, start, end, elapsed)
        else:
            report.skipped["duplicate_run"] += 1
    out: list[Span] = []
    for run in runs.values():
        out += _run_spans(run, catalog, tenant_of, default_model, report)
    return out


def _run_spans(
    run: _Run,
    catalog: GpuCatalog,
    tenant_of: TenantOf,
    default_model: str | None,
    report: ImportReport,
) -> list[Span]:
    f = run.fields
    try:
        plain, typed = parse_tres(f["AllocTRES"])
    except RowError as exc:
        report.skip(exc.reason, run.line_no, str(exc))
        return []
    gpu_units = units(plain, typed, catalog, default_model)
    if not gpu_units:
        report.skipped["no_gpu"] += 1
        return []
    if run.end_us is None:
        report.running += 1
        seen_until = run.start_us + run.elapsed_us
        slices = [(s, e) for s, e in hour_slices(run.start_us, seen_until) if e % HOUR_US == 0]
    else:
        slices = hour_slices(run.start_us, run.end_us)
    report.runs += 1
    account = f["Account"].strip()
    tenant = tenant_of(account)
    raw_id = f["JobIDRaw"].strip()
    node_seen = f.get("NodeList", "").strip() or f.get("Partition", "").strip() or "slurm"
    try:
        node = to_token(node_seen, "node")
    except TokenError:
        node = "slurm"
    out = []
    pieces = []  # a unit of more GPUs than one sample may hold is cut into pieces
    for u in gpu_units:
        for i, first in enumerate(range(0, u.count, MAX_GPUS_PER_SAMPLE)):
            suffix = f"#{i}" if i else ""
            pieces.append((u, min(MAX_GPUS_PER_SAMPLE, u.count - first), suffix))
    for u, count, suffix in pieces:
        try:
            gpu_uuid = to_token(f"slurm-job/{raw_id}/{u.kind or 'gpu'}{suffix}", "JobIDRaw")
        except TokenError as exc:  # pragma: no cover - raw_id is not empty here
            report.skip("malformed_line", run.line_no, str(exc))
            continue
        if u.gpu_model is None:
            reason = Reason.UNKNOWN_GPU_MODEL
            detail = f"gres/gpu:{u.kind}" if u.kind else "untyped gres/gpu and no default gpu_model"
        elif tenant is None:
            reason, detail = Reason.UNKNOWN_ACCOUNT, to_text(account, 256)
        else:
            reason, detail = "", ""
        for s, e in slices:
            span = Span(
                node=node,
                gpu_uuid=gpu_uuid,
                gpu_model=u.gpu_model or to_text(u.kind or "gpu", 256),
                mig_profile=u.mig_profile,
                gpu_count=count,
                start_us=s,
                end_us=e,
                tenant_id=None if reason else tenant,
                reason=reason,
                detail=detail,
                project_id=to_text(account),
                job_id=to_text(f["JobID"].strip()),
            )
            if reason:
                report.unattributed_us[(reason, detail)] += span.usage_us
            out.append(span)
    return out


def describe_zone(zone: tzinfo) -> str:
    return str(getattr(zone, "key", zone))
