"""The DCGM exposition parser on the recorded texts and on hostile ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.collectors.dcgm_parse import ParseReport, snapshot
from pipeline.config import Config
from tests.fake_exporter import FIXTURES

pytestmark = [pytest.mark.unit, pytest.mark.collectors]

U0 = "GPU-5fd4a7b0-3c11-8e2a-41f2-6b9e0c1d2a01"
UM = "GPU-c3d2e1f0-aaaa-4bbb-8ccc-0d1e2f3a4b03"
UL = "GPU-77e1d2c3-b4a5-4697-8a8b-9c0d1e2f3a04"


def tenants(config: Config) -> object:
    mapping = {"llm-pretraining": "team-llm-pretraining"}
    return lambda ns: mapping.get(ns) or (ns if ns in config.reference.tenants else None)


def parse(config: Config, text: str, node: str | None = None) -> tuple[dict, ParseReport]:
    rep = ParseReport()
    snap = snapshot(text, 1, config.reference.catalog, tenants(config), node, rep)  # type: ignore[arg-type]
    return snap.readings, rep


def test_both_hostname_spellings_mig_instances_and_pods(config: Config) -> None:
    a, rep_a = parse(config, (FIXTURES / "node-a-1.prom").read_text())
    b, rep_b = parse(config, (FIXTURES / "node-b-1.prom").read_text())
    assert rep_a == ParseReport() and rep_b == ParseReport()
    assert sorted(a) == sorted(
        f"gpu-node-a/{u}" for u in (U0, "GPU-9b2e61c4-7d0a-4f55-b8e3-1a2c3d4e5f02")
    )
    # the MIG-partitioned GPU is not a unit of its own: its three instances are
    assert sorted(b) == sorted(
        [f"gpu-node-b/{UM}/1", f"gpu-node-b/{UM}/2", f"gpu-node-b/{UM}/3", f"gpu-node-b/{UL}"]
    )
    r = a[f"gpu-node-a/{U0}"]
    assert (r.gpu_model, r.mig_profile, r.sm_activity_pct) == ("H100", "", 83.0)
    assert [(h.key, h.tenant_id) for h in r.holders] == [("acme-ai/train-llama-0", "acme-ai")]
    assert r.mem_used_bytes == 61234 * 1024 * 1024 and r.energy_mj == 1_200_000_000
    mig = b[f"gpu-node-b/{UM}/1"]
    assert (mig.gpu_model, mig.mig_profile, mig.power_w, mig.energy_mj) == (
        "H100",
        "3g.40gb",
        None,
        None,
    )
    assert mig.holders[0].tenant_id == "team-llm-pretraining"
    assert b[f"gpu-node-b/{UM}/2"].holders == ()  # no pod: idle
    odd = b[f"gpu-node-b/{UM}/3"].holders[0]
    assert (odd.tenant_id, odd.reason, odd.job_id) == (
        None,
        "unmapped_namespace",
        'notebook-ä|"q"\\',
    )
    shared = b[f"gpu-node-b/{UL}"]
    assert shared.gpu_model == "L40S" and [h.tenant_id for h in shared.holders] == [
        "cobalt-robotics",
        "delta-genomics",
    ]


def test_malformed_lines_are_skipped_and_counted(config: Config) -> None:
    b, rep = parse(config, (FIXTURES / "node-b-2.prom").read_text())
    assert rep.lines_skipped == 2 and rep.series_skipped == {"no_uuid": 1}
    assert len(b) == 4  # everything else of the scrape is kept
    assert b[f"gpu-node-b/{UL}"].power_w is None or b[f"gpu-node-b/{UL}"].power_w == 230.0


def test_hostile_label_values_map_into_tokens(config: Config) -> None:
    huge = "h" * 1_000_000
    text = (
        'DCGM_FI_DEV_GPU_UTIL{UUID="GPU-x y",modelName="nvidia  h100 80gb hbm3",'
        'Hostname="nœud 1|a",namespace="acme-ai",pod="p\\n1"} NaN\n'
        f'DCGM_FI_DEV_GPU_UTIL{{UUID="GPU-2",modelName="Tesla K80",Hostname="{huge}"}} 1e309\n'
        'DCGM_FI_DEV_FB_USED{UUID="GPU-3",modelName="NVIDIA H100 80GB HBM3"} -5\n'
        'DCGM_FI_DEV_GPU_UTIL{UUID="",Hostname="n"} 1\n'
    )
    units, rep = parse(config, text)
    assert rep.series_skipped == {"no_uuid": 1, "no_hostname": 1}
    r = units["n=C5=93ud=201=7Ca/GPU-x=20y"]
    assert (r.gpu_model, r.sm_activity_pct) == ("H100", None)  # alias matched, NaN left out
    assert r.holders[0].job_id == "p\ufffd1"  # the newline became U+FFFD
    (big,) = [u for u in units.values() if u.gpu_uuid == "GPU-2"]
    assert len(big.node) == 128 and big.gpu_model is None and big.model_seen == "Tesla K80"
    units, _ = parse(config, text, node="fallback-node")
    assert units["fallback-node/GPU-3"].mem_used_bytes is None  # negative: not a reading


def test_an_empty_or_garbage_scrape_has_no_units(config: Config) -> None:
    assert parse(config, "")[0] == {}
    units, rep = parse(config, "\x00\xff garbage {{{\n" * 3)
    assert units == {} and rep.lines_skipped == 3


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=400))
def test_any_text_parses_or_is_skipped_never_raises(text: str) -> None:
    from pipeline.config import Config as C
    from pipeline.settings import REPO_ROOT

    cfg = _CFG.get("c") or _CFG.setdefault("c", C.load(REPO_ROOT / "config"))
    body = 'DCGM_FI_DEV_GPU_UTIL{UUID="GPU-1",Hostname="n",pod="' + text.replace('"', "") + '"} 1\n'
    parse(cfg, text)
    parse(cfg, body + text)


_CFG: dict[str, Config] = {}
