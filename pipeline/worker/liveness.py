"""The worker's liveness rule, without I/O: when to give up and let the supervisor restart it.

A worker that exits loses nothing (offsets are committed only after ClickHouse holds a batch;
the rest is replayed), but a worker that hangs stops metering of its partitions. A consumer
can hang in two ways: a fetcher left idle after a broker restart (seen with Faust, which the
worker ran on before), and a rebalance or state recovery that never finishes (reported in
faust-streaming issues #21, #74, #133; the runtime's own changelog recovery is watched the
same way). The rule:

1. a batch in progress is progress (a batch waiting for ClickHouse is retrying, not hung);
2. during a rebalance or table recovery, progress is the number of changelog records left to
   restore going down; none for ``recovery_timeout_s`` is a hang;
3. otherwise, no batch for ``stall_timeout_s`` while messages wait on an assigned partition is
   a hang.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Observation:
    """What the worker sees at one tick."""

    now: float
    in_batch: bool
    recovering: bool
    recovery_remaining: int | None
    backlog: int  # messages waiting on assigned partitions whose end offset is known


@dataclass
class Liveness:
    stall_timeout_s: float
    recovery_timeout_s: float
    started: float
    last_progress: float = field(init=False)
    _recovery_mark: int | None = field(init=False, default=None)
    _was_recovering: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.last_progress = self.started

    def progressed(self, now: float) -> None:
        """A batch completed, or partitions were (re)assigned."""
        self.last_progress = now

    def check(self, o: Observation) -> str | None:
        """``None`` while alive; otherwise why the worker is considered hung."""
        if o.in_batch:  # 1.
            self.progressed(o.now)
            self._was_recovering = False
            return None
        if o.recovering:  # 2.
            if not self._was_recovering or o.recovery_remaining != self._recovery_mark:
                self._was_recovering = True
                self._recovery_mark = o.recovery_remaining
                self.progressed(o.now)
                return None
            idle = o.now - self.last_progress
            if idle >= self.recovery_timeout_s:
                left = "unknown" if o.recovery_remaining is None else str(o.recovery_remaining)
                return (
                    f"rebalance or table recovery made no progress for {idle:.0f}s "
                    f"(changelog records left: {left})"
                )
            return None
        if self._was_recovering:  # recovery just ended: the stall clock starts now
            self._was_recovering = False
            self.progressed(o.now)
            return None
        idle = o.now - self.last_progress  # 3.
        if idle < self.stall_timeout_s:
            return None
        if o.backlog > 0:
            return f"no batch for {idle:.0f}s with {o.backlog} messages waiting"
        return None
