"""Compare what ClickHouse holds with the simulator's ground truth, key by key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.adapters.store import Store
from pipeline.domain.period import Period
from pipeline.sim.truth import TruthKey


@dataclass
class Verification:
    keys_expected: int
    keys_found: int
    keys_equal: int
    lost_us: int  # GPU-micro-seconds in the truth that ClickHouse lacks
    double_us: int  # GPU-micro-seconds ClickHouse has beyond the truth
    mismatches: list[tuple[TruthKey, int, int]]

    @property
    def exact(self) -> bool:
        return (
            self.lost_us == 0
            and self.double_us == 0
            and self.keys_equal == self.keys_expected == self.keys_found
        )


def stored_as_truth(store: Store, period: Period) -> dict[TruthKey, int]:
    out: dict[TruthKey, int] = {}
    for rows in store.hourly_rows(period).values():
        for r in rows:
            k = r.key
            hour = datetime.fromtimestamp(k.hour_s, UTC).strftime("%Y-%m-%dT%H:00:00Z")
            out[
                (
                    k.tenant_id,
                    hour,
                    k.project_id,
                    k.gpu_model,
                    k.mig_profile,
                    k.region,
                    k.provider,
                    k.cluster,
                )
            ] = r.usage_us
    return out


def compare(truth: dict[TruthKey, int], stored: dict[TruthKey, int]) -> Verification:
    lost = double = equal = 0
    mismatches = []
    for k in truth.keys() | stored.keys():
        t, s = truth.get(k, 0), stored.get(k, 0)
        if t == s:
            equal += 1
            continue
        if s < t:
            lost += t - s
        else:
            double += s - t
        mismatches.append((k, t, s))
    return Verification(len(truth), len(stored), equal, lost, double, sorted(mismatches)[:20])
