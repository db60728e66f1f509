"""Partitions are the unit of parallelism: two workers sharing a topic's partitions store the
same totals as one worker alone (and as the ground truth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.faults import Fleet
from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import wait_drained
from devtools.verify import stored_as_truth
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


def consume(settings: Settings, workers: int, logs: Path) -> dict:
    ex = server_executor(settings)
    migrate(ex)
    fleet = Fleet(settings, workers, logs)
    try:
        wait_drained(settings, None, timeout=600, progress=False)
    finally:
        fleet.stop()
    stored = stored_as_truth(Store(ex), Period.parse("2026-10"))
    ex.close()
    drop_database(settings)
    return stored


def test_two_workers_store_what_one_worker_stores(
    settings: Settings, config: Config, tmp_path: Path
) -> None:
    sim = publish(
        settings,
        config,
        Period.parse("2026-10"),
        nodes=4,
        interval_s=900,
        seed=8,
        progress=False,
    )
    one = settings.model_copy(
        update={
            "clickhouse_database": settings.clickhouse_database + "_one",
            "worker_id": settings.worker_id + "-one",
            "worker_data_dir": tmp_path / "one",
        }
    )
    two = settings.model_copy(
        update={
            "clickhouse_database": settings.clickhouse_database + "_two",
            "worker_id": settings.worker_id + "-two",
            "worker_data_dir": tmp_path / "two",
        }
    )
    by_one = consume(one, 1, tmp_path / "logs-one")
    by_two = consume(two, 2, tmp_path / "logs-two")
    assert by_two == by_one == read_truth(sim.truth_path)
    logs = [(tmp_path / "logs-two" / f"worker-{i}.log").read_text() for i in (0, 1)]
    assert all("processed messages=" in log for log in logs)  # both workers had partitions
