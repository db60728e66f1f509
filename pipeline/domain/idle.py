"""Allocating the platform's GPU cost of a period to its consumers (brief §6, issue 11). Pure.

For every cluster, GPU model and hour:

* **capacity** GPU-hours come from :mod:`pipeline.domain.capacity` (GPUs listed for that hour);
* **allocated** GPU-hours are the usage of every tenant there (``usage_us / 3.6e9`` x the MIG
  fraction, exactly), external customers included: they run on the same capacity;
* **idle** = capacity - allocated (never negative); allocated beyond capacity (or with no
  capacity listed) is **over capacity**: rented on demand for that hour, so it has no idle;
* the hour's **cost** is its capacity GPU-hours (or its allocated ones, when more) at the cost
  per GPU-hour of the capacity entry (of ``on_demand`` for the model without one).

Each consumer's use costs its GPU-hours at the same hourly cost; the idle cost of a (cluster,
GPU model) over the period is shared by the cluster's policy (``separate``: not shared;
``proportional``: in proportion to each tenant's cost of use of that model there;
``even``: in equal parts among those tenants) or stays the platform's.

**Rounding** (the rule, stated once): the platform cost of each (cluster, GPU model) over the
period is its exact cost rounded once to the currency's minor unit, half up
(:func:`pipeline.domain.money.round_money`). That amount is split over the unit's lines (each
consumer's use by tenant, project and MIG profile, idle shares, unshared idle) by the
**largest remainder** method: every line gets its exact amount rounded down to the minor unit,
and the cents still missing go one each to the lines with the largest remainders (ties: in line
order). So for every unit, and therefore for the period, charged use + idle shares + unshared
idle == platform cost exactly, and every roll-up is a sum of these rounded lines.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction

from pipeline.domain.capacity import CapacityPlan
from pipeline.domain.hierarchy import Figures, NodeKey
from pipeline.domain.hours import HOUR_US
from pipeline.domain.money import minor_digits, round_money, to_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow
from pipeline.domain.reference import GpuCatalog

KINDS = ("usage", "idle_share", "idle")
HOUR_S = 3600


@dataclass(frozen=True)
class CostLine:
    """One line of the report: a consumer's use, an idle share, or unshared idle."""

    kind: str  # usage | idle_share | idle
    node: NodeKey
    tenant_id: str  # '' for the platform's unshared idle
    cluster: str
    gpu_model: str
    mig_profile: str
    gpu_hours: Fraction  # allocated (usage lines)
    busy_gpu_hours: Fraction
    idle_gpu_hours: Fraction  # the idle GPU-hours an idle line stands for
    amount_minor: int
    period_ref: str  # the usage period it charges (an earlier one: an adjustment)
    exact: Fraction = Fraction(0)  # exact amount before rounding (not stored)

    def identity(self) -> tuple[str, str, tuple[str, ...], bool, str, str, str, str, str]:
        """What tells lines apart within a report (and matches a line against the one it
        adjusts)."""
        n = self.node
        return (
            self.period_ref,
            self.kind,
            n.path,
            n.project is not None,
            n.project or "",
            self.tenant_id,
            self.cluster,
            self.gpu_model,
            self.mig_profile,
        )

    def key_text(self) -> str:
        """A stable, injective text key (a JSON array; any Unicode in a project stays data)."""
        n = self.node
        return json.dumps(
            [
                self.kind,
                list(n.path),
                n.project,
                self.tenant_id,
                self.cluster,
                self.gpu_model,
                self.mig_profile,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def figures(self, period: str) -> Figures:
        f = Figures()
        if self.kind == "usage":
            f.gpu_hours, f.busy_gpu_hours, f.usage_minor = (
                self.gpu_hours,
                self.busy_gpu_hours,
                self.amount_minor,
            )
        elif self.kind == "idle_share":
            f.idle_share_minor = self.amount_minor
        else:
            f.idle_minor = self.amount_minor
        if self.period_ref != period:
            f.adjustment_minor = self.amount_minor
        return f


@dataclass
class UnitStats:
    """One cluster and GPU model over the period."""

    cluster: str
    gpu_model: str
    provider: str
    region: str
    ownership: str  # owned | leased | on_demand (no capacity listed)
    policy: str
    capacity_gpu_hours: Fraction = Fraction(0)
    allocated_gpu_hours: Fraction = Fraction(0)
    idle_gpu_hours: Fraction = Fraction(0)
    over_capacity_gpu_hours: Fraction = Fraction(0)
    platform_cost_minor: int = 0
    idle_cost_minor: int = 0  # shared and unshared
    shared_idle_minor: int = 0


@dataclass
class Allocation:
    period: str
    currency: str
    lines: list[CostLine]
    units: list[UnitStats]
    # (node, tenant, day of month, GPU model) -> that day's cost of use, rounded per row (a
    # chart series: idle shares are not in it)
    daily: dict[tuple[NodeKey, str, int, str], int] = field(default_factory=dict)

    @property
    def platform_cost_minor(self) -> int:
        return sum(u.platform_cost_minor for u in self.units)


def largest_remainder(exact: list[Fraction], total_minor: int, digits: int) -> list[int]:
    """Split ``total_minor`` over non-negative exact amounts: each gets its amount rounded
    down to the minor unit, the missing units go one each to the largest remainders (ties:
    the earlier amount). The parts sum to ``total_minor``."""
    scale = 10**digits
    floors, rests = [], []
    for x in exact:
        if x < 0:
            raise ValueError("largest_remainder splits non-negative amounts")
        whole, rest = divmod(x * scale, 1)
        floors.append(int(whole))
        rests.append(rest)
    missing = total_minor - sum(floors)
    if not 0 <= missing <= len(exact):
        raise ValueError(f"cannot split {total_minor} over {len(exact)} amounts")
    order = sorted(range(len(exact)), key=lambda i: (-rests[i], i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def allocate(
    period: Period,
    rows: Iterable[UsageRow],
    plan: CapacityPlan,
    catalog: GpuCatalog,
    node_of: Callable[[str, str], NodeKey],
    platform: NodeKey,
    until: datetime | None = None,
) -> Allocation:
    """The period's cost allocation (see the module doc). ``node_of(tenant, project)`` places
    a consumer in the hierarchy (``project`` '' : the tenant's cost centre itself). ``until``
    (a whole hour) ends the capacity counted before the period's end: a month in progress
    has had capacity (and idle) only up to the data's time.

    Exact in integers until the lines: GPU time in slice-micro-seconds (``usage_us`` x the MIG
    profile's slices x ``L / compute_slices``, with ``L`` the least common multiple of the
    catalogue's slice counts) and costs per GPU-hour scaled to integers, so a month of rows is
    summed without a fraction per row."""
    p = str(period)
    start_s, end_s = int(period.start.timestamp()), int(period.end.timestamp())
    cap_end_s = end_s if until is None else max(start_s, min(end_s, int(until.timestamp())))
    digits = minor_digits(plan.currency)
    slices = 1
    for gpu in catalog.gpus.values():
        slices = math.lcm(slices, gpu.compute_slices)
    unit_per_hour = HOUR_US * slices  # slice-µs in one GPU-hour
    costs = [e.cost_per_gpu_hour for c in plan.clusters.values() for e in c.capacity]
    costs += list(plan.on_demand.values())
    places = max([0] + [max(0, -int(d.as_tuple().exponent)) for d in costs])
    rate_den = 10**places
    money_den = unit_per_hour * rate_den  # exact cost = numerator / money_den

    weights: dict[tuple[str, str], int] = {}
    nodes: dict[tuple[str, str], NodeKey] = {}
    rates: dict[tuple[str, str, int], int] = {}
    entries = {
        (c.cluster, m): sorted(
            (
                int(e.effective_from.timestamp()) if e.effective_from else start_s,
                int(e.effective_until.timestamp()) if e.effective_until else end_s,
                e.gpus,
                int(e.cost_per_gpu_hour * rate_den),
            )
            for e in c.capacity
            if e.gpu_model == m
        )
        for c in plan.clusters.values()
        for m in {x.gpu_model for x in c.capacity}
    }

    def entry(cluster: str, model: str, hour_s: int) -> tuple[int, int] | None:
        """(GPUs, cost per GPU-hour x rate_den) of the capacity listed for that hour."""
        for f, u, gpus, rate in entries.get((cluster, model), ()):
            if f <= hour_s < u:
                return gpus, rate
        return None

    def rate_of(cluster: str, model: str, hour_s: int) -> int:
        k = (cluster, model, hour_s)
        r = rates.get(k)
        if r is None:
            found = entry(cluster, model, hour_s)
            if found is not None:
                r = found[1]
            elif model in plan.on_demand:
                r = int(plan.on_demand[model] * rate_den)
            else:
                raise KeyError(f"no capacity and no on_demand cost for GPU model {model!r}")
            rates[k] = r
        return r

    alloc_h: dict[tuple[str, str, int], int] = defaultdict(int)  # slice-µs per unit and hour
    acc: dict[tuple[str, str, str, str, str], list[int]] = {}  # slice-µs, busy, cost numerator
    daily: dict[tuple[NodeKey, str, int, str], int] = defaultdict(int)
    seen_units: dict[tuple[str, str], tuple[str, str]] = {}
    for row in rows:
        k = row.key
        if not start_s <= k.hour_s < end_s or row.usage_us <= 0:
            continue
        w = weights.get((k.gpu_model, k.mig_profile))
        if w is None:
            frac = catalog.fraction(k.gpu_model, k.mig_profile) * slices
            if frac.denominator != 1:
                raise ValueError(f"MIG fraction of {k.gpu_model} {k.mig_profile} is not whole")
            w = weights[(k.gpu_model, k.mig_profile)] = int(frac)
        units = row.usage_us * w
        cost = units * rate_of(k.cluster, k.gpu_model, k.hour_s)
        alloc_h[(k.cluster, k.gpu_model, k.hour_s)] += units
        line = acc.get((k.cluster, k.gpu_model, k.mig_profile, k.tenant_id, k.project_id))
        if line is None:
            line = acc[(k.cluster, k.gpu_model, k.mig_profile, k.tenant_id, k.project_id)] = [
                0,
                0,
                0,
            ]
        line[0] += units
        line[1] += min(row.busy_us, row.usage_us) * w
        line[2] += cost
        if (k.cluster, k.gpu_model) not in seen_units:
            seen_units[(k.cluster, k.gpu_model)] = (k.provider, k.region)
        node = nodes.get((k.tenant_id, k.project_id))
        if node is None:
            node = nodes[(k.tenant_id, k.project_id)] = node_of(k.tenant_id, k.project_id)
        day = (k.hour_s - start_s) // 86400 + 1
        daily[(node, k.tenant_id, day, k.gpu_model)] += cost

    # capacity and idle per unit, hour by hour
    units_out: dict[tuple[str, str], UnitStats] = {}
    idle_num: dict[tuple[str, str], int] = defaultdict(int)
    for cluster, model in sorted(set(entries) | set(seen_units)):
        c = plan.clusters.get(cluster)
        listed = (cluster, model) in entries
        provider, region = (c.provider, c.region) if c is not None else seen_units[(cluster, model)]
        stats = UnitStats(
            cluster,
            model,
            provider,
            region,
            c.ownership if c is not None and listed else "on_demand",
            plan.policy(cluster),
        )
        cap_total = used_total = idle_total = over_total = 0
        for hour_s in range(start_s, end_s, HOUR_S):
            found = entry(cluster, model, hour_s) if listed and hour_s < cap_end_s else None
            cap = found[0] * unit_per_hour if found is not None else 0
            used = alloc_h.get((cluster, model, hour_s), 0)
            if not cap and not used:
                continue
            cap_total += cap
            used_total += used
            if cap >= used:
                idle_total += cap - used
                idle_num[(cluster, model)] += (cap - used) * rate_of(cluster, model, hour_s)
            else:
                over_total += used - cap
        if cap_total or used_total:
            stats.capacity_gpu_hours = Fraction(cap_total, unit_per_hour)
            stats.allocated_gpu_hours = Fraction(used_total, unit_per_hour)
            stats.idle_gpu_hours = Fraction(idle_total, unit_per_hour)
            stats.over_capacity_gpu_hours = Fraction(over_total, unit_per_hour)
            units_out[(cluster, model)] = stats

    # the unit's lines, exact, then the split of its rounded cost
    by_unit: dict[tuple[str, str], list[CostLine]] = defaultdict(list)
    for (cluster, model, mig, tenant, project), (u, busy, num) in sorted(acc.items()):
        by_unit[(cluster, model)].append(
            CostLine(
                "usage",
                nodes[(tenant, project)],
                tenant,
                cluster,
                model,
                mig,
                Fraction(u, unit_per_hour),
                Fraction(busy, unit_per_hour),
                Fraction(0),
                0,
                p,
                Fraction(num, money_den),
            )
        )
    lines: list[CostLine] = []
    for unit_key, stats in sorted(units_out.items()):
        usage = by_unit.get(unit_key, [])
        idle_x = Fraction(idle_num.get(unit_key, 0), money_den)
        unit_lines = usage + _idle_lines(stats, usage, idle_x, node_of, platform, p)
        exact_total = sum((ln.exact for ln in unit_lines), Fraction(0))
        total_minor = to_minor(round_money(exact_total, plan.currency), plan.currency)
        amounts = largest_remainder([ln.exact for ln in unit_lines], total_minor, digits)
        for ln, amount in zip(unit_lines, amounts, strict=True):
            lines.append(replace(ln, amount_minor=amount))
        stats.platform_cost_minor = total_minor
        stats.idle_cost_minor = sum(
            a for ln, a in zip(unit_lines, amounts, strict=True) if ln.kind != "usage"
        )
        stats.shared_idle_minor = sum(
            a for ln, a in zip(unit_lines, amounts, strict=True) if ln.kind == "idle_share"
        )
    daily_minor = {
        k: to_minor(round_money(Fraction(v, money_den), plan.currency), plan.currency)
        for k, v in daily.items()
    }
    lines.sort(key=CostLine.identity)
    return Allocation(
        p, plan.currency, lines, [units_out[k] for k in sorted(units_out)], daily_minor
    )


def _idle_lines(
    stats: UnitStats,
    usage: list[CostLine],
    idle_cost: Fraction,
    node_of: Callable[[str, str], NodeKey],
    platform: NodeKey,
    p: str,
) -> list[CostLine]:
    if idle_cost <= 0 and stats.idle_gpu_hours <= 0:
        return []
    weights: dict[str, Fraction] = defaultdict(Fraction)
    for ln in usage:
        weights[ln.tenant_id] += ln.exact if stats.policy == "proportional" else Fraction(1)
    total_w = sum(weights.values(), Fraction(0))
    if stats.policy == "separate" or total_w <= 0:
        return [
            CostLine(
                "idle",
                platform,
                "",
                stats.cluster,
                stats.gpu_model,
                "",
                Fraction(0),
                Fraction(0),
                stats.idle_gpu_hours,
                0,
                p,
                idle_cost,
            )
        ]
    if stats.policy == "even":
        weights = defaultdict(Fraction, {t: Fraction(1) for t in weights})
        total_w = Fraction(len(weights))
    return [
        CostLine(
            "idle_share",
            node_of(t, ""),
            t,
            stats.cluster,
            stats.gpu_model,
            "",
            Fraction(0),
            Fraction(0),
            stats.idle_gpu_hours * w / total_w,
            0,
            p,
            idle_cost * w / total_w,
        )
        for t, w in sorted(weights.items())
    ]
