"""The loop of a snapshot collector (DCGM, NVML): observe every source on schedule, turn the
change since the previous observation into spans (:mod:`~pipeline.collectors.intervals`),
commit them with the new cursor, send what is spooled, sleep until the next tick.

**Schedule**: scrapes happen at multiples of the interval since the epoch (``--interval 60``:
every minute on the minute), so a fleet's collectors cut time at the same instants; the
intervals themselves run between the instants the scrapes actually completed.

**Cursor**: the last committed snapshot of each source. A restarted collector recovers it
(:meth:`~pipeline.collectors.publish.SpooledOutlet.recover`), so its first interval runs from
the last committed scrape to the new one: a kill at any moment loses no observed interval and
counts none twice. A pause longer than ``max_gap_s`` (the collector was down, the exporter
unreachable) is reported as a gap and not billed: nobody observed it.

A source that fails (HTTP error, NVML error, malformed text) is logged and counted and keeps
its cursor; the others go on. A full spool is logged as an error and the cursor stays where
it was, so the interval resumes from there once Kafka has taken the backlog (up to the gap).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.collectors.events import Span, messages
from pipeline.collectors.intervals import Snapshot, between
from pipeline.collectors.publish import Outlet
from pipeline.collectors.reference import Site
from pipeline.collectors.spool import SpoolFull
from pipeline.domain.hours import US_PER_SECOND, from_us

log = logging.getLogger("gpumeter.collect")


class Source(Protocol):
    name: str  # its key in the cursor (the URL, "nvml")

    def observe(self, clock_us: Callable[[], int]) -> Snapshot:
        """One scrape, timed by ``clock_us`` when it completed; raises on failure."""
        ...


@dataclass(slots=True)
class LoopStats:
    scrapes: int = 0
    samples: int = 0
    usage_us: int = 0
    unattributed: Counter[str] = field(default_factory=Counter)  # reason -> spans
    unattributed_us: Counter[str] = field(default_factory=Counter)  # reason -> GPU-µs
    source_errors: int = 0
    invalid: int = 0
    gaps: int = 0
    spool_full: int = 0
    sent_messages: int = 0
    kafka_errors: int = 0

    def add(self, spans: list[Span]) -> None:
        for s in spans:
            if s.tenant_id is not None:
                self.samples += 1
                self.usage_us += s.usage_us
            else:
                self.unattributed[s.reason] += 1
                self.unattributed_us[s.reason] += s.usage_us


@dataclass(frozen=True, slots=True)
class LoopOptions:
    interval_s: float = 60.0
    scrapes: int | None = None  # stop after this many rounds (None: until stopped)
    max_gap_s: float = 900.0
    drain_budget_s: float = 30.0


def _gpu_h(us: int) -> str:
    return f"{us / 3.6e9:.4f}"


def run(
    site: Site,
    sources: Sequence[Source],
    outlet: Outlet,
    options: LoopOptions,
    clock_us: Callable[[], int],
    sleep: Callable[[float], object],
    stop: threading.Event | None = None,
) -> LoopStats:
    stats = LoopStats()
    cursor = outlet.recover()
    state: dict[str, Snapshot] = {}
    if cursor is not None:
        state = {k: Snapshot.from_json(v) for k, v in cursor.get("sources", {}).items()}
        log.info(
            "%s: resuming from the committed cursor (%s)",
            site.kind,
            ", ".join(f"{k} at {from_us(v.time_us).isoformat()}" for k, v in state.items()),
        )
    max_gap_us = int(options.max_gap_s * US_PER_SECOND)
    step_us = int(options.interval_s * US_PER_SECOND)
    rounds = 0
    while options.scrapes is None or rounds < options.scrapes:
        if stop is not None and stop.is_set():
            break
        if rounds:
            now = clock_us()
            wake = math.floor(now / step_us + 1) * step_us
            sleep((wake - now) / US_PER_SECOND)
            if stop is not None and stop.is_set():
                break
        rounds += 1
        spans: list[Span] = []
        new_state = dict(state)
        notes: list[str] = []
        for src in sources:
            try:
                snap = src.observe(clock_us)
            except Exception as exc:  # noqa: BLE001 - a failing source never stops the loop
                stats.source_errors += 1
                log.warning("%s: %s: %s: %s", site.kind, src.name, type(exc).__name__, exc)
                continue
            stats.scrapes += 1
            prev = state.get(src.name)
            if prev is not None:
                b = between(prev, snap, max_gap_us)
                spans += b.spans
                if b.gap_us:
                    stats.gaps += 1
                    log.warning(
                        "%s: %s: %.0fs since the last committed scrape (more than the %.0fs "
                        "allowed): that gap was not observed and is not counted",
                        site.kind,
                        src.name,
                        b.gap_us / US_PER_SECOND,
                        options.max_gap_s,
                    )
                if b.clock_went_back:
                    notes.append(f"{src.name}: clock went back, interval skipped")
            new_state[src.name] = snap
        msgs, problems = messages(site, spans)
        for p in problems:
            stats.invalid += 1
            log.error("%s: span makes no valid event (not sent): %s", site.kind, p)
        cursor = {"sources": {k: v.to_json() for k, v in new_state.items()}}
        sent_first = 0
        try:
            try:
                outlet.commit(msgs, cursor)
            except SpoolFull:  # make room if Kafka takes the backlog now, then try again
                sent_first = outlet.drain(options.drain_budget_s).sent_messages
                outlet.commit(msgs, cursor)
        except SpoolFull as exc:
            stats.spool_full += 1
            log.error("%s: %s", site.kind, exc)
        else:
            state = new_state
            stats.add(spans)
        report = outlet.drain(options.drain_budget_s)
        report.sent_messages += sent_first
        stats.sent_messages += report.sent_messages
        if report.error:
            stats.kafka_errors += 1
            notes.append(f"Kafka: {report.error}")
        attributed = [s for s in spans if s.tenant_id is not None]
        unatt = Counter(s.reason for s in spans if s.tenant_id is None)
        log.info(
            "%s: round %d: units=%d samples=%d gpu_h=%s tenants=%d unattributed=%d%s "
            "unattributed_gpu_h=%s messages=%d sent=%d spooled_bytes=%d%s",
            site.kind,
            rounds,
            sum(len(s.readings) for s in new_state.values()),
            len(attributed),
            _gpu_h(sum(s.usage_us for s in attributed)),
            len({s.tenant_id for s in attributed}),
            sum(unatt.values()),
            f" ({' '.join(f'{k}={v}' for k, v in sorted(unatt.items()))})" if unatt else "",
            _gpu_h(sum(s.usage_us for s in spans if s.tenant_id is None)),
            len(msgs),
            report.sent_messages,
            report.pending_bytes,
            "".join(f"; {n}" for n in notes),
        )
    return stats
