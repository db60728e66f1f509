"""Dead letters end to end: a tenant missing from config is dead-lettered with its reason;
after the fix, `dlq resubmit` sends the originals back once, and the counts become exact."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import drain_once
from devtools.verify import compare, stored_as_truth
from pipeline import dlq
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


def test_unknown_tenant_dead_lettered_then_resubmitted_after_fix(
    settings: Settings, config: Config, tmp_config: Path
) -> None:
    period = Period.parse("2026-10")
    ex = server_executor(settings)
    migrate(ex)
    sim = publish(
        settings,
        config,
        period,
        nodes=3,
        interval_s=1800,
        seed=3,
        progress=False,
    )
    truth = read_truth(sim.truth_path)
    victim = max({k[0] for k in truth}, key=lambda t: sum(v for k, v in truth.items() if k[0] == t))
    tenants = tmp_config / "tenants.yaml"
    tenants.write_text(
        "\n".join(line for line in tenants.read_text().splitlines() if f"id: {victim}," not in line)
    )

    broken = settings.model_copy(update={"config_dir": tmp_config})
    drain_once(broken, settings.out_dir / "worker-1.log")
    counts = dlq.count_by_reason(dlq.read_dead_letters(settings))
    assert set(counts) == {"unknown_tenant"} and counts["unknown_tenant"] > 0
    store = Store(ex)
    v = compare(truth, stored_as_truth(store, period))
    assert v.lost_us == sum(u for k, u in truth.items() if k[0] == victim) and v.double_us == 0

    assert dlq.resubmit(settings, ex, "unknown_tenant", dry_run=True)[0] == counts["unknown_tenant"]
    sent, skipped = dlq.resubmit(settings, ex, "unknown_tenant")
    assert (sent, skipped) == (counts["unknown_tenant"], 0)
    assert dlq.resubmit(settings, ex, "unknown_tenant") == (0, sent)  # never twice

    drain_once(settings, settings.out_dir / "worker-2.log")  # fixed config
    v = compare(truth, stored_as_truth(store, period))
    assert v.exact, v
    ex.close()
    drop_database(settings)
