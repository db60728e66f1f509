"""DCGM-exporter's Prometheus text -> a :class:`~pipeline.collectors.intervals.Snapshot` (pure).

The exposition format is read by ``prometheus_client``'s own parser. A text it refuses as a
whole (one malformed line stops it) is read again line by line, so that a bad line is
skipped and counted instead of losing the scrape.

Each series is labelled with the GPU's ``UUID``, ``modelName``, ``gpu`` index, the node
(``Hostname``, ``hostname`` in the newest exporter: both accepted), for MIG instances
``GPU_I_ID`` and ``GPU_I_PROFILE``, and, with the exporter's Kubernetes mode on, ``pod``,
``namespace`` and ``container`` of the workload holding the unit (a unit shared by several
pods appears once per pod). Units:

* a whole GPU: ``gpu_uuid`` = its ``UUID``; a MIG instance: ``<UUID>/<GPU_I_ID>`` (stable as
  long as the instance exists; the parent GPU of MIG instances is not a unit of its own);
* every label value is mapped into the token character set (:mod:`~pipeline.collectors.tokens`);
* the model through the catalogue's aliases (``NVIDIA H100 80GB HBM3`` -> ``H100``);
* telemetry: ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (ratio, as %), else ``DCGM_FI_DEV_GPU_UTIL``
  (%, not reported for MIG instances); ``DCGM_FI_DEV_FB_USED`` (MiB); ``DCGM_FI_DEV_POWER_USAGE``
  (W) and ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (mJ counter since boot) for whole GPUs only
  (they describe the whole board, not an instance). NaN, infinite or out-of-range values are
  left out, never billed anyway.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from pipeline.collectors.events import Reason
from pipeline.collectors.intervals import Holder, Reading, Snapshot
from pipeline.collectors.tokens import TokenError, to_text, to_token
from pipeline.domain.reference import GpuCatalog

GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
TOTAL_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
FIELDS = {GR_ENGINE_ACTIVE, GPU_UTIL, FB_USED, POWER_USAGE, TOTAL_ENERGY}
MAX_PROBLEMS = 5  # problems quoted in a report (all are counted)

# namespace -> tenant id, or None when it maps to no tenant
TenantOf = Callable[[str], str | None]


@dataclass(slots=True)
class ParseReport:
    lines_skipped: int = 0  # malformed exposition lines
    series_skipped: Counter[str] = field(default_factory=Counter)  # reason -> series
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text[:300])


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str, report: ParseReport) -> list[Series]:
    """Every sample of the exposition text; malformed lines skipped and counted."""
    try:
        return list(_samples(text))
    except Exception:  # noqa: BLE001 - the parser raises ValueError, IndexError, ...
        pass
    out: list[Series] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            out.extend(_samples(line + "\n"))
        except Exception as exc:  # noqa: BLE001
            report.lines_skipped += 1
            report.problem(f"line {n}: {type(exc).__name__}: {exc}: {line[:120]!r}")
    return out


def _samples(text: str) -> Iterator[Series]:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name[: -len("_total")] if s.name.endswith("_total") else s.name
            yield Series(name, dict(s.labels), float(s.value))


def _finite(v: float | None, lo: float = 0.0, hi: float = math.inf) -> float | None:
    if v is None or not math.isfinite(v) or not lo <= v <= hi:
        return None
    return v


@dataclass(slots=True)
class _Unit:
    node: str
    uuid: str
    gi_id: str
    model_seen: str = ""
    profile: str = ""
    holders: dict[str, Holder] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)


def snapshot(
    text: str,
    time_us: int,
    catalog: GpuCatalog,
    tenant_of: TenantOf,
    default_node: str | None = None,
    report: ParseReport | None = None,
) -> Snapshot:
    """The units of one scrape, with their holders and telemetry (see the module)."""
    report = report if report is not None else ParseReport()
    units: dict[tuple[str, str, str], _Unit] = {}
    for s in parse_exposition(text, report):
        if s.name not in FIELDS:
            continue
        lb = s.labels
        uuid = lb.get("UUID", "")
        node_seen = lb.get("Hostname") or lb.get("hostname") or default_node or ""
        if not uuid:
            report.series_skipped["no_uuid"] += 1
            report.problem(f"{s.name} without a UUID label: {_short(lb)}")
            continue
        if not node_seen:
            report.series_skipped["no_hostname"] += 1
            report.problem(f"{s.name} without Hostname/hostname (give --node): {_short(lb)}")
            continue
        gi = lb.get("GPU_I_ID", "")
        unit = units.setdefault((node_seen, uuid, gi), _Unit(node_seen, uuid, gi))
        unit.model_seen = unit.model_seen or lb.get("modelName", "")
        unit.profile = unit.profile or lb.get("GPU_I_PROFILE", "")
        pod = lb.get("pod", "")
        if pod:
            ns = lb.get("namespace", "")
            key = f"{ns}/{pod}"
            if key not in unit.holders:
                tenant = tenant_of(ns)
                unit.holders[key] = Holder(
                    key=key,
                    tenant_id=tenant,
                    reason="" if tenant else Reason.UNMAPPED_NAMESPACE,
                    detail="" if tenant else to_text(ns, 256),
                    project_id=to_text(ns),
                    job_id=to_text(pod),
                )
        unit.values.setdefault(s.name, s.value)
    mig_parents = {(u.node, u.uuid) for u in units.values() if u.gi_id}
    snap = Snapshot(time_us)
    for u in units.values():
        if not u.gi_id and (u.node, u.uuid) in mig_parents:
            continue  # a MIG-partitioned GPU: its instances are the units
        try:
            node = to_token(u.node, "Hostname")
            gpu_uuid = to_token(f"{u.uuid}/{u.gi_id}" if u.gi_id else u.uuid, "UUID")
        except TokenError as exc:
            report.series_skipped["bad_label"] += 1
            report.problem(str(exc))
            continue
        model = catalog.resolve(u.model_seen) if u.model_seen else None
        mig_known = True
        if u.gi_id:
            gpu = catalog.gpus.get(model) if model else None
            mig_known = gpu is not None and u.profile in gpu.mig_profiles
        snap.add(
            Reading(
                node=node,
                gpu_uuid=gpu_uuid,
                gpu_model=model,
                model_seen=to_text(u.model_seen or "(no modelName)", 256),
                mig_profile=to_text(u.profile, 32) if u.gi_id else "",
                mig_known=mig_known,
                holders=tuple(u.holders[k] for k in sorted(u.holders)),
                sm_activity_pct=_activity(u),
                mem_used_bytes=_mem(u.values.get(FB_USED)),
                power_w=None if u.gi_id else _finite(u.values.get(POWER_USAGE)),
                energy_mj=None if u.gi_id else _finite(u.values.get(TOTAL_ENERGY)),
            )
        )
    return snap


def _activity(u: _Unit) -> float | None:
    ratio = _finite(u.values.get(GR_ENGINE_ACTIVE), 0.0, 1.0)
    if ratio is not None:
        return ratio * 100
    return _finite(u.values.get(GPU_UTIL), 0.0, 100.0)


def _mem(mib: float | None) -> int | None:
    v = _finite(mib, 0.0, 2.0**40)  # 1 EiB: anything above is not a reading
    return None if v is None else int(v * 1024 * 1024)


def _short(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v[:40]!r}" for k, v in list(labels.items())[:6])
