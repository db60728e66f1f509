"""Slurm accounting: slices, identities, mixed gres forms, requeues, time zones, bad lines."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.collectors.events import Span, event_id
from pipeline.collectors.sacct_parse import (
    ImportReport,
    hour_slices,
    parse_elapsed,
    parse_tres,
    spans,
)
from pipeline.config import Config
from pipeline.settings import REPO_ROOT

pytestmark = [pytest.mark.unit, pytest.mark.collectors]
FIX = REPO_ROOT / "tests" / "fixtures" / "sacct"
OSLO = ZoneInfo("Europe/Oslo")
H = 3_600_000_000


def accounts(config: Config) -> object:
    mapping = {"llm": "team-llm-pretraining", "vision": "team-vision"}
    return lambda a: mapping.get(a) or (a if a in config.reference.tenants else None)


def run(config: Config, name: str) -> tuple[list[Span], ImportReport]:
    rep = ImportReport()
    text = (FIX / name).read_text()
    got = spans(text, config.reference.catalog, accounts(config), OSLO, "A100", rep)  # type: ignore[arg-type]
    return got, rep


def ident(s: Span) -> str:
    return event_id(s.gpu_uuid, s.start_us, s.end_us)


def test_running_jobs_emit_only_closed_hours_and_the_final_import_repeats_them(
    config: Config,
) -> None:
    running, rep_r = run(config, "running.txt")
    final, rep_f = run(config, "final.txt")
    assert rep_r.running == 3 and rep_r.skipped == {"not_started": 1}
    by_id = {ident(s): s for s in final}
    for s in running:  # same identity, same content: the worker counts it once
        assert by_id[ident(s)].usage_us == s.usage_us
        assert by_id[ident(s)].tenant_id == s.tenant_id
    assert all(s.end_us % H == 0 for s in running if "1003" not in s.gpu_uuid)
    assert all(s.end_us - s.start_us <= H and s.start_us // H == (s.end_us - 1) // H for s in final)


def test_mixed_gres_forms_are_never_counted_twice(config: Config) -> None:
    final, _ = run(config, "final.txt")
    job1001 = [s for s in final if s.gpu_uuid.startswith("slurm-job/1001/")]
    assert {(s.gpu_uuid, s.gpu_count, s.gpu_model) for s in job1001} == {
        ("slurm-job/1001/a100", 4, "A100")
    }
    assert sum(s.usage_us for s in job1001) == 4 * (2 * H + 30 * 60 * 10**6 + 30 * 10**6)
    # gres/gpu=4 with gres/gpu:a100=2: two typed A100 and two of the cluster's default model
    job1010 = sorted((s.gpu_uuid, s.gpu_count) for s in final if "/1010/" in s.gpu_uuid)
    assert job1010 == [("slurm-job/1010/a100", 2), ("slurm-job/1010/gpu", 2)]
    assert parse_tres("cpu=4,gres/gpu:a100=4,gres/gpu=4,mem=1G") == (4, {"a100": 4})


def test_requeued_runs_time_zones_and_dst(config: Config) -> None:
    final, _ = run(config, "final.txt")
    runs = sorted((s.start_us, s.end_us) for s in final if "/1003/" in s.gpu_uuid)
    # two runs of job 1003 (CEST, UTC+2): 08:00-08:45Z and 09:05-10:20Z
    assert [(b - a) // 60_000_000 for a, b in runs] == [45, 55, 20]
    # job 1005 runs 01:30 CEST -> 03:30 CET on the night summer time ends: three real hours
    dst = [s for s in final if "/1005/" in s.gpu_uuid]
    assert sum(s.end_us - s.start_us for s in dst) == 3 * H
    assert {(s.gpu_model, s.mig_profile, s.gpu_count) for s in dst} == {("A100", "1g.10gb", 2)}


def test_unknown_accounts_and_models_are_reported_with_their_gpu_hours(config: Config) -> None:
    final, rep = run(config, "final.txt")
    assert rep.unattributed_us == {
        ("unknown_account", "physics-lab"): 8 * 90 * 60 * 10**6,
        ("unknown_gpu_model", "gres/gpu:mi300x"): 8 * 30 * 60 * 10**6,
    }
    assert rep.skipped == {
        "job_step": 1,
        "not_started": 1,
        "malformed_line": 1,
        "bad_time": 1,
        "no_gpu": 1,
    }
    assert len(rep.problems) == 2 and "line 14" in rep.problems[0]


def test_elapsed_and_slices() -> None:
    assert parse_elapsed("1-02:03:04") == (86400 + 7384) * 10**6
    assert parse_elapsed("05:06") == 306 * 10**6
    assert parse_elapsed("00:00:01.5") == 1_500_000
    assert hour_slices(H - 5, 2 * H + 5) == [(H - 5, H), (H, 2 * H), (2 * H, 2 * H + 5)]


def test_same_run_twice_in_one_input_counts_once_as_finished(config: Config) -> None:
    text = (FIX / "running.txt").read_text() + (FIX / "final.txt").read_text()
    rep = ImportReport()
    got = spans(text, config.reference.catalog, accounts(config), OSLO, "A100", rep)  # type: ignore[arg-type]
    final, _ = run(config, "final.txt")
    assert sorted(map(ident, got)) == sorted(map(ident, final))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=12))
def test_hostile_lines_are_skipped_never_raise(lines: list[str]) -> None:
    cfg = _CFG.get("c") or _CFG.setdefault("c", Config.load(REPO_ROOT / "config"))
    rows = [
        "|".join(
            [
                f"{i}",
                f"{i}",
                line,
                "u",
                "p",
                "gres/gpu=1",
                "2026-10-01T00:00:00",
                "2026-10-01T00:30:00",
                "00:30:00",
                "COMPLETED",
            ]
        )
        for i, line in enumerate(lines)
    ]
    rep = ImportReport()
    spans("\n".join(lines + rows), cfg.reference.catalog, lambda a: None, OSLO, None, rep)


_CFG: dict[str, Config] = {}
