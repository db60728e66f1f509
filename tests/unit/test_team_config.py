"""config/capacity.yaml and config/budgets.yaml are checked against the reference data on load,
with errors naming the file and the entry (issue 11); the shipped files load and describe the
demo's fleet."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devtools.capacity import fleet_capacity
from pipeline.billing.team_config import load_team_config
from pipeline.config import Config
from pipeline.domain.errors import ChargebackError, ChargebackErrorCode

pytestmark = pytest.mark.unit


def edit(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data))


def forecasting(data: dict) -> dict:  # type: ignore[type-arg]
    return next(t for t in data["tenants"] if t["id"] == "team-forecasting")


def test_the_shipped_files_load_and_capacity_is_the_demo_fleet(config: Config) -> None:
    from pipeline.settings import REPO_ROOT

    team = load_team_config(REPO_ROOT / "config", config)
    assert team.budgets.budgets and len(team.capacity.clusters) == 10
    shipped = yaml.safe_load((REPO_ROOT / "config" / "capacity.yaml").read_text())
    assert shipped == fleet_capacity(config, 40, 300, 42)  # python -m devtools.capacity
    assert {team.capacity.policy(c) for c in team.capacity.clusters} == {
        "separate",
        "proportional",
        "even",
    }


@pytest.mark.parametrize(
    ("file", "change", "code", "needle"),
    [
        (
            "capacity.yaml",
            lambda d: d["clusters"][0].update(region="eu-west-1"),
            ChargebackErrorCode.INVALID_CAPACITY,
            "is not one of partner",
        ),
        (
            "capacity.yaml",
            lambda d: d["clusters"][0]["capacity"][0].update(gpu_model="Z999"),
            ChargebackErrorCode.INVALID_CAPACITY,
            "unknown GPU model 'Z999'",
        ),
        (
            "capacity.yaml",
            lambda d: d["on_demand"].pop("H100"),
            ChargebackErrorCode.INVALID_CAPACITY,
            "no cost for GPU model 'H100'",
        ),
        (
            "capacity.yaml",
            lambda d: d["clusters"][0].update(idle_policy="random"),
            ChargebackErrorCode.INVALID_CAPACITY,
            "idle_policy",
        ),
        (
            "capacity.yaml",
            lambda d: d["clusters"][0]["capacity"][0].update(cost_per_gpu_hour=1.25),
            ChargebackErrorCode.INVALID_CAPACITY,
            "binary float",
        ),
        (
            "capacity.yaml",
            lambda d: d["clusters"].append(dict(d["clusters"][0])),
            ChargebackErrorCode.INVALID_CAPACITY,
            "listed twice",
        ),
        (
            "budgets.yaml",
            lambda d: d["budgets"].append({"cost_centre": "nobody/here", "monthly": "1.00"}),
            ChargebackErrorCode.INVALID_BUDGET,
            "no internal tenant under cost centre 'nobody/here'",
        ),
        (
            "budgets.yaml",
            lambda d: d["budgets"].append({"cost_centre": "research/../finance", "monthly": "1"}),
            ChargebackErrorCode.INVALID_BUDGET,
            "budgets.",
        ),
        (
            "tenants.yaml",
            lambda d: forecasting(d).update(cost_centre="external/acme-ai"),
            ChargebackErrorCode.INVALID_CAPACITY,
            "is reserved",
        ),
        (
            "tenants.yaml",
            lambda d: forecasting(d).update(cost_centre="finance//forecasting"),
            ChargebackErrorCode.INVALID_CAPACITY,
            "tenant 'team-forecasting'",
        ),
    ],
)
def test_broken_files_name_the_file_and_the_problem(
    tmp_config: Path, file: str, change: object, code: ChargebackErrorCode, needle: str
) -> None:
    edit(tmp_config / file, change)
    config = Config.load(tmp_config)
    with pytest.raises(ChargebackError) as err:
        load_team_config(tmp_config, config)
    assert err.value.code == code
    assert needle in err.value.message and str(tmp_config) in err.value.message
