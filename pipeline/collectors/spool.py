"""A bounded, fsync'd, append-only on-disk queue: the collectors' write-ahead log.

Every batch a collector observed is appended here (and ``fsync``'d) *before* anything else
happens to it; it leaves only once Kafka acknowledged every message of it (acks from all
in-sync replicas). So whatever was observed survives a SIGKILL, a crash or a power loss
between observing and publishing, and while Kafka is unreachable the records wait here, in
order, until it returns.

**Format**: segment files ``seg-<n>.log`` in the spool directory, each a sequence of records
``b"GSP1" | length (4 bytes, big-endian) | CRC-32 of the payload (4 bytes) | payload``; the
payload is JSON ``{"seq": n, "cursor": {...} | null, "messages": [[topic, key, value], ...]}``.
``ack.json`` holds the position (segment, offset) up to which records are acknowledged; it is
replaced atomically (write, fsync, rename, fsync of the directory). Segments wholly before it
are deleted.

**Torn writes**: a record is committed once :meth:`Spool.append` returns. At open, the last
segment is scanned; a record cut short or failing its CRC at its end (a write interrupted by a
kill or a crash: never committed) is truncated away, with a warning. A bad record anywhere
else is corruption, refused with :class:`SpoolCorrupt` rather than skipped.

**Bound**: the bytes not yet acknowledged may not exceed ``max_bytes``; an append that would
pass it raises :class:`SpoolFull` naming the directory, the size, the limit and what to do.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.collectors.events import Message

log = logging.getLogger(__name__)

MAGIC = b"GSP1"
HEADER = struct.Struct(">4sII")
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` of records Kafka has not acknowledged yet."""


class SpoolCorrupt(Exception):
    """A committed record of the spool cannot be read back."""


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    offset: int  # byte offset just after the record


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    cursor: dict[str, Any] | None
    messages: list[Message]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _encode(rec: Record) -> bytes:
    payload = json.dumps(
        {
            "seq": rec.seq,
            "cursor": rec.cursor,
            "messages": [[m.topic, m.key, m.value] for m in rec.messages],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> Record:
    doc = json.loads(payload)
    return Record(int(doc["seq"]), doc["cursor"], [Message(t, k, v) for t, k, v in doc["messages"]])


class Spool:
    def __init__(
        self, directory: Path, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ack = self._read_ack()
        self._last_seq = 0
        self._last_cursor: dict[str, Any] | None = None
        for seg in self._segments():
            if seg < self._ack.segment:
                self._path(seg).unlink()
        segs = self._segments()
        for seg in segs:
            last = seg == segs[-1]
            for _pos, rec in self._scan(seg, 0, repair=last):
                self._last_seq = max(self._last_seq, rec.seq)
                if rec.cursor is not None:
                    self._last_cursor = rec.cursor
        self._current = segs[-1] if segs else self._ack.segment + 1

    # -- paths and ack ---------------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.dir / f"seg-{seg:012d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(p.name[4:16]) for p in self.dir.glob("seg-*.log"))

    def _read_ack(self) -> Position:
        path = self.dir / "ack.json"
        if not path.exists():
            return Position(0, 0)
        doc = json.loads(path.read_text())
        return Position(int(doc["segment"]), int(doc["offset"]))

    # -- reading ---------------------------------------------------------------------------
    def _scan(
        self, seg: int, start: int, repair: bool = False
    ) -> Iterator[tuple[Position, Record]]:
        path = self._path(seg)
        data = path.read_bytes()
        off = start
        while off < len(data):
            bad = None
            if len(data) - off < HEADER.size:
                bad = "a record header cut short"
            else:
                magic, length, crc = HEADER.unpack_from(data, off)
                body = data[off + HEADER.size : off + HEADER.size + length]
                if magic != MAGIC:
                    bad = "no record marker"
                elif len(body) < length:
                    bad = "a record cut short"
                elif zlib.crc32(body) != crc:
                    bad = "a record failing its CRC"
            if bad is not None:
                if not repair:
                    raise SpoolCorrupt(f"{path} at byte {off}: {bad}")
                log.warning(
                    "spool %s: %s at byte %d (an append interrupted before it was committed): "
                    "%d bytes truncated",
                    path,
                    bad,
                    off,
                    len(data) - off,
                )
                with open(path, "r+b") as fh:
                    fh.truncate(off)
                    os.fsync(fh.fileno())
                return
            off += HEADER.size + length
            yield Position(seg, off), _decode(body)

    def pending(self) -> Iterator[tuple[Position, Record]]:
        """Records not yet acknowledged, oldest first."""
        for seg in self._segments():
            if seg < self._ack.segment:
                continue
            start = self._ack.offset if seg == self._ack.segment else 0
            yield from self._scan(seg, start)

    def pending_bytes(self) -> int:
        total = 0
        for seg in self._segments():
            if seg < self._ack.segment:
                continue
            size = self._path(seg).stat().st_size
            total += size - (self._ack.offset if seg == self._ack.segment else 0)
        return total

    def pending_records(self) -> int:
        return sum(1 for _ in self.pending())

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def last_cursor(self) -> dict[str, Any] | None:
        """The cursor of the newest record holding one (acknowledged or not)."""
        return self._last_cursor

    # -- writing ---------------------------------------------------------------------------
    def append(self, messages: list[Message], cursor: dict[str, Any] | None = None) -> int:
        """Append one record and fsync it; returns its sequence number. :class:`SpoolFull`
        when it would pass the bound (nothing written then)."""
        rec = Record(self._last_seq + 1, cursor, messages)
        data = _encode(rec)
        pending = self.pending_bytes()
        if pending + len(data) > self.max_bytes:
            raise SpoolFull(
                f"spool {self.dir} is full: {pending:,} bytes not yet acknowledged by Kafka, "
                f"limit {self.max_bytes:,} (GPUMETER_SPOOL_MAX_BYTES); nothing more is "
                "observed until Kafka takes the backlog: restore the connection to Kafka, or "
                "raise the limit if the disk allows"
            )
        path = self._path(self._current)
        if path.exists() and path.stat().st_size >= self.segment_bytes:
            self._current += 1
            path = self._path(self._current)
        new = not path.exists()
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            fsync_dir(self.dir)
        self._last_seq = rec.seq
        if cursor is not None:
            self._last_cursor = cursor
        return rec.seq

    def ack(self, pos: Position) -> None:
        """Everything up to ``pos`` is in Kafka: remember it and delete finished segments."""
        write_atomic(
            self.dir / "ack.json",
            json.dumps({"segment": pos.segment, "offset": pos.offset}).encode(),
        )
        self._ack = pos
        for seg in self._segments():
            if seg < pos.segment:
                self._path(seg).unlink()
