"""A simulated month through Kafka, the worker (a real child process) and ClickHouse,
exported per partner and checked against the simulator's ground truth, key by key, to the
GPU-micro-second; then every file through the FinOps Foundation's focus-validator."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import drain_once
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.store import Store
from pipeline.bootstrap import exporter
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.exports.files import read_csv_rows, read_parquet_rows
from pipeline.exports.validator import run_validator
from pipeline.exports.verify import verify
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kafka,
    pytest.mark.clickhouse,
    pytest.mark.focus,
    pytest.mark.slow,
]

RowKey = tuple[str, str, str, str, str, str]  # hour, region, cluster, model, MIG, consumer


def test_a_simulated_month_exports_its_ground_truth_and_passes_the_validator(
    settings: Settings, config: Config, focus_validator: Path
) -> None:
    period = Period.parse("2026-10")
    ex = server_executor(settings)
    try:
        migrate(ex)
        sim = publish(settings, config, period, nodes=5, interval_s=1800, seed=23, progress=False)
        drain_once(settings, settings.out_dir / "worker.log", timeout=600)

        exports = exporter(
            settings, config, Store(ex), clock=lambda: datetime(2026, 11, 3, tzinfo=UTC)
        )
        results = exports.deliver(period)
        assert {r.state for r in results} == {"delivered"}, [r.error for r in results]

        # the ground truth, summed over projects, per partner, under the partner's pseudonyms
        expected: dict[str, dict[RowKey, int]] = defaultdict(lambda: defaultdict(int))
        for (tenant, hour, _project, model, mig, region, provider, cluster), us in read_truth(
            sim.truth_path
        ).items():
            consumer = exports.consumer(provider, tenant)
            hour_text = hour.replace("Z", "")
            expected[provider][(hour_text, region, cluster, model, mig, consumer)] += us
        assert set(expected) == set(config.reference.partners)  # every partner has usage

        for res in results:
            rows = read_parquet_rows(next(res.directory.glob("*.parquet")))
            got: dict[RowKey, int] = defaultdict(int)
            for r in rows:
                assert r["ChargeClass"] is None  # nothing was delivered before: no corrections
                key = (
                    r["ChargePeriodStart"].strftime("%Y-%m-%dT%H:%M:%S"),
                    r["RegionId"],
                    r["x_Cluster"],
                    r["x_GpuModel"],
                    r["x_MigProfile"],
                    r["SubAccountId"],
                )
                got[key] += r["x_UsageMicroseconds"]
            assert dict(got) == dict(expected[res.partner_id]), res.partner_id
            assert len(read_csv_rows(next(res.directory.glob("*.csv")))) == len(rows)

        v = verify(exports, period)
        assert v.clean and v.mismatches == 0, [p.line() for p in v.partners]
        assert v.summary_line().endswith("mismatches=0")

        files = sorted(f for res in results for f in res.directory.glob("*focus*"))
        with ThreadPoolExecutor(max_workers=2) as pool:  # each run is its own process
            reports = list(pool.map(lambda f: run_validator(focus_validator, f), files))
        assert len(reports) == 2 * len(results)  # CSV and Parquet of every partner
        for report in reports:
            assert report.ok, report.line()
            # the only failed line is the excused branch of InvoiceId's OR rule
            assert set(report.excused) <= {"InvoiceId-C-004-C"}, report.line()
            assert report.failed == len(report.excused), report.line()
    finally:
        ex.close()
        drop_database(settings)
