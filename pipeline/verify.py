"""Compare what ClickHouse holds with the simulator's ground truth, key by key."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.hours import HOUR_US
from pipeline.domain.money import round_money
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
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
            out[truth_key(r.key)] = r.usage_us
    return out


def truth_key(k: HourlyKey) -> TruthKey:
    """An hourly key in the ground truth's form (hour as ISO text)."""
    hour = datetime.fromtimestamp(k.hour_s, UTC).strftime("%Y-%m-%dT%H:00:00Z")
    return (
        k.tenant_id,
        hour,
        k.project_id,
        k.gpu_model,
        k.mig_profile,
        k.region,
        k.provider,
        k.cluster,
    )


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


def expected_bills(
    truth: dict[TruthKey, int], config: Config
) -> dict[str, tuple[Fraction, Decimal]]:
    """What a clean billing run must charge each tenant: rate x ground truth, one line per GPU
    model and MIG profile, rounded once per line. Returns tenant -> (GPU-hours, amount)."""
    per_line: dict[tuple[str, str, str], int] = defaultdict(int)
    for (tenant, _h, _p, model, mig, *_rest), usage in truth.items():
        per_line[(tenant, model, mig)] += usage
    out: dict[str, tuple[Fraction, Decimal]] = {}
    catalog = config.reference.catalog
    for (tenant, model, mig), usage in sorted(per_line.items()):
        card = config.rate_cards[config.reference.tenants[tenant].rate_card]
        qty = Fraction(usage, HOUR_US) * catalog.fraction(model, mig)
        amount = round_money(qty * Fraction(card.prices[model]), card.currency)
        q0, a0 = out.get(tenant, (Fraction(0), Decimal(0)))
        out[tenant] = (q0 + qty, a0 + amount)
    return out
