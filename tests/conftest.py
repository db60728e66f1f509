"""Shared fixtures. Tests are marked by what they need; `make test` runs them all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.settings import REPO_ROOT

pytest_plugins = ["tests.services"]


def _local_stack_env() -> None:
    """The tests run on the local stack: its Stripe test key and webhook secret
    (``infra/local.env``) for every ``Settings()`` and every process a test starts, unless
    the environment already has them. Settings have no default for them."""
    for line in (REPO_ROOT / "infra" / "local.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            os.environ.setdefault(key.strip(), value.strip())


_local_stack_env()


@pytest.fixture(scope="session")
def config() -> Config:
    return Config.load(REPO_ROOT / "config")


@pytest.fixture
def tmp_config(tmp_path: Path) -> Path:
    """A writable copy of config/ for tests that break it on purpose."""
    dst = tmp_path / "config"
    dst.mkdir()
    for f in (REPO_ROOT / "config").glob("*.yaml"):
        (dst / f.name).write_text(f.read_text())
    return dst
