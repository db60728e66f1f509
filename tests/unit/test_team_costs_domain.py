"""Team cost domain (issue 11), pure: cost-centre paths, exact roll-ups, idle allocation with
its three policies and the largest-remainder split, budgets and their projection."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.budgets import BudgetPlan, projected_minor, status
from pipeline.domain.capacity import CapacityPlan
from pipeline.domain.hierarchy import Figures, NodeKey, parse_cost_centre, roll_up, walk
from pipeline.domain.idle import allocate, largest_remainder
from pipeline.domain.period import Period
from pipeline.domain.rating import UsageRow
from pipeline.domain.reference import GpuCatalog
from pipeline.domain.usage import HourlyKey

pytestmark = pytest.mark.unit

H = 3_600_000_000
OCT = Period.parse("2026-10")
T0 = int(OCT.start.timestamp())
CATALOG = GpuCatalog.model_validate(
    {
        "gpus": {
            "H100": {"memory_gb": 80, "compute_slices": 7, "mig_profiles": {"3g.40gb": 3}},
            "L40S": {"memory_gb": 48, "compute_slices": 1},
        }
    }
)
TEAMS = {"t-a": ("rnd", "a"), "t-b": ("rnd", "b"), "t-c": ("ops", "c")}
PLATFORM = NodeKey(("platform", "gpu"))


def node_of(tenant: str, project: str) -> NodeKey:
    return NodeKey(TEAMS.get(tenant, ("external", tenant)), project or None)


def plan(policy: str = "separate", gpus: int = 2, cost: str = "1.00") -> CapacityPlan:
    return CapacityPlan.model_validate(
        {
            "currency": "USD",
            "idle_policy": policy,
            "on_demand": {"H100": "3.00", "L40S": "0.50"},
            "clusters": [
                {
                    "cluster": "c1",
                    "provider": "p",
                    "region": "r",
                    "ownership": "owned",
                    "capacity": [{"gpu_model": "H100", "gpus": gpus, "cost_per_gpu_hour": cost}],
                }
            ],
        }
    )


def row(tenant: str, hour: int, usage_us: int, project: str = "p1", **kw: str) -> UsageRow:
    key = HourlyKey(
        tenant,
        T0 + hour * 3600,
        project,
        kw.get("gpu", "H100"),
        kw.get("mig", ""),
        "r",
        "p",
        kw.get("cluster", "c1"),
    )
    return UsageRow(key, usage_us, usage_us // 2)


# -- cost-centre paths ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/",
        "research/",
        "/research",
        "research//vision",
        "research/../finance",
        "..",
        ".",
        "research/./vision",
        "Research",
        "research\\vision",
        "research/vision\x00",
        "résearch",
        "research vision",
        "a/" * 9 + "a",
        "x" * 300,
        "research/visión",
        "research/%2e%2e",
    ],
)
def test_hostile_cost_centre_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cost_centre(bad)


def test_scope_is_segment_wise() -> None:
    assert NodeKey(("research", "vision")).within(("research",))
    assert not NodeKey(("researchers",)).within(("research",))
    assert NodeKey(("research",), "a/b").within(("research",))
    assert not NodeKey(("research",)).within(("research", "vision"))


def test_a_project_with_separators_stays_one_node() -> None:
    key = NodeKey(("research", "vision"), "../../finance/x")
    assert key.parent == NodeKey(("research", "vision"))
    assert key.ancestors() == [NodeKey(("research",)), NodeKey(("research", "vision")), key]


# -- largest remainder ------------------------------------------------------------------------
def test_largest_remainder_gives_the_missing_cents_to_the_largest_remainders() -> None:
    thirds = [Fraction(1, 3)] * 3  # 0.333... each, 1.00 in all
    assert largest_remainder(thirds, 100, 2) == [34, 33, 33]
    # 0.005 and 0.015: both remainders are half a cent, a tie goes to the earlier line
    assert largest_remainder([Fraction(1, 200), Fraction(3, 200)], 2, 2) == [1, 1]
    assert largest_remainder([Fraction(1, 200), Fraction(7, 400)], 2, 2) == [0, 2]


@given(st.lists(st.fractions(min_value=0, max_value=1000, max_denominator=10**6), max_size=30))
def test_largest_remainder_sums_to_the_rounded_total(xs: list[Fraction]) -> None:
    from pipeline.domain.money import round_money, to_minor

    total = to_minor(round_money(sum(xs, Fraction(0)), "USD"), "USD")
    parts = largest_remainder(xs, total, 2)
    assert sum(parts) == total
    assert all(abs(Fraction(p, 100) - x) < Fraction(1, 100) for p, x in zip(parts, xs, strict=True))


# -- allocation -------------------------------------------------------------------------------
def test_separate_idle_stays_the_platforms_and_everything_adds_up() -> None:
    # 2 GPUs x 744 h at 1.00 = 1488.00; t-a uses 1 GPU for 10 h (10.00) on project p1 and
    # a 3/7 MIG slice for 7 h (3 GPU-h = 3.00) on p2
    rows = [row("t-a", h, H) for h in range(10)] + [
        row("t-a", h, H, project="p2", mig="3g.40gb") for h in range(7)
    ]
    a = allocate(OCT, rows, plan("separate"), CATALOG, node_of, PLATFORM)
    by = {(ln.kind, ln.node.project, ln.mig_profile): ln for ln in a.lines}
    assert by[("usage", "p1", "")].amount_minor == 1000
    assert by[("usage", "p2", "3g.40gb")].gpu_hours == 3
    assert by[("usage", "p2", "3g.40gb")].amount_minor == 300
    idle = by[("idle", None, "")]
    assert (idle.node, idle.idle_gpu_hours, idle.amount_minor) == (PLATFORM, 1488 - 13, 147500)
    assert a.platform_cost_minor == 148800 == sum(ln.amount_minor for ln in a.lines)
    (unit,) = a.units
    assert (unit.capacity_gpu_hours, unit.allocated_gpu_hours) == (1488, 13)


def test_proportional_and_even_share_idle_among_the_units_users() -> None:
    rows = [row("t-a", h, 3 * H // 2) for h in range(10)] + [
        row("t-b", h, H // 2) for h in range(10)
    ]
    # 15 + 5 GPU-h used of 1488: idle 1468 GPU-h = 1468.00
    prop = allocate(OCT, rows, plan("proportional"), CATALOG, node_of, PLATFORM)
    shares = {ln.tenant_id: ln.amount_minor for ln in prop.lines if ln.kind == "idle_share"}
    assert shares == {"t-a": 110100, "t-b": 36700}  # 3:1
    assert not [ln for ln in prop.lines if ln.kind == "idle"]
    even = allocate(OCT, rows, plan("even"), CATALOG, node_of, PLATFORM)
    shares = {ln.tenant_id: ln.amount_minor for ln in even.lines if ln.kind == "idle_share"}
    assert shares == {"t-a": 73400, "t-b": 73400}
    for a in (prop, even):
        assert sum(ln.amount_minor for ln in a.lines) == a.platform_cost_minor == 148800
        share_nodes = {ln.node for ln in a.lines if ln.kind == "idle_share"}
        assert share_nodes == {NodeKey(("rnd", "a")), NodeKey(("rnd", "b"))}  # not a project


def test_usage_beyond_capacity_is_on_demand_with_no_idle() -> None:
    rows = [row("t-a", 0, 3 * H), row("t-c", 0, H, gpu="L40S", cluster="elsewhere")]
    a = allocate(OCT, rows, plan(gpus=2), CATALOG, node_of, PLATFORM)
    units = {(u.cluster, u.gpu_model): u for u in a.units}
    assert units[("c1", "H100")].over_capacity_gpu_hours == 1
    assert units[("elsewhere", "L40S")].ownership == "on_demand"
    assert units[("elsewhere", "L40S")].platform_cost_minor == 50  # 1 h at 0.50 on demand
    assert sum(ln.amount_minor for ln in a.lines) == a.platform_cost_minor


def test_effective_dated_capacity_changes_cost_and_idle_mid_month() -> None:
    p = CapacityPlan.model_validate(
        {
            "on_demand": {"H100": "3.00", "L40S": "0.50"},
            "clusters": [
                {
                    "cluster": "c1",
                    "provider": "p",
                    "region": "r",
                    "ownership": "leased",
                    "capacity": [
                        {
                            "gpu_model": "H100",
                            "gpus": 1,
                            "cost_per_gpu_hour": "1.00",
                            "effective_until": "2026-10-11T00:00:00Z",
                        },
                        {
                            "gpu_model": "H100",
                            "gpus": 2,
                            "cost_per_gpu_hour": "2.00",
                            "effective_from": "2026-10-11T00:00:00Z",
                        },
                    ],
                }
            ],
        }
    )
    a = allocate(OCT, [], p, CATALOG, node_of, PLATFORM)
    # 240 h x 1 GPU x 1.00 + 504 h x 2 GPUs x 2.00
    assert a.platform_cost_minor == 24000 + 201600
    assert a.units[0].idle_gpu_hours == 240 + 1008


def test_overlapping_capacity_and_float_costs_are_refused() -> None:
    base = {"cluster": "c1", "provider": "p", "region": "r", "ownership": "owned"}
    with pytest.raises(ValueError, match="overlap"):
        CapacityPlan.model_validate(
            {
                "on_demand": {},
                "clusters": [
                    {
                        **base,
                        "capacity": [
                            {"gpu_model": "H100", "gpus": 1, "cost_per_gpu_hour": "1"},
                            {"gpu_model": "H100", "gpus": 1, "cost_per_gpu_hour": "2"},
                        ],
                    }
                ],
            }
        )
    with pytest.raises(ValueError, match="binary float"):
        CapacityPlan.model_validate(
            {
                "on_demand": {},
                "clusters": [
                    {
                        **base,
                        "capacity": [{"gpu_model": "H100", "gpus": 1, "cost_per_gpu_hour": 1.1}],
                    }
                ],
            }
        )


@settings(max_examples=40, deadline=None)
@given(
    policy=st.sampled_from(["separate", "proportional", "even"]),
    gpus=st.integers(1, 3),
    cost=st.sampled_from(["0.37", "1.2345", "2", "0.001"]),
    usage=st.lists(
        st.tuples(
            st.sampled_from(["t-a", "t-b", "t-c", "ext-1"]),
            st.integers(0, 743),
            st.integers(1, 2 * H),
            st.sampled_from(["p1", "p2", "", "=evil", "a/b"]),
            st.sampled_from(["", "3g.40gb"]),
        ),
        max_size=25,
    ),
)
def test_every_roll_up_is_exact_and_charged_plus_unshared_idle_is_the_platform_cost(
    policy: str, gpus: int, cost: str, usage: list[tuple[str, int, int, str, str]]
) -> None:
    rows = [row(t, h, u, project=p, mig=m) for t, h, u, p, m in usage]
    a = allocate(OCT, rows, plan(policy, gpus, cost), CATALOG, node_of, PLATFORM)
    nodes = roll_up((ln.node, ln.figures("2026-10")) for ln in a.lines)
    charged = sum(n.total.charged_minor for n in nodes.values() if n.key.parent is None)
    unshared = sum(n.total.idle_minor for n in nodes.values() if n.key.parent is None)
    assert charged + unshared == a.platform_cost_minor
    assert a.platform_cost_minor == sum(u.platform_cost_minor for u in a.units)
    for node in walk(nodes):  # a parent = its own lines + its children, to the cent
        expect = Figures()
        expect.add(node.own)
        for c in node.children:
            expect.add(nodes[c].total)
        assert expect == node.total
    exact = sum((ln.exact for ln in a.lines), Fraction(0))
    assert abs(Fraction(a.platform_cost_minor, 100) - exact) <= Fraction(len(a.units), 200)


# -- budgets ----------------------------------------------------------------------------------
def test_projection_is_the_run_rate_and_statuses() -> None:
    ten_days = datetime(2026, 10, 11, tzinfo=UTC)
    assert projected_minor(10_000, 0, OCT, ten_days) == 31_000  # 100.00 over 10 of 31 days
    assert projected_minor(10_000, 500, OCT, ten_days) == 31_500  # adjustments do not recur
    assert projected_minor(10_000, 0, OCT, datetime(2026, 11, 3, tzinfo=UTC)) == 10_000
    assert status(30_000, 10_000, 31_000, Decimal(100)) == "at_risk"
    assert status(40_000, 10_000, 31_000, Decimal(100)) == "ok"
    assert status(40_000, 10_000, 31_000, Decimal(75)) == "at_risk"
    assert status(9_999, 10_000, 31_000, Decimal(100)) == "over"


def test_budgets_in_force_take_the_latest_effective_from() -> None:
    plan_ = BudgetPlan.model_validate(
        {
            "budgets": [
                {"cost_centre": "rnd", "monthly": "100.00"},
                {"cost_centre": "rnd", "monthly": "200.00", "effective_from": "2026-10"},
                {"cost_centre": "rnd", "monthly": "300.00", "effective_from": "2026-12"},
            ]
        }
    )
    assert plan_.for_period(OCT) == {("rnd",): Decimal("200.00")}
    assert plan_.for_period(Period.parse("2026-09")) == {("rnd",): Decimal("100.00")}
    with pytest.raises(ValueError):
        BudgetPlan.model_validate({"budgets": [{"cost_centre": "../x", "monthly": "1"}]})
    with pytest.raises(ValueError):
        BudgetPlan.model_validate({"budgets": [{"cost_centre": "rnd", "monthly": 1.5}]})
