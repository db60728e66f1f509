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


_MADE: list[str] = []  # this session's names, whose topics and databases go at its end


def unique(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _MADE.append(name)
    return name


def forget(names: list[str]) -> None:
    """Delete the Kafka topics (usage, dead letters, changelogs...) and ClickHouse databases
    named after ``names``: without this every run left a few hundred topics behind, and a
    broker holding thousands of partitions took longer to start than its health check."""
    from clickhouse_driver import Client
    from kafka.admin import KafkaAdminClient

    settings = Settings()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        ours = [t for t in admin.list_topics() if any(n in t for n in names)]
        for i in range(0, len(ours), 100):
            admin.delete_topics(ours[i : i + 100])
    finally:
        admin.close()
    client = Client(settings.clickhouse_host, port=settings.clickhouse_port)
    try:
        for n in names:
            client.execute(f"DROP DATABASE IF EXISTS gpumeter_{n}")
    finally:
        client.disconnect()


@pytest.fixture(scope="session")
def stack() -> Iterator[None]:
    ensure_stack()
    yield
    forget(_MADE)


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
