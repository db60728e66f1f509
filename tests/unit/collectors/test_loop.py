"""The collector loop: restarts resume from the committed cursor (no interval lost or counted
twice), a failing source or a full spool never stops it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.collectors import loop
from pipeline.collectors.intervals import Holder, Reading, Snapshot
from pipeline.collectors.publish import SpooledOutlet
from pipeline.collectors.reference import Site
from pipeline.collectors.spool import Spool
from tests.unit.collectors.test_spool import FakeProducer

pytestmark = [pytest.mark.unit, pytest.mark.collectors]
SITE = Site("dcgm", "c1", "us-east-1", "northwind-cloud")
A = (Holder("acme-ai/p", "acme-ai"),)


class Source:
    name = "fake"

    def __init__(self, fail_at: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls = 0
        self.fail_at = fail_at

    def observe(self, clock_us: Callable[[], int]) -> Snapshot:
        self.calls += 1
        if self.calls in self.fail_at:
            raise ConnectionError("exporter unreachable")
        s = Snapshot(clock_us())
        s.add(Reading("n1", "GPU-1", "H100", "H100", holders=A))
        return s


class Clock:
    def __init__(self, start: int) -> None:
        self.t = start

    def now(self) -> int:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += int(s * 1_000_000) + 1234  # a scrape completes a little after the tick


class IdProducer(FakeProducer):
    """Logs the identity of every event it is sent."""

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        fut = super().send(topic, key, b'{"i": ""}')
        if not fut.error:
            self.broker["log"].pop()
            self.broker["log"] += [(topic, key, e["id"]) for e in json.loads(value)]
        return fut


def make(path: Path, broker: dict[str, Any], max_bytes: int = 10**6) -> SpooledOutlet:
    return SpooledOutlet(
        path,
        Spool(path / "spool", max_bytes),
        {"usage": "u", "unattributed": "x"},
        lambda: IdProducer(broker),
    )


def intervals(broker: dict[str, Any]) -> list[tuple[int, int]]:
    return sorted(
        (int(i.split("@")[1].split("-")[0]), int(i.split("-")[-1])) for _, _, i in broker["log"]
    )


def test_restarts_resume_where_the_last_commit_ended(tmp_path: Path) -> None:
    broker: dict[str, Any] = {"up": True, "log": []}
    clock = Clock(10_000_000_000)
    for _ in range(3):  # three runs of 4 scrapes; each "killed" (outlet never closed)
        out = make(tmp_path, broker)
        loop.run(
            SITE, [Source()], out, loop.LoopOptions(interval_s=5, scrapes=4), clock.now, clock.sleep
        )
        out._lock.close()  # the process died: the lock goes with it
        clock.sleep(7)  # down for a while
    got = intervals(broker)
    assert len(got) == 11  # 4 scrapes, then 4 more for each restart (its first closes the gap)
    assert all(a[1] == b[0] for a, b in zip(got, got[1:], strict=False))


def test_source_errors_and_a_full_spool_keep_the_cursor(tmp_path: Path) -> None:
    broker: dict[str, Any] = {"up": False, "log": []}
    clock = Clock(20_000_000_000)
    out = make(tmp_path, broker, max_bytes=2000)
    stats = loop.run(
        SITE,
        [Source(fail_at={2})],
        out,
        loop.LoopOptions(interval_s=5, scrapes=6),
        clock.now,
        clock.sleep,
    )
    assert stats.source_errors == 1 and stats.spool_full >= 1 and stats.kafka_errors >= 3
    spooled = [json.loads(m.value) for _, r in out.spool.pending() for m in r.messages]
    ends = [(e["data"]["start"], e["data"]["end"]) for batch in spooled for e in batch]
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:], strict=False))
    broker["up"] = True
    stats = loop.run(
        SITE, [Source()], out, loop.LoopOptions(interval_s=5, scrapes=1), clock.now, clock.sleep
    )
    assert out.spool.pending_bytes() == 0 and stats.sent_messages == len(spooled) + 1
    out.close()
