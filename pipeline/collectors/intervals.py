"""From two observations of a node to the usage between them (pure; DCGM and NVML).

A snapshot collector sees, at each scrape, every GPU or MIG instance of a node, who holds it
and its telemetry. What happened *between* two scrapes ``t1 < t2`` of the same unit is one
interval ``[t1, t2)``:

* **held by the same holders at both ends**: the interval is theirs; **by others**: the
  holders at ``t1`` get ``[t1, mid)`` and those at ``t2`` get ``[mid, t2)`` with
  ``mid = t1 + (t2 - t1) // 2`` (when the hand-over happened is not observed; the middle is
  the unbiased guess);
* **several holders at once** (time-slicing: pods sharing a GPU): the part is cut into equal
  consecutive pieces, one per holder in a stable order, so the GPU is never counted twice;
* **no holder**: idle capacity, unattributed (``idle``);
* a holder whose namespace maps to no tenant, a model or MIG profile the catalogue does not
  know: unattributed with that reason, never dropped;
* telemetry: gauges (activity, memory, power) are the mean of the two scrapes' values;
  energy is the difference of the counter (mJ since boot), and after a counter reset
  (the value went down: the driver reloaded) the value read at ``t2``.

A unit seen only at ``t2`` (new) starts its first interval there; one seen only at ``t1``
(gone) ends at ``t1``. Consecutive intervals of a unit share their end and start, so the
intervals of a collector that runs (and restarts, see :mod:`~pipeline.collectors.loop`)
cover its units' time exactly once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.collectors.events import Reason, Span


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a unit at a scrape: ``key`` tells holders apart across scrapes (a pod:
    ``namespace/pod``); ``tenant_id`` None means unattributed for ``reason``."""

    key: str
    tenant_id: str | None
    reason: str = ""
    detail: str = ""
    project_id: str = ""
    job_id: str = ""


@dataclass(frozen=True, slots=True)
class Reading:
    """One GPU or MIG instance at one scrape."""

    node: str  # token
    gpu_uuid: str  # token; a MIG instance: <GPU UUID>/<GPU instance id>
    gpu_model: str | None  # catalogue model, None when the name seen is unknown
    model_seen: str  # the name the source reported (modelName, NVML name)
    mig_profile: str = ""
    mig_known: bool = True  # the catalogue model has this MIG profile
    holders: tuple[Holder, ...] = ()  # sorted by key; empty: idle
    sm_activity_pct: float | None = None
    mem_used_bytes: int | None = None
    power_w: float | None = None
    energy_mj: float | None = None  # counter since boot (whole GPUs only)

    @property
    def key(self) -> str:
        return f"{self.node}/{self.gpu_uuid}"


@dataclass(slots=True)
class Snapshot:
    """Every unit a source showed at ``time_us`` (µs since the epoch)."""

    time_us: int
    readings: dict[str, Reading] = field(default_factory=dict)

    def add(self, r: Reading) -> None:
        self.readings[r.key] = r

    def to_json(self) -> dict[str, Any]:
        return {"time_us": self.time_us, "readings": [asdict(r) for r in self.readings.values()]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Snapshot:
        snap = cls(int(doc["time_us"]))
        for r in doc["readings"]:
            holders = tuple(Holder(**h) for h in r.pop("holders"))
            snap.add(Reading(**r, holders=holders))
        return snap


@dataclass(slots=True)
class Between:
    spans: list[Span] = field(default_factory=list)
    gap_us: int = 0  # an interval longer than the allowed gap: not counted, reported
    clock_went_back: bool = False
    new_units: int = 0
    gone_units: int = 0


def _mean(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return (a + b) / 2


def _energy_j(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return (b - a if b >= a else b) / 1000.0


def _parts(
    start: int, end: int, holders: tuple[Holder, ...]
) -> list[tuple[int, int, Holder | None]]:
    if not holders:
        return [(start, end, None)]
    k = len(holders)
    length = end - start
    out: list[tuple[int, int, Holder | None]] = []
    for i, h in enumerate(holders):
        s, e = start + length * i // k, start + length * (i + 1) // k
        if e > s:
            out.append((s, e, h))
    return out


def between(prev: Snapshot, cur: Snapshot, max_gap_us: int) -> Between:
    """The spans of every unit seen at both scrapes (see the module's docstring)."""
    out = Between()
    t1, t2 = prev.time_us, cur.time_us
    if t2 <= t1:
        out.clock_went_back = True
        return out
    if t2 - t1 > max_gap_us:
        out.gap_us = t2 - t1
        return out
    out.new_units = len(cur.readings.keys() - prev.readings.keys())
    out.gone_units = len(prev.readings.keys() - cur.readings.keys())
    for key in sorted(cur.readings.keys() & prev.readings.keys()):
        a, b = prev.readings[key], cur.readings[key]
        if [h.key for h in a.holders] == [h.key for h in b.holders]:
            segments = [(t1, t2, b.holders)]
        else:
            mid = t1 + (t2 - t1) // 2
            segments = [(t1, mid, a.holders), (mid, t2, b.holders)]
        sm = _mean(a.sm_activity_pct, b.sm_activity_pct)
        mem = _mean(a.mem_used_bytes, b.mem_used_bytes)
        power = _mean(a.power_w, b.power_w)
        energy = _energy_j(a.energy_mj, b.energy_mj)
        for seg_start, seg_end, holders in segments:
            for s, e, h in _parts(seg_start, seg_end, holders):
                share = (e - s) / (t2 - t1)
                tenant, reason, detail = _attribution(b, h)
                out.spans.append(
                    Span(
                        node=b.node,
                        gpu_uuid=b.gpu_uuid,
                        gpu_model=b.gpu_model or b.model_seen,
                        mig_profile=b.mig_profile,
                        gpu_count=1,
                        start_us=s,
                        end_us=e,
                        tenant_id=tenant,
                        reason=reason,
                        detail=detail,
                        project_id=h.project_id if h else "",
                        job_id=h.job_id if h else "",
                        sm_activity_pct=sm,
                        mem_used_bytes=None if mem is None else int(mem),
                        power_w=power,
                        energy_j=None if energy is None else energy * share,
                    )
                )
    return out


def _attribution(r: Reading, h: Holder | None) -> tuple[str | None, str, str]:
    if r.gpu_model is None:
        return None, Reason.UNKNOWN_GPU_MODEL, r.model_seen
    if not r.mig_known:
        return None, Reason.UNKNOWN_MIG_PROFILE, f"{r.gpu_model} {r.mig_profile}"
    if h is None:
        return None, Reason.IDLE, ""
    if h.tenant_id is None:
        return None, h.reason, h.detail
    return h.tenant_id, "", ""
