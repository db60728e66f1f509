"""Where the machine's CPU goes during a bench step.

A meter follows a drain (:func:`devtools.bench.steps.watch` calls :meth:`CpuMeter.tick` each
poll): from the group's first commit to its last, the CPU seconds of the workers, of the Kafka
broker and of the ClickHouse server (``/proc/<pid>/stat``, the pids the local stack records in
``.local/run``), and how busy the machine's cores were (``/proc/stat``). Divided by the samples
drained, that is the whole stack's CPU per sample, and ``cores / CPU per sample`` the most any
arrangement of the same work could drain on this machine: the ceiling that says whether a
target is a matter of using the idle core or of doing less work per sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from devtools.bench.steps import Rows, committed
from pipeline.settings import REPO_ROOT

RUN_DIR = REPO_ROOT / ".local" / "run"
SERVICES = ("kafka", "clickhouse")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces; fields follow ")"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def service_pids(run_dir: Path = RUN_DIR) -> dict[str, int]:
    """The local stack's broker and ClickHouse server, where ``infra/`` recorded them."""
    pids: dict[str, int] = {}
    for name in SERVICES:
        f = run_dir / f"{name}.pid"
        if f.exists() and Path(f"/proc/{f.read_text().strip()}").exists():
            pids[name] = int(f.read_text().strip())
    return pids


@dataclass
class CpuMeter:
    """CPU seconds per process between the first tick that sees a commit and the last tick."""

    services: dict[str, int] = field(default_factory=service_pids)
    _start: dict[str, float] | None = None
    _last: dict[str, float] = field(default_factory=dict)
    _jiffies: tuple[tuple[int, int], tuple[int, int]] | None = None

    def _read(self, worker_pids: list[int]) -> dict[str, float]:
        now: dict[str, float] = {}
        for name, pid in self.services.items():
            now[name] = cpu_seconds(pid)
        for pid in worker_pids:
            try:
                now[f"worker:{pid}"] = cpu_seconds(pid)
            except OSError:  # exited: its last reading stands
                now[f"worker:{pid}"] = self._last.get(f"worker:{pid}", 0.0)
        return now

    def tick(self, rows: Rows, worker_pids: list[int]) -> None:
        if not committed(rows):
            return
        now = self._read(worker_pids)
        jiffies = machine_jiffies()
        if self._start is None:
            self._start = now
            self._jiffies = (jiffies, jiffies)
        else:
            assert self._jiffies is not None
            self._jiffies = (self._jiffies[0], jiffies)
        self._last = now

    def seconds(self) -> dict[str, float]:
        """CPU seconds per process over the measured span; the workers summed as ``worker``."""
        if self._start is None:
            return {}
        start = self._start
        used = {k: self._last[k] - start.get(k, 0.0) for k in self._last}
        out = {"worker": sum(v for k, v in used.items() if k.startswith("worker:"))}
        out.update({k: v for k, v in used.items() if not k.startswith("worker:")})
        return out

    def machine_busy(self) -> float | None:
        """The fraction of all cores' time that was busy over the span (1.0: saturated)."""
        if self._jiffies is None:
            return None
        (b0, t0), (b1, t1) = self._jiffies
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None


def per_sample(seconds: dict[str, float], samples: int) -> dict[str, float]:
    """Micro-seconds of CPU per sample, per process and in ``total``."""
    if not samples:
        return {}
    out = {k: round(v / samples * 1e6, 1) for k, v in seconds.items()}
    out["total"] = round(sum(seconds.values()) / samples * 1e6, 1)
    return out


def ceiling(us_per_sample: float, cores: int | None = None) -> float:
    """The most samples per second ``cores`` could do at this CPU cost per sample."""
    cores = cores or os.cpu_count() or 1
    return round(cores * 1e6 / us_per_sample, 1) if us_per_sample > 0 else 0.0
