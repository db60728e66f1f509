"""Where a collector's batches go: through the spool to Kafka (:class:`SpooledOutlet`), or
printed as JSON lines (:class:`PrintOutlet`, ``--dry-run``).

**Commit, then publish.** A batch (the messages of one scrape or import chunk, and the
collector's cursor after it) is first appended to the fsync'd spool, then the cursor file is
replaced atomically, and only then are spooled records sent to Kafka with an idempotent
producer (``acks=all``) and acknowledged in the spool once Kafka has confirmed every message
of a record. A restart recovers the newest cursor of the two (cursor file, last spooled
record), so the next interval starts exactly where the last committed one ended, and sends
again whatever was not acknowledged: a record sent but not yet acknowledged when the process
died is sent twice, with the same event identities, and deduplicated by the worker.

While Kafka is unreachable, records stay in the spool (bounded, :class:`~.spool.SpoolFull`)
and are sent in order when it returns; each drain is bounded in time so that a collector
keeps observing on schedule.
"""

from __future__ import annotations

import fcntl
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from pipeline.collectors.events import USAGE, Message
from pipeline.collectors.spool import Spool, write_atomic

log = logging.getLogger(__name__)


class StateLocked(Exception):
    """Another collector process uses the same state directory."""


@dataclass(slots=True)
class DrainReport:
    sent_messages: int = 0
    sent_records: int = 0
    pending_bytes: int = 0
    error: str | None = None


class Outlet(Protocol):
    def recover(self) -> dict[str, Any] | None: ...

    def commit(self, messages: list[Message], cursor: dict[str, Any] | None) -> None: ...

    def drain(self, budget_s: float) -> DrainReport: ...

    def close(self) -> None: ...


class PrintOutlet:
    """``--dry-run``: every event as one JSON line on ``out``; no Kafka, no state on disk."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.events = 0

    def recover(self) -> dict[str, Any] | None:
        return None

    def commit(self, messages: list[Message], cursor: dict[str, Any] | None) -> None:
        for m in messages:
            for event in json.loads(m.value):
                self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
                self.events += 1
        self.out.flush()

    def drain(self, budget_s: float) -> DrainReport:
        return DrainReport()

    def close(self) -> None:
        pass


class SpooledOutlet:
    """The spool in ``directory/spool``, the cursor in ``directory/cursor.json`` (one process
    at a time: an exclusive lock on ``directory/lock``), and Kafka behind them."""

    def __init__(
        self,
        directory: Path,
        spool: Spool,
        topics: dict[str, str],
        producer_factory: Callable[[], Any],
        send_timeout_s: float = 30.0,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / "lock", "a+")  # noqa: SIM115 - held for the lifetime
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StateLocked(
                f"{self.dir} is used by another collector process (lock {self.dir / 'lock'}); "
                "give each collector its own --state-dir"
            ) from None
        self.spool = spool
        self.topics = topics
        self.producer_factory = producer_factory
        self.send_timeout_s = send_timeout_s
        self._producer: Any = None
        self._commits = 0
        self._outage_since: float | None = None

    # -- state -----------------------------------------------------------------------------
    def recover(self) -> dict[str, Any] | None:
        path = self.dir / "cursor.json"
        candidates = [c for c in (self.spool.last_cursor,) if c is not None]
        if path.exists():
            candidates.append(json.loads(path.read_text()))
        if not candidates:
            return None
        newest = max(candidates, key=lambda c: int(c.get("commit", 0)))
        self._commits = int(newest.get("commit", 0))
        return newest

    def commit(self, messages: list[Message], cursor: dict[str, Any] | None) -> None:
        """Spool ``messages`` with ``cursor`` (fsync'd), then the cursor file. Raises
        :class:`~.spool.SpoolFull` with nothing written when the spool is full."""
        doc = None
        if cursor is not None:
            doc = {**cursor, "commit": self._commits + 1}
        if messages:
            self.spool.append(messages, doc)
        if doc is not None:
            write_atomic(self.dir / "cursor.json", json.dumps(doc).encode())
            self._commits += 1

    # -- Kafka -----------------------------------------------------------------------------
    def _close_producer(self) -> None:
        """Drop the producer at once; its unacknowledged sends stay in the spool."""
        p, self._producer = self._producer, None
        if p is None:
            return
        try:
            p.close(timeout=0)
        except Exception:  # noqa: BLE001 - kafka-python's close stops at its flush when sends
            sender = getattr(p, "_sender", None)  # are pending: fail them and close for good
            if sender is not None:
                sender.force_close()
                sender.join(5)  # the I/O thread closes its connections on the way out
            p._closed = True

    def drain(self, budget_s: float) -> DrainReport:
        """Send spooled records in order for at most about ``budget_s`` seconds."""
        report = DrainReport()
        deadline = time.monotonic() + budget_s
        try:
            for pos, rec in self.spool.pending():
                if self._producer is None:
                    self._producer = self.producer_factory()
                futures = [
                    self._producer.send(
                        self.topics[m.topic], key=m.key.encode(), value=m.value.encode()
                    )
                    for m in rec.messages
                ]
                self._producer.flush(
                    timeout=max(1.0, min(self.send_timeout_s, deadline - time.monotonic()))
                )
                for f in futures:
                    if not f.is_done:
                        raise TimeoutError("Kafka did not acknowledge in time")
                    f.get(timeout=0)  # raises the send's error
                self.spool.ack(pos)
                report.sent_records += 1
                report.sent_messages += len(rec.messages)
                if time.monotonic() >= deadline:
                    break
            if self._outage_since is not None:
                log.warning(
                    "Kafka reachable again after %.0fs; spooled records are being sent",
                    time.monotonic() - self._outage_since,
                )
                self._outage_since = None
        except Exception as exc:  # noqa: BLE001 - any send failure: keep the records, retry
            report.error = f"{type(exc).__name__}: {exc}"[:300]
            if self._outage_since is None:
                self._outage_since = time.monotonic()
            self._close_producer()
        report.pending_bytes = self.spool.pending_bytes()
        return report

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.send_timeout_s)
            except Exception:  # noqa: BLE001 - what was not acknowledged stays in the spool
                pass
        self._close_producer()
        self._lock.close()


def reachable(bootstrap: str, timeout_s: float = 2.0) -> None:
    """ConnectionError unless one of the bootstrap brokers accepts a TCP connection: checked
    before a producer is built, so that an unreachable Kafka costs one closed socket rather
    than a half-started client."""
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection(
                (host.strip("[]") or "localhost", int(port)), timeout_s
            ).close()
            return
        except (OSError, ValueError) as exc:
            errors.append(f"{server.strip()}: {exc}")
    raise ConnectionError(f"no Kafka broker answers ({'; '.join(errors)})")


def usage_topics(usage_topic: str, unattributed_topic: str) -> dict[str, str]:
    from pipeline.collectors.events import UNATTRIBUTED

    return {USAGE: usage_topic, UNATTRIBUTED: unattributed_topic}
