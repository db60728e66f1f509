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
from pipeline.adapters.kafka import ensure_topics
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


def consume(
    settings: Settings, config: Config, workers: int, logs: Path
) -> tuple[dict, dict, list[str]]:
    """Start ``workers`` workers, wait until each owns partitions of the (empty) topic, then
    publish a simulated October: every worker is certain to have work. Returns what
    ClickHouse holds, the simulator's truth and the workers' logs."""
    ex = server_executor(settings)
    migrate(ex)
    ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: settings.topic_partitions})
    fleet = Fleet(settings, workers, logs)
    try:
        fleet.wait_shared(timeout=180)
        sim = publish(
            settings,
            config,
            Period.parse("2026-10"),
            nodes=4,
            interval_s=1800,
            seed=8,
            progress=False,
        )
        wait_drained(settings, None, timeout=600, progress=False)
    finally:
        fleet.stop()
    stored = stored_as_truth(Store(ex), Period.parse("2026-10"))
    ex.close()
    drop_database(settings)
    texts = [(logs / f"worker-{i}.log").read_text() for i in range(workers)]
    return stored, read_truth(sim.truth_path), texts


def test_two_workers_store_what_one_worker_stores(
    settings: Settings, config: Config, tmp_path: Path
) -> None:
    def run(name: str) -> Settings:
        return settings.model_copy(
            update={
                "clickhouse_database": f"{settings.clickhouse_database}_{name}",
                "usage_topic": f"{settings.usage_topic}.{name}",
                "worker_id": f"{settings.worker_id}-{name}",
                "worker_data_dir": tmp_path / name,
                "out_dir": tmp_path / name / "out",
            }
        )

    by_one, truth_one, _ = consume(run("one"), config, 1, tmp_path / "logs-one")
    by_two, truth_two, logs = consume(run("two"), config, 2, tmp_path / "logs-two")
    assert truth_two == truth_one  # the same seed publishes the same month to each topic
    assert by_two == by_one == truth_one
    assert all("processed messages=" in log for log in logs)  # both workers had work
