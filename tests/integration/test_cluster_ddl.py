"""Cluster DDL (`gpumeter db migrate --cluster NAME`): no cluster runs here, so it is checked
for syntax on both engines: a current ClickHouse parses it (formatQuery), and the 18.16 server
gets past the parser and only refuses the unknown cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor, cluster_statements
from pipeline.cli import main
from pipeline.settings import Settings

pytestmark = [pytest.mark.clickhouse, pytest.mark.chdb]

STMTS = cluster_statements("gpu_cluster", "gpumeter")


def test_every_table_is_replicated_and_distributed() -> None:
    creates = [s for s in STMTS if s.startswith("CREATE TABLE") and "Distributed" not in s]
    assert creates and all(
        "ON CLUSTER gpu_cluster" in s and "ENGINE = Replicated" in s for s in creates
    )
    dist = [s for s in STMTS if "ENGINE = Distributed(gpu_cluster, gpumeter" in s]
    assert len(dist) == len(creates)
    hourly = next(s for s in STMTS if "usage_hourly_all" in s and "Distributed" in s)
    assert "cityHash64(tenant_id)" in hourly  # every version of a key on one shard
    assert any(
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/gpumeter/usage_hourly', "
        "'{replica}', version)" in s
        for s in STMTS
    )


def test_current_clickhouse_parses_every_statement(tmp_path: Path) -> None:
    engine = ChdbExecutor(tmp_path / "chdb", "gpumeter")
    engine.create_database()
    for stmt in STMTS:
        assert engine.execute("SELECT formatQuery(%(q)s)", {"q": stmt})


def test_clickhouse_18_16_parses_it_and_only_lacks_the_cluster(stack: None) -> None:
    from clickhouse_driver.errors import ServerException

    engine = DriverExecutor(Settings().clickhouse_host, Settings().clickhouse_port, "default")

    for stmt in STMTS:
        with pytest.raises(ServerException) as err:
            engine.execute(stmt)
        assert err.value.code != 62, f"syntax error in: {stmt[:80]}"  # 62 = SYNTAX_ERROR
        assert err.value.code == 170  # cluster not configured here
    engine.close()


def test_cli_prints_the_cluster_ddl(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--cluster", "gpu_cluster", "--print"]) == 0
    out = capsys.readouterr().out
    assert "ON CLUSTER gpu_cluster" in out and out.count(";") == len(STMTS)
