"""The write-ahead spool and the outlet around it: order, bound, torn writes, recovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.collectors.events import Message
from pipeline.collectors.publish import SpooledOutlet, StateLocked
from pipeline.collectors.spool import Spool, SpoolCorrupt, SpoolFull

pytestmark = [pytest.mark.unit, pytest.mark.collectors]


def msgs(n: int, tag: str = "m") -> list[Message]:
    return [Message("usage", "acme-ai", json.dumps({"i": f"{tag}{i}"})) for i in range(n)]


def values(spool: Spool) -> list[str]:
    return [json.loads(m.value)["i"] for _, r in spool.pending() for m in r.messages]


def test_records_come_back_in_order_until_acknowledged(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6, segment_bytes=200)  # small segments: several files
    for i in range(5):
        sp.append(msgs(2, f"r{i}."), {"n": i})
    assert values(sp) == [f"r{i}.{j}" for i in range(5) for j in range(2)]
    assert len(list(tmp_path.glob("seg-*.log"))) > 1
    pos = [p for p, _ in sp.pending()]
    sp.ack(pos[2])
    reopened = Spool(tmp_path, 10**6, segment_bytes=200)
    assert values(reopened) == ["r3.0", "r3.1", "r4.0", "r4.1"]
    assert reopened.last_cursor == {"n": 4} and reopened.last_seq == 5
    reopened.ack([p for p, _ in reopened.pending()][-1])
    assert reopened.pending_bytes() == 0 and values(Spool(tmp_path, 10**6, 200)) == []


def test_a_torn_tail_is_truncated_and_corruption_refused(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6)
    sp.append(msgs(1, "a"), {"n": 1})
    sp.append(msgs(1, "b"), {"n": 2})
    (seg,) = tmp_path.glob("seg-*.log")
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # the second append was interrupted by a kill
    again = Spool(tmp_path, 10**6)
    assert values(again) == ["a0"] and again.last_cursor == {"n": 1}
    again.append(msgs(1, "c"))
    assert values(Spool(tmp_path, 10**6)) == ["a0", "c0"]
    raw = bytearray(seg.read_bytes())
    raw[20] ^= 0xFF  # inside the first, committed record
    seg.write_bytes(bytes(raw))
    sp2 = Spool(tmp_path, 10**6)  # the last segment: repaired from the bad record on
    assert values(sp2) == []
    # a bad record in a segment that is not the last one is corruption
    d2 = tmp_path / "two"
    sp3 = Spool(d2, 10**6, segment_bytes=50)
    sp3.append(msgs(1, "x"))
    sp3.append(msgs(1, "y"))
    first = sorted(d2.glob("seg-*.log"))[0]
    b = bytearray(first.read_bytes())
    b[15] ^= 0xFF
    first.write_bytes(bytes(b))
    with pytest.raises(SpoolCorrupt):
        list(Spool(d2, 10**6, segment_bytes=50).pending())


def test_a_full_spool_says_so_and_writes_nothing(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 300)
    sp.append(msgs(2))
    before = sp.pending_bytes()
    with pytest.raises(SpoolFull, match="GPUMETER_SPOOL_MAX_BYTES"):
        sp.append(msgs(20))
    assert sp.pending_bytes() == before


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.is_done = True
        self.error = error

    def get(self, timeout: float = 0) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    """Accepts sends while ``up``; records what Kafka acknowledged."""

    def __init__(self, broker: dict[str, Any]) -> None:
        self.broker = broker

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        if not self.broker["up"]:
            return FakeFuture(ConnectionError("broker down"))
        self.broker["log"].append((topic, key, json.loads(value)["i"]))
        return FakeFuture(None)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float = 0) -> None:
        pass


def outlet(path: Path, broker: dict[str, Any]) -> SpooledOutlet:
    return SpooledOutlet(
        path, Spool(path / "spool", 10**6), {"usage": "gpu.usage.v1"}, lambda: FakeProducer(broker)
    )


def test_outlet_spools_while_kafka_is_down_and_drains_in_order(tmp_path: Path) -> None:
    broker: dict[str, Any] = {"up": False, "log": []}
    out = outlet(tmp_path, broker)
    out.commit(msgs(2, "a"), {"sources": {}})
    rep = out.drain(1)
    assert rep.error and "broker down" in rep.error and rep.pending_bytes > 0
    out.commit(msgs(1, "b"), {"sources": {}})
    broker["up"] = True
    rep = out.drain(5)
    assert rep.error is None and rep.pending_bytes == 0 and rep.sent_messages == 3
    assert [v for _, _, v in broker["log"]] == ["a0", "a1", "b0"]
    out.close()


def test_recover_takes_the_newest_cursor(tmp_path: Path) -> None:
    broker: dict[str, Any] = {"up": True, "log": []}
    out = outlet(tmp_path, broker)
    out.commit(msgs(1), {"sources": {"x": 1}})
    out.commit([], {"sources": {"x": 2}})  # nothing to send: only the cursor file moves
    with pytest.raises(StateLocked):
        outlet(tmp_path, broker)  # one process per state directory
    out.close()
    again = outlet(tmp_path, broker)
    assert again.recover() == {"sources": {"x": 2}, "commit": 2}
    # killed between the spool append and the cursor file: the spool's cursor is newer
    again.spool.append(msgs(1), {"sources": {"x": 3}, "commit": 3})
    again.close()
    third = outlet(tmp_path, broker)
    assert third.recover() == {"sources": {"x": 3}, "commit": 3}
    third.close()
