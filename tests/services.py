"""Fixtures for tests on the real services (Kafka, ClickHouse server, chdb, stripe-mock).

`make test` starts the local stack first; a test that finds a service down starts the stack
itself (infra/stack.sh up) rather than skipping, so a green run always means real services.
Every test run works in its own ClickHouse database and Kafka topics.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor, migrate
from pipeline.settings import REPO_ROOT, Settings


def ensure_stack() -> None:
    if (
        subprocess.run(
            ["bash", "infra/stack.sh", "status"], cwd=REPO_ROOT, capture_output=True
        ).returncode
        != 0
    ):
        subprocess.run(
            ["bash", "infra/stack.sh", "up"], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL
        )


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def stack() -> None:
    ensure_stack()


@pytest.fixture
def settings(stack: None, tmp_path: Path) -> Settings:
    """Settings isolated to this test: own database, topics, consumer group, folders."""
    return Settings().isolated(unique("t"), tmp_path)


def server_executor(settings: Settings) -> DriverExecutor:
    return DriverExecutor(
        settings.clickhouse_host, settings.clickhouse_port, settings.clickhouse_database
    )


def drop_database(settings: Settings) -> None:
    from clickhouse_driver import Client

    client = Client(settings.clickhouse_host, port=settings.clickhouse_port)
    client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    client.disconnect()


@pytest.fixture(params=["server", "chdb"])
def engine(
    request: pytest.FixtureRequest, stack: None, tmp_path: Path
) -> Iterator[DriverExecutor | ChdbExecutor]:
    """The same tests on the Debian 18.16 server and on a current ClickHouse (chdb)."""
    db = f"gpumeter_{unique('s')}"
    if request.param == "server":
        s = Settings(clickhouse_database=db)
        ex: DriverExecutor | ChdbExecutor = server_executor(s)
        migrate(ex)
        yield ex
        ex.close()
        drop_database(s)
    else:
        ex = ChdbExecutor(tmp_path / "chdb", db)
        migrate(ex)
        yield ex
        ex.close()


@pytest.fixture(scope="session")
def focus_validator() -> Path:
    """The FinOps Foundation's focus-validator in its own virtual environment, installed
    (``infra/focus-validator.sh install``, what ``make focus-validator`` runs) when missing,
    so that a green run means the real validator ran."""
    venv = Path(
        subprocess.run(
            ["bash", "infra/focus-validator.sh", "path"],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    if not (venv / ".installed").exists():
        subprocess.run(
            ["bash", "infra/focus-validator.sh", "install"],
            cwd=REPO_ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return venv
