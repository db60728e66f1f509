"""A simulated GPU fleet and its jobs over a period (pure, seeded, no I/O).

Nodes belong to a partner (provider), a region and a cluster; each node has 8 GPUs (4 for
L40S) of one model, some nodes are partitioned into MIG instances. A node runs one tenant's
job at a time (node-exclusive scheduling); jobs start and stop at arbitrary seconds. A node's
collector reports every ``interval_s`` seconds (with a per-node phase, so reports straddle
hour boundaries) one message holding a sample per allocated GPU or MIG instance.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pipeline.domain.hours import US_PER_SECOND, from_us, to_us
from pipeline.domain.reference import ReferenceData

MIG_LAYOUTS = {  # per GPU: the instances a MIG-mode GPU is cut into (7 compute slices)
    "H100": ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"],
    "A100": ["4g.40gb", "2g.20gb", "1g.10gb"],
    "H200": ["3g.71gb", "3g.71gb", "1g.18gb"],
    "B200": ["7g.180gb"],
}
MODEL_WEIGHTS = {"H100": 5, "H200": 3, "B200": 2, "A100": 3, "L40S": 2}


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    provider: str
    region: str
    cluster: str
    gpu_model: str
    gpus: int
    mig: bool
    phase_s: int

    def units(self) -> list[tuple[str, str]]:
        """Allocatable units: (unit id, MIG profile or '')."""
        if not self.mig:
            return [(f"GPU-{self.name}-{g}", "") for g in range(self.gpus)]
        return [
            (f"MIG-{self.name}-{g}-{i}", profile)
            for g in range(self.gpus)
            for i, profile in enumerate(MIG_LAYOUTS[self.gpu_model])
        ]


@dataclass(frozen=True, slots=True)
class Job:
    node: Node
    tenant_id: str
    project_id: str
    job_id: str
    start_us: int
    end_us: int
    units: tuple[tuple[str, str], ...]  # (unit id, MIG profile)
    sm_activity_pct: float


@dataclass(frozen=True, slots=True)
class Report:
    """One collector message: a node's samples for one collection window."""

    time_us: int  # when it is sent (window end)
    node: Node
    job: Job
    start_us: int
    end_us: int


def build_fleet(ref: ReferenceData, nodes: int, rng: random.Random, interval_s: int) -> list[Node]:
    placements = [(p.id, r) for p in ref.partners.values() for r in p.regions]
    models = [m for m in MODEL_WEIGHTS if m in ref.catalog.gpus]
    weights = [MODEL_WEIGHTS[m] for m in models]
    fleet = []
    for i in range(nodes):
        provider, region = placements[i % len(placements)]
        model = rng.choices(models, weights)[0]
        mig = model in MIG_LAYOUTS and rng.random() < 0.25
        fleet.append(
            Node(
                name=f"{region}-n{i:04d}",
                provider=provider,
                region=region,
                cluster=f"{provider}-{region}-c{1 + i % 2}",
                gpu_model=model,
                gpus=4 if model == "L40S" else 8,
                mig=mig,
                phase_s=rng.randrange(interval_s),
            )
        )
    return fleet


def schedule_jobs(
    node: Node, tenants: list[str], start: datetime, end: datetime, rng: random.Random
) -> list[Job]:
    """Alternate idle gaps and jobs on a node across ``[start, end)``."""
    jobs = []
    t = to_us(start) + int(rng.expovariate(1 / 3600) * US_PER_SECOND)
    stop = to_us(end)
    units = node.units()
    n = 0
    while t < stop:
        duration = max(300, min(int(rng.expovariate(1 / (6 * 3600))), 3 * 86400))
        job_end = min(t + duration * US_PER_SECOND + rng.randrange(US_PER_SECOND), stop)
        tenant = rng.choice(tenants)
        k = rng.randint(1, len(units))
        jobs.append(
            Job(
                node=node,
                tenant_id=tenant,
                project_id=f"{tenant}-p{rng.randint(1, 3)}",
                job_id=f"{node.name}-j{n}",
                start_us=t,
                end_us=job_end,
                units=tuple(rng.sample(units, k)),
                sm_activity_pct=round(rng.uniform(15, 98), 1),
            )
        )
        n += 1
        t = job_end + int(rng.expovariate(1 / 5400) * US_PER_SECOND) + US_PER_SECOND
    return jobs


def reports(
    node: Node, jobs: list[Job], start: datetime, end: datetime, interval_s: int
) -> Iterator[Report]:
    """Collection windows of a node, clipped to its jobs and to the period, in time order."""
    p_start, p_end = to_us(start), to_us(end)
    step = interval_s * US_PER_SECOND
    first_tick = p_start + node.phase_s * US_PER_SECOND
    j = 0
    w_start = p_start
    w_end = first_tick if first_tick > p_start else first_tick + step
    while w_start < p_end and j < len(jobs):
        w_end = min(w_end, p_end)
        while j < len(jobs) and jobs[j].end_us <= w_start:
            j += 1
        k = j
        while k < len(jobs) and jobs[k].start_us < w_end:
            job = jobs[k]
            s, e = max(job.start_us, w_start), min(job.end_us, w_end)
            if s < e:
                yield Report(w_end, node, job, s, e)
            k += 1
        w_start, w_end = w_end, w_end + step


def all_reports(
    fleet: list[Node], jobs: dict[str, list[Job]], start: datetime, end: datetime, interval_s: int
) -> Iterator[Report]:
    """Every node's reports merged in send-time order (a whole fleet, in accelerated time)."""
    streams = [reports(n, jobs[n.name], start, end, interval_s) for n in fleet]
    return heapq.merge(*streams, key=lambda r: (r.time_us, r.node.name))


def report_events(r: Report) -> list[dict[str, object]]:
    """The CloudEvents of one report (one per allocated GPU or MIG instance)."""
    source = f"//collector/{r.node.provider}/{r.node.cluster}/{r.node.name}"
    start, end = from_us(r.start_us).isoformat(), from_us(r.end_us).isoformat()
    out: list[dict[str, object]] = []
    for unit, profile in r.job.units:
        data: dict[str, object] = {
            "tenant_id": r.job.tenant_id,
            "project_id": r.job.project_id,
            "job_id": r.job.job_id,
            "cluster": r.node.cluster,
            "region": r.node.region,
            "provider": r.node.provider,
            "node": r.node.name,
            "gpu_uuid": unit,
            "gpu_model": r.node.gpu_model,
            "gpu_count": 1,
            "start": start,
            "end": end,
            "sm_activity_pct": r.job.sm_activity_pct,
        }
        if profile:
            data["mig_profile"] = profile
        out.append(
            {
                "specversion": "1.0",
                "id": f"{unit}@{r.start_us}",
                "source": source,
                "type": "gpu.usage.v1",
                "time": end,
                "subject": r.job.tenant_id,
                "datacontenttype": "application/json",
                "data": data,
            }
        )
    return out
