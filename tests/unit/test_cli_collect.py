"""``gpumeter collect`` / ``import`` argument handling and dry runs (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.settings import REPO_ROOT

pytestmark = [pytest.mark.unit, pytest.mark.collectors]


def test_import_sacct_dry_run_prints_events(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        [
            "import",
            "sacct",
            str(REPO_ROOT / "tests/fixtures/sacct/final.txt"),
            "--cluster",
            "fjord-hpc",
            "--dry-run",
            "--json",
        ]
    )
    out = capsys.readouterr()
    events = [json.loads(line) for line in out.out.splitlines()]
    summary = json.loads(out.err.strip().splitlines()[-1])
    assert rc == 0 and summary["samples"] == 21 and summary["timezone"] == "Europe/Oslo"
    assert summary["unattributed_gpu_hours"] == 16.0 and summary["sent"] == 0
    assert len(events) == 24 and {e["source"] for e in events} == {"//gpumeter/slurm/fjord-hpc"}


def test_bad_flags_and_inputs_exit_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.txt"
    bad.write_text("JobIDRaw|AllocTRES\n1|gres/gpu=1\n")
    cases = [
        (["import", "sacct", str(bad), "--cluster", "fjord-hpc", "--dry-run"], "header lacks"),
        (
            [
                "import",
                "sacct",
                str(bad),
                "--cluster",
                "fjord-hpc",
                "--timezone",
                "Nowhere/X",
                "--dry-run",
            ],
            "not an IANA time zone",
        ),
        (
            [
                "collect",
                "nvml",
                "--cluster",
                "c",
                "--region",
                "us-east-1",
                "--provider",
                "own-dc",
                "--dry-run",
            ],
            "not this provider's",
        ),
        (
            ["collect", "nvml", "--cluster", "fjord-hpc", "--tenant", "nobody", "--dry-run"],
            "--tenant 'nobody'",
        ),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err
