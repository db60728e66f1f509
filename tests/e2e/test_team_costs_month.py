"""The demo's simulated month through Kafka, the worker and ClickHouse 18.16, then the
team cost report (issue 11) on what the worker stored: every roll-up exact, charged + unshared
idle == platform cost == the ledger's lines, and the capacity's allocated GPU-hours equal to the
simulator's ground truth."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from fractions import Fraction

import pytest

from devtools.capacity import fleet_plan
from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import drain_once
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.store import Store
from pipeline.adapters.team_costs import TeamCostBook
from pipeline.billing.team_config import TeamConfig
from pipeline.billing.teams import TeamCosts
from pipeline.config import Config
from pipeline.domain.budgets import BudgetPlan
from pipeline.domain.hierarchy import Figures
from pipeline.domain.period import Period
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

NODES, INTERVAL, SEED = 6, 1800, 11


def test_the_simulated_month_rolls_up_exactly_and_idle_plus_charged_is_platform_cost(
    settings: Settings, config: Config
) -> None:
    period = Period.parse("2026-10")
    ex = server_executor(settings)
    migrate(ex)
    sim = publish(
        settings, config, period, nodes=NODES, interval_s=INTERVAL, seed=SEED, progress=False
    )
    drain_once(settings, settings.out_dir / "worker.log", timeout=600)

    plan = fleet_plan(config, NODES, INTERVAL, SEED)  # the capacity of exactly that fleet
    team = TeamConfig(config.reference, plan, BudgetPlan())
    closed_at = period.end + timedelta(days=4)
    costs = TeamCosts(
        config, team, Store(ex), TeamCostBook(ex), lambda: closed_at, timedelta(hours=72)
    )
    built = costs.build(period)
    assert built.status == "closed"
    view = costs.view(period, None)
    nodes = {n.key: n for n in view.nodes}
    for n in view.nodes:  # every parent == its own lines + its children, to the cent
        expect = Figures()
        expect.add(n.own)
        for c in n.children:
            expect.add(nodes[c].total)
        assert expect == n.total, n.key
    roots = [n for n in view.nodes if n.key.parent is None]
    charged = sum(n.total.charged_minor for n in roots)
    unshared = sum(n.total.idle_minor for n in roots)
    platform = view.platform_cost_minor
    assert platform is not None and platform > 0
    assert charged + unshared == platform == costs.book.total_minor(str(period), view.revision)
    assert built.usage_minor + built.idle_share_minor + built.idle_minor == platform
    assert 0 < built.idle_share_minor and 0 < built.idle_minor  # the demo mixes the policies

    # capacity: the fleet's GPUs, never exceeded; allocation = the ground truth's GPU-hours
    truth = read_truth(sim.truth_path)
    catalog = config.reference.catalog
    expected: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for (_t, _h, _p, model, mig, _r, _pv, cluster), us in truth.items():
        expected[(cluster, model)] += Fraction(us, 3_600_000_000) * catalog.fraction(model, mig)
    units = {(u["cluster"], u["gpu_model"]): u for u in view.units}
    assert set(units) == set(expected)
    for key, u in units.items():
        assert Fraction(u["allocated_gpu_hours"]) == expected[key], key
        assert Fraction(u["over_capacity_gpu_hours"]) == 0, key
        idle = Fraction(u["capacity_gpu_hours"]) - Fraction(u["allocated_gpu_hours"])
        assert Fraction(u["idle_gpu_hours"]) == idle >= 0, key
    print(
        f"team costs {period}: platform {platform / 100:.2f} = charged {charged / 100:.2f} "
        f"+ unshared idle {unshared / 100:.2f}"
    )
    ex.close()
    drop_database(settings)
