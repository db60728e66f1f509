"""The ``world`` fixture of the billing scenarios (see :mod:`tests.scenarios.world`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.adapters.clickhouse import ChdbExecutor, migrate
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from tests.scenarios.world import Clock, World, at
from tests.stripe_fake import FakeStripe


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ex = ChdbExecutor(tmp_path / "chdb", "gm_scn")
    migrate(ex)
    fake = FakeStripe()
    gateway = StripeGateway(SecretStr("sk_test_x"), "http://fake", http_client=fake)
    yield World(ex, Store(ex), Ledger(ex), fake, gateway, Clock(at(11, 1, 1)), tmp_path / "out")
    ex.close()
