"""The bench's CPU meter: per-process CPU seconds over a drain's span, read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from devtools.bench.cpu import CpuMeter, ceiling, cpu_seconds, machine_jiffies, per_sample

pytestmark = pytest.mark.unit

ROWS_NONE = [(0, 0, 100)]  # (partition, committed, end): nothing committed yet
ROWS_SOME = [(0, 10, 100)]


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_per_sample_and_the_cores_ceiling() -> None:
    us = per_sample({"worker": 2.0, "kafka": 0.5, "clickhouse": 0.5}, 100_000)
    assert us == {"worker": 20.0, "kafka": 5.0, "clickhouse": 5.0, "total": 30.0}
    assert ceiling(us["total"], cores=2) == pytest.approx(66_666.7)
    assert ceiling(0.0, cores=2) == 0.0
    assert per_sample({"worker": 1.0}, 0) == {}


def test_the_span_starts_at_the_first_commit_and_counts_what_the_worker_burned() -> None:
    meter = CpuMeter(services={})
    me = os.getpid()
    meter.tick(ROWS_NONE, [me])
    _burn(0.2)  # before the first commit: not counted
    meter.tick(ROWS_SOME, [me])
    _burn(0.3)
    meter.tick(ROWS_SOME, [me])
    used = meter.seconds()
    assert 0.25 <= used["worker"] < 0.5
    busy = meter.machine_busy()
    assert busy is not None and 0.0 < busy <= 1.0


def test_a_worker_that_exited_keeps_its_last_reading() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.process_time()\n"
         "while time.process_time()-t<0.3: pass\ntime.sleep(30)"]
    )  # fmt: skip
    try:
        meter = CpuMeter(services={})
        meter.tick(ROWS_SOME, [child.pid])
        time.sleep(0.6)
        meter.tick(ROWS_SOME, [child.pid])
        burned = meter.seconds()["worker"]
    finally:
        child.kill()
        child.wait()
    meter.tick(ROWS_SOME, [child.pid])  # gone from /proc now
    assert meter.seconds()["worker"] == burned
    assert cpu_seconds(os.getpid()) > 0
    busy, total = machine_jiffies()
    assert 0 < busy < total
