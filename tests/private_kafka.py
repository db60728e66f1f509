"""A private single-node Kafka for tests that stop and restart the broker (the shared local
stack's broker is never touched): ``infra/kafka.sh`` with its own ``GPUMETER_LOCAL_DIR`` and
free ports, the jars linked from the shared stack's (or resolved by Maven from its local
cache)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.settings import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateKafka:
    local: Path
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    def _run(self, action: str) -> None:
        env = {
            **os.environ,
            "GPUMETER_LOCAL_DIR": str(self.local),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_HEAP": "256m",
        }
        subprocess.run(
            ["bash", "infra/kafka.sh", action],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=180,
        )

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    local = tmp_path / "kafka-local"
    (local / "kafka").mkdir(parents=True)
    shared_libs = REPO_ROOT / ".local" / "kafka" / "libs"
    if (shared_libs / ".stamp").exists():
        (local / "kafka" / "libs").symlink_to(shared_libs)
    k = PrivateKafka(local, free_port(), free_port())
    k.start()
    try:
        yield k
    finally:
        k.stop()
