"""Ground truth: GPU-hours per key computed straight from the job schedule.

Deliberately independent of the pipeline: it walks calendar hours with ``datetime``
arithmetic over each job's allocation, never looks at samples, and shares no code with
:mod:`pipeline.domain.hours`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devtools.sim.fleet import Job
from pipeline.domain.usage import KEY_COLUMNS

TruthKey = tuple[str, str, str, str, str, str, str, str]
# (tenant_id, hour ISO, project_id, gpu_model, mig_profile, region, provider, cluster)


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(dt: datetime) -> int:
    d = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return d.days * 86_400_000_000 + d.seconds * 1_000_000 + d.microseconds


def ground_truth(jobs: list[Job]) -> dict[TruthKey, int]:
    truth: dict[TruthKey, int] = defaultdict(int)
    for job in jobs:
        profiles: dict[str, int] = defaultdict(int)
        for _unit, profile in job.units:
            profiles[profile] += 1
        cursor = _dt(job.start_us)
        end = _dt(job.end_us)
        while cursor < end:
            hour = cursor.replace(minute=0, second=0, microsecond=0)
            seg_end = min(hour + timedelta(hours=1), end)
            micros = _us(seg_end) - _us(cursor)
            for profile, count in profiles.items():
                key = (
                    job.tenant_id,
                    hour.strftime("%Y-%m-%dT%H:00:00Z"),
                    job.project_id,
                    job.node.gpu_model,
                    profile,
                    job.node.region,
                    job.node.provider,
                    job.node.cluster,
                )
                truth[key] += micros * count
            cursor = seg_end
    return dict(truth)


def write_truth(path: Path, truth: dict[TruthKey, int], meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [list(k) + [v] for k, v in sorted(truth.items())]
    path.write_text(
        json.dumps(
            {
                "meta": meta,
                "columns": [*KEY_COLUMNS, "usage_us"],
                "rows": rows,
            }
        )
    )


def read_truth(path: Path) -> dict[TruthKey, int]:
    doc = json.loads(path.read_text())
    return {tuple(r[:8]): int(r[8]) for r in doc["rows"]}
