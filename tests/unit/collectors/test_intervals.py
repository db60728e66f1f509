from __future__ import annotations

import pytest

from pipeline.collectors.events import Reason
from pipeline.collectors.intervals import Holder, Reading, Snapshot, between

pytestmark = [pytest.mark.unit, pytest.mark.collectors]

A = Holder("acme-ai/p", "acme-ai", project_id="acme-ai", job_id="p")
B = Holder("borealis-labs/q", "borealis-labs", project_id="borealis-labs", job_id="q")
X = Holder("research-x/r", None, Reason.UNMAPPED_NAMESPACE, "research-x")


def snap(t: int, *readings: Reading) -> Snapshot:
    s = Snapshot(t)
    for r in readings:
        s.add(r)
    return s


def gpu(holders: tuple[Holder, ...] = (), uuid: str = "GPU-1", **kw: object) -> Reading:
    return Reading(
        "n1",
        uuid,
        kw.pop("gpu_model", "H100"),
        "NVIDIA H100 80GB HBM3",  # type: ignore[arg-type]
        holders=holders,
        **kw,
    )  # type: ignore[arg-type]


def test_same_holder_gets_the_whole_interval_with_averaged_telemetry() -> None:
    b = between(
        snap(0, gpu((A,), sm_activity_pct=80.0, power_w=600.0, energy_mj=1000.0)),
        snap(10_000_001, gpu((A,), sm_activity_pct=90.0, power_w=700.0, energy_mj=6000.0)),
        900_000_000,
    )
    (s,) = b.spans
    assert (s.tenant_id, s.start_us, s.end_us, s.usage_us) == ("acme-ai", 0, 10_000_001, 10_000_001)
    assert s.sm_activity_pct == 85.0 and s.power_w == 650.0 and s.energy_j == 5.0
    assert (s.project_id, s.job_id) == ("acme-ai", "p")


def test_a_hand_over_is_cut_in_the_middle() -> None:
    b = between(snap(100, gpu(())), snap(201, gpu((B,))), 10**9)
    assert [(s.tenant_id, s.reason, s.start_us, s.end_us) for s in b.spans] == [
        (None, Reason.IDLE, 100, 150),
        ("borealis-labs", "", 150, 201),
    ]


def test_shared_units_are_split_between_holders_exactly() -> None:
    b = between(snap(0, gpu((A, B, X))), snap(1_000_000, gpu((A, B, X))), 10**9)
    assert [(s.tenant_id or s.reason, s.start_us, s.end_us) for s in b.spans] == [
        ("acme-ai", 0, 333_333),
        ("borealis-labs", 333_333, 666_666),
        (Reason.UNMAPPED_NAMESPACE, 666_666, 1_000_000),
    ]
    assert sum(s.usage_us for s in b.spans) == 1_000_000


def test_energy_counter_reset_takes_the_new_value() -> None:
    b = between(
        snap(0, gpu((A,), energy_mj=9_000_000.0)), snap(5, gpu((A,), energy_mj=4000.0)), 10**9
    )
    assert b.spans[0].energy_j == 4.0


def test_unknown_models_and_profiles_are_unattributed_not_dropped() -> None:
    unknown = gpu((A,), gpu_model=None)
    mig = gpu((A,), uuid="GPU-2/1", mig_profile="9g.99gb", mig_known=False)
    b = between(snap(0, unknown, mig), snap(10, unknown, mig), 10**9)
    assert sorted((s.reason, s.detail) for s in b.spans) == [
        (Reason.UNKNOWN_GPU_MODEL, "NVIDIA H100 80GB HBM3"),
        (Reason.UNKNOWN_MIG_PROFILE, "H100 9g.99gb"),
    ]


def test_gaps_clock_and_units_that_come_and_go() -> None:
    assert between(snap(0, gpu((A,))), snap(901, gpu((A,))), 900).gap_us == 901
    assert between(snap(0, gpu((A,))), snap(901, gpu((A,))), 900).spans == []
    assert between(snap(10, gpu((A,))), snap(5, gpu((A,))), 900).clock_went_back
    b = between(snap(0, gpu((A,), uuid="old")), snap(10, gpu((A,), uuid="new")), 900)
    assert (b.spans, b.new_units, b.gone_units) == ([], 1, 1)


def test_snapshots_round_trip_through_the_cursor() -> None:
    s = snap(7, gpu((A, X), sm_activity_pct=1.5, energy_mj=3.0), gpu((), uuid="GPU-9/3"))
    assert Snapshot.from_json(s.to_json()) == s
