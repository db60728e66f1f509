"""The worker's liveness rule (pipeline/worker/liveness.py), tick by tick."""

from __future__ import annotations

import pytest

from pipeline.worker.liveness import Liveness, Observation

pytestmark = pytest.mark.unit


def obs(now: float, **kw: object) -> Observation:
    base: dict[str, object] = {
        "in_batch": False,
        "recovering": False,
        "recovery_remaining": None,
        "backlog": 0,
    }
    base.update(kw)
    return Observation(now=now, **base)  # type: ignore[arg-type]


def live() -> Liveness:
    return Liveness(stall_timeout_s=30, recovery_timeout_s=120, started=0.0)


def test_idle_worker_with_nothing_to_do_stays_alive() -> None:
    lv = live()
    assert all(lv.check(obs(t)) is None for t in range(0, 3600, 5))


def test_backlog_without_a_batch_for_the_stall_timeout_is_a_hang() -> None:
    lv = live()
    assert lv.check(obs(29, backlog=10)) is None
    why = lv.check(obs(30, backlog=10))
    assert why is not None and "10 messages waiting" in why


def test_completed_batches_and_assignments_reset_the_clock() -> None:
    lv = live()
    lv.progressed(25)
    assert lv.check(obs(50, backlog=10)) is None
    assert lv.check(obs(55, backlog=10)) is not None


def test_a_batch_waiting_for_clickhouse_is_not_a_hang() -> None:
    lv = live()
    assert all(lv.check(obs(t, in_batch=True, backlog=9)) is None for t in range(0, 600, 5))
    assert lv.check(obs(620, backlog=9)) is None  # the clock restarted at the last tick
    assert lv.check(obs(630, backlog=9)) is not None


def test_recovery_that_restores_records_is_progress() -> None:
    lv = live()
    for i, t in enumerate(range(0, 1000, 5)):
        assert lv.check(obs(t, recovering=True, recovery_remaining=10_000 - i, backlog=5)) is None


def test_recovery_that_restores_nothing_for_the_recovery_timeout_is_a_hang() -> None:
    lv = live()
    assert lv.check(obs(0, recovering=True, recovery_remaining=318)) is None
    assert lv.check(obs(119, recovering=True, recovery_remaining=318)) is None
    why = lv.check(obs(120, recovering=True, recovery_remaining=318))
    assert why is not None and "records left: 318" in why


def test_a_rebalance_without_recovery_counts_is_bounded_too() -> None:
    lv = live()
    assert lv.check(obs(100, recovering=True)) is None
    assert lv.check(obs(219, recovering=True)) is None
    assert lv.check(obs(220, recovering=True)) is not None


def test_the_stall_clock_starts_when_recovery_ends() -> None:
    lv = live()
    assert lv.check(obs(0, recovering=True, recovery_remaining=5)) is None
    assert lv.check(obs(100, recovering=True, recovery_remaining=0)) is None
    assert lv.check(obs(200, backlog=50)) is None  # recovery just ended
    assert lv.check(obs(229, backlog=50)) is None
    assert lv.check(obs(230, backlog=50)) is not None
