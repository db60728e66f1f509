"""Compare what ClickHouse holds with the simulator's ground truth, key by key."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from devtools.sim.truth import TruthKey
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.invoice import compose
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow, rate_usage
from pipeline.domain.usage import HourlyKey


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
    tenant, _, *rest = k.values()
    return (tenant, hour, *rest)


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
    truth: dict[TruthKey, int], config: Config, period: Period
) -> dict[str, tuple[Fraction, Decimal]]:
    """What a clean first billing run of ``period`` must charge each tenant: the ground truth
    rated on each tenant's rate card and contract (no adjustments, no credits used before).
    Tenants whose contract asks for a zero invoice appear even without usage.
    Returns tenant -> (usage GPU-hours, total)."""
    rows: dict[str, list[UsageRow]] = defaultdict(list)
    for (tid, hour, project, model, mig, region, provider, cluster), usage in truth.items():
        hour_s = int(datetime.strptime(hour, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        key = HourlyKey(tid, hour_s, project, model, mig, region, provider, cluster)
        rows[tid].append(UsageRow(key, usage))
    out: dict[str, tuple[Fraction, Decimal]] = {}
    for tenant in config.reference.tenants.values():
        contract = config.contract(tenant.id)
        if tenant.id not in rows and not (tenant.kind == "external" and contract.zero_invoice):
            continue
        card = config.card_for(tenant.id)
        rated = rate_usage(rows[tenant.id], card, config.reference.catalog, contract.tier_of)
        qty = sum((ln.quantity for ln in rated.lines), Fraction(0))
        if tenant.kind == "internal":
            out[tenant.id] = (qty, rated.subtotal)
        else:
            out[tenant.id] = (qty, compose(period, rated, contract, card.currency).total)
    return out
