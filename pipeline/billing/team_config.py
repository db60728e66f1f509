"""Loading ``config/capacity.yaml`` and ``config/budgets.yaml`` and checking them against the
reference data (GPU catalogue, partners, tenants' cost centres). Errors name the file, the
entry and the problem (``chargeback.invalid_capacity``, ``chargeback.invalid_budget``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.config import Config
from pipeline.domain.budgets import BudgetPlan
from pipeline.domain.capacity import CapacityPlan
from pipeline.domain.errors import ChargebackError, ChargebackErrorCode
from pipeline.domain.hierarchy import EXTERNAL_ROOT, NodeKey, parse_cost_centre
from pipeline.domain.reference import ReferenceData

M = TypeVar("M", bound=BaseModel)
CAPACITY_FILE = "capacity.yaml"
BUDGETS_FILE = "budgets.yaml"


def _fail(code: ChargebackErrorCode, path: Path, problems: list[str]) -> ChargebackError:
    return ChargebackError(code, f"{path}: " + "; ".join(problems))


def _read(path: Path, code: ChargebackErrorCode) -> Any:
    try:
        with path.open() as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise _fail(code, path, ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise _fail(code, path, [f"not valid YAML: {exc}"]) from None


def _model(model: type[M], data: Any, path: Path, code: ChargebackErrorCode) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        ]
        raise _fail(code, path, problems) from None


@dataclass(frozen=True)
class TeamConfig:
    """What the team cost report needs beside the billing configuration."""

    reference: ReferenceData
    capacity: CapacityPlan
    budgets: BudgetPlan

    @property
    def platform(self) -> NodeKey:
        """The node unshared idle is shown on: the platform's cost centre."""
        return NodeKey(parse_cost_centre(self.reference.platform_cost_centre))

    def node_of(self, tenant_id: str, project: str) -> NodeKey:
        """Where a tenant's usage sits: an internal team's cost centre (a project below it),
        an external customer under ``external/<tenant>``."""
        tenant = self.reference.tenants.get(tenant_id)
        if tenant is not None and tenant.kind == "internal" and tenant.cost_centre:
            path = parse_cost_centre(tenant.cost_centre)
        else:
            path = (EXTERNAL_ROOT, tenant_id)
        return NodeKey(path, project or None)

    def cost_centres(self) -> set[tuple[str, ...]]:
        """Every cost centre of the tree: the internal tenants' and all above them."""
        out: set[tuple[str, ...]] = set()
        for t in self.reference.tenants.values():
            if t.kind == "internal" and t.cost_centre:
                path = parse_cost_centre(t.cost_centre)
                out |= {path[:i] for i in range(1, len(path) + 1)}
        return out


def load_team_config(config_dir: Path, config: Config) -> TeamConfig:
    ref = config.reference
    cap_path = config_dir / CAPACITY_FILE
    code = ChargebackErrorCode.INVALID_CAPACITY
    capacity = _model(CapacityPlan, _read(cap_path, code), cap_path, code)
    problems = []
    models = set(ref.catalog.gpus)
    for name in sorted(set(capacity.on_demand) - models):
        problems.append(f"on_demand: {name!r} is not a GPU model of gpus.yaml")
    for name in sorted(models - set(capacity.on_demand)):
        problems.append(f"on_demand: no cost for GPU model {name!r}")
    for c in capacity.clusters.values():
        if ref.placement(c.region, c.provider) != "ok":
            problems.append(
                f"clusters[{c.cluster}]: region {c.region!r} is not one of partner "
                f"{c.provider!r}'s in partners.yaml"
            )
        for e in c.capacity:
            if e.gpu_model not in models:
                problems.append(f"clusters[{c.cluster}]: unknown GPU model {e.gpu_model!r}")
    try:
        platform = parse_cost_centre(ref.platform_cost_centre)
    except ValueError as exc:
        problems.append(f"platform_cost_centre in partners.yaml: {exc}")
        platform = ()
    for t in ref.tenants.values():
        if t.kind != "internal" or not t.cost_centre:
            continue
        try:
            path = parse_cost_centre(t.cost_centre)
        except ValueError as exc:
            problems.append(f"tenant {t.id!r} in tenants.yaml: {exc}")
            continue
        if path[0] == EXTERNAL_ROOT or path == platform:
            problems.append(
                f"tenant {t.id!r} in tenants.yaml: cost centre {t.cost_centre!r} is reserved "
                f"('{EXTERNAL_ROOT}/...' holds external customers, "
                f"{ref.platform_cost_centre!r} the platform's idle)"
            )
    if problems:
        raise _fail(code, cap_path, problems)

    bud_path = config_dir / BUDGETS_FILE
    bcode = ChargebackErrorCode.INVALID_BUDGET
    budgets = (
        _model(BudgetPlan, _read(bud_path, bcode) or {}, bud_path, bcode)
        if bud_path.exists()
        else BudgetPlan()
    )
    team = TeamConfig(ref, capacity, budgets)
    known = team.cost_centres()
    unknown = [
        b.cost_centre for b in budgets.budgets if parse_cost_centre(b.cost_centre) not in known
    ]
    if unknown:
        raise _fail(
            bcode, bud_path, [f"no internal tenant under cost centre {u!r}" for u in unknown]
        )
    return team
