"""Shared fixtures. Tests are marked by what they need; `make test` runs them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Config
from pipeline.settings import REPO_ROOT

pytest_plugins = ["tests.services"]


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
