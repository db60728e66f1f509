"""The team cost report's lifecycle over whole periods with an injected clock (issue 11): a
draft during the grace, closed for good after it, late usage for a closed month carried as
adjustment lines by the next month; scopes, budgets and exact roll-ups on the stored lines."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pipeline.adapters.team_costs import TeamCostBook
from pipeline.billing.team_config import TeamConfig
from pipeline.billing.teams import TeamCosts
from pipeline.domain.budgets import BudgetPlan
from pipeline.domain.capacity import CapacityPlan
from pipeline.domain.errors import ChargebackError, ChargebackErrorCode
from pipeline.domain.hierarchy import NodeKey
from tests.scenarios.world import NOV, NOV_FINAL, OCT, OCT_FINAL, H, World, at

pytestmark = [pytest.mark.chdb]

TRANSFER = {"id": "transfer", "currency": "USD", "prices": {"H100": "1.50", "A100": "0.70"}}
CAPACITY = {
    "currency": "USD",
    "idle_policy": "proportional",
    "on_demand": {"H100": "3.00", "H200": "4.00", "A100": "1.00"},
    "clusters": [
        {
            "cluster": "c1",
            "provider": "fjord-compute",
            "region": "us-east-1",
            "ownership": "owned",
            "capacity": [{"gpu_model": "H100", "gpus": 1, "cost_per_gpu_hour": "1.00"}],
        }
    ],
}


def internal(tenant_id: str, cost_centre: str) -> dict[str, Any]:
    return {
        "id": tenant_id,
        "name": tenant_id.title(),
        "kind": "internal",
        "currency": "USD",
        "rate_card": "transfer",
        "cost_centre": cost_centre,
    }


def costs(world: World, budgets: list[dict[str, Any]] | None = None) -> TeamCosts:
    config = world.configure(
        [
            internal("team-a", "rnd/a"),
            internal("team-b", "rnd/b"),
            internal("team-c", "ops/c"),
        ],
        [TRANSFER],
    )
    team = TeamConfig(
        config.reference,
        CapacityPlan.model_validate(CAPACITY),
        BudgetPlan.model_validate({"budgets": budgets or []}),
    )
    return TeamCosts(
        config, team, world.store, TeamCostBook(world.ex), world.clock.now, timedelta(hours=72)
    )


def test_a_closed_month_is_never_rewritten_and_late_usage_is_adjusted_next_month(
    world: World,
) -> None:
    tc = costs(world)
    book = tc.book
    world.spread("team-a", at(10, 5), 10, 10 * H, project="llm")  # 10 GPU-h at 1.00
    world.spread("team-b", at(10, 15), 4, 2 * H, project="=cmd")  # 2 GPU-h

    world.clock.set(at(11, 2))
    r = tc.build(OCT)
    # 744 GPU-h of capacity at 1.00; 12 used; idle 732.00 shared 10:2 by use
    assert (r.status, r.platform_cost_minor, r.usage_minor) == ("draft", 74400, 1200)
    assert (r.idle_share_minor, r.idle_minor) == (73200, 0)
    assert tc.build(OCT).revision == r.revision  # unchanged content: no new revision

    world.clock.set(OCT_FINAL)
    closed = tc.build(OCT)
    assert closed.status == "closed" and closed.revision == r.revision + 1
    lines_at_close = book.lines("2026-10", closed.revision)
    assert book.total_minor("2026-10", closed.revision) == 74400

    # late usage for October: October's report stays as it was closed
    world.usage("team-c", at(10, 20, 3), H)
    world.clock.advance(days=1)
    again = tc.build(OCT)
    assert (again.status, again.revision) == ("changed_after_close", closed.revision)
    assert book.lines("2026-10", closed.revision) == lines_at_close
    assert book.latest()["2026-10"].revision == closed.revision

    # November's report carries it: team-c +1.00 of use and now an idle share of October,
    # the others' idle shares smaller by as much: the platform's cost did not change
    world.spread("team-a", at(11, 3), 2, 2 * H, project="llm")
    world.clock.set(at(12, 1))
    nov = tc.build(NOV)
    adj = [ln for ln in book.lines("2026-11", nov.revision) if ln.period_ref == "2026-10"]
    assert {(ln.kind, ln.tenant_id): ln.amount_minor for ln in adj if ln.kind == "usage"} == {
        ("usage", "team-c"): 100
    }
    assert sum(ln.amount_minor for ln in adj) == 0  # capacity unchanged: cost moves, no more
    assert nov.adjustment_minor == 0 and nov.platform_cost_minor == 72000  # 720 h x 1.00
    view = tc.view(NOV, ("ops",))
    assert view.totals.usage_minor == 100 and view.totals.idle_share_minor > 0
    assert view.totals.adjustment_minor == view.totals.charged_minor
    # November closes with it; October then counts as adjusted, and nothing is carried twice
    world.clock.set(NOV_FINAL)
    assert tc.build(NOV).status == "closed"
    assert tc.build(OCT).status == "adjusted"
    world.clock.set(at(12, 20))
    dec = tc.build(NOV.__class__.parse("2026-12"))
    assert dec.adjustment_minor == 0
    assert not [ln for ln in book.lines("2026-12", dec.revision) if ln.period_ref != "2026-12"]


def test_scopes_subtrees_and_exact_roll_ups_on_the_stored_lines(world: World) -> None:
    tc = costs(world, [{"cost_centre": "rnd", "monthly": "300.00"}])
    world.spread("team-a", at(10, 1), 100, 100 * H, project="p1")
    world.spread("team-a", at(10, 1), 50, 25 * H, project="p2")
    world.spread("team-b", at(10, 1), 30, 30 * H, project="../../ops/c")
    world.usage("team-c", at(10, 2), H // 3, gpu="A100", cluster="other", project="x")
    world.clock.set(OCT_FINAL)
    tc.build(OCT)

    everything = tc.view(OCT, None)
    roots = [n for n in everything.nodes if n.key.parent is None]
    assert {n.key.path for n in roots} == {("rnd",), ("ops",)}  # no platform idle: shared
    total = sum(n.total.charged_minor + n.total.idle_minor for n in roots)
    assert total == everything.platform_cost_minor == tc.book.total_minor("2026-10", 1)
    nodes = {n.key: n for n in everything.nodes}
    for n in everything.nodes:
        assert n.total.charged_minor == n.own.charged_minor + sum(
            nodes[c].total.charged_minor for c in n.children
        )
    # a project id with separators is one project node under its team, never a path
    assert NodeKey(("rnd", "b"), "../../ops/c") in nodes

    team = tc.view(OCT, ("rnd", "a"))
    assert {n.key for n in team.nodes} == {
        NodeKey(("rnd", "a")),
        NodeKey(("rnd", "a"), "p1"),
        NodeKey(("rnd", "a"), "p2"),
    }
    assert team.platform_cost_minor is None and team.units == []
    assert team.totals.charged_minor == nodes[NodeKey(("rnd", "a"))].total.charged_minor
    for other in (NodeKey(("rnd", "b")), NodeKey(("rnd",)), NodeKey(("ops", "c"))):
        with pytest.raises(ChargebackError) as err:
            tc.view(OCT, ("rnd", "a"), other)
        assert err.value.code == ChargebackErrorCode.NOT_FOUND
    with pytest.raises(ChargebackError):  # an unknown node of one's own tree: the same 404
        tc.view(OCT, ("rnd", "a"), NodeKey(("rnd", "a", "nope")))
    rnd = tc.view(OCT, ("rnd",))
    budget = rnd.budgets[("rnd",)]
    assert budget.mtd_minor == nodes[NodeKey(("rnd",))].total.charged_minor
    assert budget.status == "over" and budget.projected_minor == budget.mtd_minor
    assert tc.budget_list(OCT)[0].status == "over"
    with pytest.raises(ChargebackError) as err:
        tc.view(NOV, None)
    assert err.value.code == ChargebackErrorCode.NOT_FOUND


def test_month_to_date_and_the_run_rate_projection_mid_month(world: World) -> None:
    tc = costs(world, [{"cost_centre": "rnd/a", "monthly": "40.00"}])
    world.spread("team-a", at(10, 1), 240, 240 * H // 10)  # 0.1 GPU for the first 10 days
    world.clock.set(at(10, 11, 5))  # the data runs to 2026-10-11T00:00
    r = tc.build(OCT)
    assert r.status == "draft"
    view = tc.view(OCT, ("rnd", "a"))
    assert view.as_of == at(10, 11)
    budget = view.budgets[("rnd", "a")]
    # capacity so far: 1 GPU x 240 h at 1.00, used 24 GPU-h; the idle of those 10 days only is
    # shared (proportional: all to its only user), not the rest of the month's
    assert view.platform_cost_minor is None and tc.view(OCT, None).platform_cost_minor == 24000
    assert (view.totals.usage_minor, view.totals.idle_share_minor) == (2400, 21600)
    assert budget.mtd_minor == 24000 and budget.status == "over"
    assert budget.projected_minor == 74400  # 240.00 x 31 / 10 days
