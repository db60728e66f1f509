"""The capacity of a simulated fleet (``config/capacity.yaml`` describes the demo's default
fleet: ``python -m devtools.capacity`` prints it again after the simulator or the partners
change; tests build the capacity of the fleets they simulate with :func:`fleet_capacity`)."""

from __future__ import annotations

import random
import sys
from collections import defaultdict
from typing import Any

import yaml

from devtools.sim.fleet import build_fleet
from pipeline.config import Config
from pipeline.domain.capacity import CapacityPlan
from pipeline.settings import REPO_ROOT

OWNED_BY = "own-dc"  # the partner entry standing for our own data centres
# cost per GPU-hour to the platform: leased from a partner, owned (amortised), on demand
LEASED = {"H100": "1.20", "H200": "1.65", "B200": "2.90", "A100": "0.55", "L40S": "0.38"}
OWNED = {"H100": "0.95", "H200": "1.30", "B200": "2.30", "A100": "0.42", "L40S": "0.30"}
ON_DEMAND = {"H100": "2.40", "H200": "3.10", "B200": "5.20", "A100": "1.10", "L40S": "0.80"}
POLICIES = ("proportional", "separate", "even")


def fleet_capacity(config: Config, nodes: int, interval_s: int, seed: int) -> dict[str, Any]:
    """capacity.yaml's content for the fleet ``devtools.sim`` builds with these arguments
    (the same random draws as :func:`devtools.sim.run.plan`): every node's GPUs, from the
    first hour on; clusters of our own data centres owned, the others leased; idle policies
    taking turns so that the demo shows all three."""
    fleet = build_fleet(config.reference, nodes, random.Random(seed), interval_s)
    gpus: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    where: dict[str, tuple[str, str]] = {}
    for n in fleet:
        gpus[n.cluster][n.gpu_model] += n.gpus
        where[n.cluster] = (n.provider, n.region)
    clusters = []
    for i, cluster in enumerate(sorted(gpus)):
        provider, region = where[cluster]
        owned = provider == OWNED_BY
        prices = OWNED if owned else LEASED
        clusters.append(
            {
                "cluster": cluster,
                "provider": provider,
                "region": region,
                "ownership": "owned" if owned else "leased",
                "idle_policy": POLICIES[i % len(POLICIES)],
                "capacity": [
                    {"gpu_model": m, "gpus": g, "cost_per_gpu_hour": prices[m]}
                    for m, g in sorted(gpus[cluster].items())
                ],
            }
        )
    models = sorted(config.reference.catalog.gpus)
    return {
        "currency": "USD",
        "idle_policy": "separate",
        "on_demand": {m: ON_DEMAND.get(m, "5.00") for m in models},
        "clusters": clusters,
    }


def fleet_plan(config: Config, nodes: int, interval_s: int, seed: int) -> CapacityPlan:
    return CapacityPlan.model_validate(fleet_capacity(config, nodes, interval_s, seed))


HEADER = """\
# Capacity (issue 11): the GPUs each cluster has, per GPU model, with effective dates (whole
# UTC hours; effective_from inclusive, effective_until exclusive, both optional), owned or
# leased from the cluster's provider (a partner of partners.yaml), and what a GPU-hour of it
# costs the platform (quoted decimal strings, in `currency`). on_demand: the cost per GPU-hour
# of usage no listed capacity covers (rented for the hour; it has no idle). idle_policy, per
# cluster or for the file: separate | proportional | even (docs/chargeback.md).
#
# This file describes the demo's simulated fleet (40 nodes, seed 42, 300 s reports); after the
# simulator or partners.yaml change, regenerate it: .venv/bin/python -m devtools.capacity
"""


def main() -> int:
    config = Config.load(REPO_ROOT / "config")
    body = yaml.safe_dump(
        fleet_capacity(config, 40, 300, 42), sort_keys=False, default_flow_style=None, width=100
    )
    sys.stdout.write(HEADER + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
