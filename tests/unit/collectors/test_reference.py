"""Collectors' reference data and GPU aliases: validated on load, errors naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.collectors.reference import load_collector_reference, resolve_site
from pipeline.config import ConfigError, load_reference
from pipeline.settings import SettingsError

pytestmark = [pytest.mark.unit, pytest.mark.collectors]


def test_aliases_resolve_ignoring_case_and_spaces(tmp_config: Path) -> None:
    cat = load_reference(tmp_config).catalog
    assert cat.resolve("NVIDIA H100 80GB HBM3") == "H100"
    assert cat.resolve("nvidia  h100 80gb   hbm3") == "H100"
    assert cat.resolve("a100") == "A100" and cat.resolve("NVIDIA A100-SXM4-40GB") is None


def test_an_alias_naming_two_models_is_refused(tmp_config: Path) -> None:
    gpus = tmp_config / "gpus.yaml"
    gpus.write_text(
        gpus.read_text().replace("aliases: [NVIDIA H200]", "aliases: [nvidia h100 pcie]")
    )
    with pytest.raises(ConfigError, match="names both 'H100' and 'H200'"):
        load_reference(tmp_config)


def test_collectors_yaml_is_checked_against_the_reference_data(tmp_config: Path) -> None:
    ref = load_reference(tmp_config)
    cref = load_collector_reference(tmp_config, ref)
    assert cref.tenant_for_namespace("any", "llm-pretraining") == "team-llm-pretraining"
    (tmp_config / "collectors.yaml").write_text(
        "clusters:\n  c1: {region: eu-north-1, provider: northwind-cloud, gpu_model: Z9, "
        "timezone: Mars/Olympus}\nnamespaces: {ns1: nobody}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_collector_reference(tmp_config, ref)
    text = str(err.value)
    for part in [
        "namespaces.ns1: unknown tenant 'nobody'",
        "not provider 'northwind-cloud'",
        "'Z9' is not in gpus.yaml",
        "unknown time zone 'Mars/Olympus'",
    ]:
        assert part in text
    (tmp_config / "collectors.yaml").unlink()
    assert load_collector_reference(tmp_config, ref).clusters == {}


def test_flags_are_checked_before_anything_runs(tmp_config: Path) -> None:
    ref = load_reference(tmp_config)
    cref = load_collector_reference(tmp_config, ref)
    site = resolve_site("slurm", "fjord-hpc", None, None, ref, cref)
    assert (site.region, site.provider, site.gpu_model, site.timezone) == (
        "eu-north-1",
        "fjord-compute",
        "A100",
        "Europe/Oslo",
    )
    assert site.source("any-node") == "//gpumeter/slurm/fjord-hpc"
    with pytest.raises(SettingsError, match="no partner has this region"):
        resolve_site("dcgm", "c9", "mars-1", "own-dc", ref, cref)
    with pytest.raises(SettingsError, match="give --region and --provider"):
        resolve_site("dcgm", "c9", None, None, ref, cref)
    with pytest.raises(SettingsError, match="a cluster is 1-128"):
        resolve_site("dcgm", "my cluster", "eu-west-1", "own-dc", ref, cref)
