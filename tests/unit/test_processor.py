"""The batch processor with its real sink on a current ClickHouse engine in-process (chdb):
dead letters are delivered before the batch is handed back, ClickHouse receives absolute
values through the real row builder, and a replayed batch adds nothing. The worker's table
tables are the real ones (``in_memory_tables``: ``StateTables`` over ``PartitionedStore``s);
the dedupe memory's horizon recalls old identities from the same ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, migrate
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.hours import to_us
from pipeline.domain.usage import HourlyKey
from pipeline.worker.processor import BatchProcessor, Message
from pipeline.worker.sink import ClickHouseSink
from pipeline.worker.tables import StateTables, in_memory_tables

pytestmark = pytest.mark.chdb

T = datetime(2026, 10, 1, 6, 10, tzinfo=UTC)


class Sink(ClickHouseSink):
    """The real sink, noting when it flushes."""

    def __init__(self, log: list[str], path: Path) -> None:
        ex = ChdbExecutor(path, "gpumeter_processor")
        migrate(ex)
        super().__init__(ex)
        self.log = log

    async def flush(self, raw: Any, dirty: dict[HourlyKey, Agg], now: datetime) -> None:
        self.log.append("sink")
        await super().flush(raw, dirty, now)

    @property
    def hourly(self) -> dict[tuple[Any, ...], int]:
        rows = self.ex.execute(
            "SELECT tenant_id, hour, project_id, cluster, usage_us FROM usage_hourly FINAL"
        )
        return {r[:4]: int(r[4]) for r in rows}

    @property
    def raw(self) -> int:
        return int(self.ex.execute("SELECT count() FROM usage_raw FINAL")[0][0])


def event(i: int, tenant: str = "acme-ai", **data: Any) -> dict[str, Any]:
    d = {
        "tenant_id": tenant,
        "cluster": "c",
        "region": "us-east-1",
        "provider": "northwind-cloud",
        "node": "n",
        "gpu_uuid": f"g{i}",
        "gpu_model": "H100",
        "start": "2026-10-01T05:55:00Z",
        "end": "2026-10-01T06:05:00Z",
        **data,
    }
    return {"specversion": "1.0", "id": f"e{i}", "source": "//n", "type": "gpu.usage.v1", "data": d}


def msg(offset: int, events: Any, key: bytes = b"acme-ai", at: datetime = T) -> Message:
    raw = events if isinstance(events, bytes) else json.dumps(events).encode()
    return Message("usage", 0, offset, key, raw, at)


def test_batch_dead_letters_then_sink_then_replay_adds_nothing(
    config: Config, tmp_path: Path
) -> None:
    log: list[str] = []
    dead: list[tuple[bytes | None, dict[str, Any]]] = []

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        log.append("dlq")
        dead.append((key, json.loads(value)))

    tables, stores = in_memory_tables()
    seen, sink = stores["seen"], Sink(log, tmp_path / "chdb")
    proc = BatchProcessor(
        config.reference,
        tables,
        sink,
        send_dead_letter,
        lambda: T,
    )
    batch = [
        msg(0, [event(0), event(1, gpu_model="Z9")]),
        msg(1, b"{oops"),
        msg(2, [event(2, tenant="team-asr")]),  # keyed acme-ai: wrong partition key
        msg(3, [event(0)]),  # a resend of e0
    ]
    asyncio.run(proc.process(batch))
    assert log == ["dlq", "dlq", "dlq", "sink"]  # dead letters delivered before the sink
    assert [d["reason"] for _, d in dead] == ["unknown_gpu_model", "malformed_json", "key_mismatch"]
    assert base64.b64decode(dead[1][1]["value_b64"]) == b"{oops"
    assert (dead[1][1]["topic"], dead[1][1]["partition"], dead[1][1]["offset"]) == ("usage", 0, 1)
    assert proc.stats.duplicates == 1 and proc.stats.samples == 1
    assert sorted(sink.hourly.values()) == [300_000_000, 300_000_000]  # 5 min each side of 06:00
    assert len([k for k in seen if k.startswith(b'["acme-ai"')]) == 1  # one bucket: e0's

    before = dict(sink.hourly)
    asyncio.run(proc.process(batch[:1]))  # Kafka redelivers offset 0 after a crash
    assert sink.hourly == before
    assert proc.stats.replayed == 2


def test_copies_older_than_the_horizon_are_recalled_from_clickhouse(
    config: Config, tmp_path: Path
) -> None:
    """Horizon 2 h: once the partition's records reach 11:10, the floor is 09:00 and e0's
    bucket (05:55) is dropped from memory; a copy of e0 is then found in ClickHouse at another
    position and skipped, a replay of e0's own message is not a duplicate, a never-seen event
    of 05:55 is counted, and two copies of one in the same batch count once."""
    log: list[str] = []
    later = datetime(2026, 10, 1, 11, 10, tzinfo=UTC)
    clock = [T]

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError(value)

    tables, stores = in_memory_tables()
    seen, sink = stores["seen"], Sink(log, tmp_path / "chdb")
    proc = BatchProcessor(
        config.reference, tables, sink, send_dead_letter, lambda: clock[0], horizon_s=7200
    )
    first = msg(0, [event(0)])
    asyncio.run(proc.process([first]))
    counted = dict(sink.hourly)
    buckets = [k for k in seen if k.startswith(b'["acme-ai"')]
    four = to_us(datetime(2026, 10, 1, 4, tzinfo=UTC))  # 06:10 - 2 h, to the hour
    assert len(buckets) == 1 and seen[StateTables.floor_bytes(0)] == b"%d" % four

    clock[0] = later
    eleven = event(1, start="2026-10-01T11:00:00Z", end="2026-10-01T11:05:00Z")
    asyncio.run(proc.process([msg(1, [eleven], at=later)]))
    assert buckets[0] not in seen  # e0's bucket dropped: below the floor
    assert seen[StateTables.floor_bytes(0)] == b"%d" % to_us(datetime(2026, 10, 1, 9, tzinfo=UTC))
    after_eleven = dict(sink.hourly)

    asyncio.run(proc.process([msg(2, [event(0)], at=later)]))  # a copy of e0, past the horizon
    assert proc.stats.duplicates == 1 and sink.recalled == 1
    assert sink.hourly == after_eleven

    asyncio.run(proc.process([first]))  # offset 0 redelivered: found at its own position
    assert proc.stats.duplicates == 1 and sink.hourly == after_eleven

    new_old = event(9, gpu_uuid="g9")  # never seen, 05:55-06:05: counted, once
    asyncio.run(proc.process([msg(3, [new_old], at=later), msg(4, [new_old], at=later)]))
    assert proc.stats.duplicates == 2
    grown = {k: v - after_eleven.get(k, 0) for k, v in sink.hourly.items()}
    assert sorted(v for v in grown.values() if v) == [300_000_000, 300_000_000]
    assert all(sink.hourly[k] >= v for k, v in counted.items())
    assert len([k for k in seen if k.startswith(b'["acme-ai"')]) == 1  # 11:00's; none older


def test_a_message_outside_its_keys_partition_is_dead_lettered(
    config: Config, tmp_path: Path
) -> None:
    """With four partitions, ``acme-ai`` belongs where Kafka's default partitioner (murmur2)
    puts it; the same event sent to another partition (librdkafka's CRC32 default would)
    is refused as ``wrong_partition``, so one tenant is never split over two workers."""
    from kafka.partitioner.default import murmur2

    home = (murmur2(b"acme-ai") & 0x7FFFFFFF) % 4
    dead: list[dict[str, Any]] = []

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        dead.append(json.loads(value))

    sink = Sink([], tmp_path / "chdb")
    proc = BatchProcessor(
        config.reference, in_memory_tables()[0], sink, send_dead_letter, lambda: T, partitions=4
    )
    elsewhere = Message("usage", (home + 1) % 4, 0, b"acme-ai", json.dumps([event(5)]).encode(), T)
    at_home = Message("usage", home, 0, b"acme-ai", json.dumps([event(6)]).encode(), T)
    asyncio.run(proc.process([elsewhere, at_home]))
    assert [(d["reason"], d["partition"]) for d in dead] == [("wrong_partition", (home + 1) % 4)]
    assert f"belongs in partition {home}" in dead[0]["detail"]
    assert proc.stats.samples == 1 and sorted(sink.hourly.values()) == [300_000_000] * 2


def test_aggregates_of_hours_below_the_floor_are_dropped_and_read_back(
    config: Config, tmp_path: Path
) -> None:
    """Horizon 2 h: once the partition's records reach 11:10 the floor is 09:00, and the
    aggregates of 05:00 and 06:00 leave the worker's state (a tombstone each); a new event for
    06:00 then adds to the value ClickHouse holds (read back, nothing lost), and a replay of
    that message after a crash adds nothing."""
    later = datetime(2026, 10, 1, 11, 10, tzinfo=UTC)
    clock = [T]

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError(value)

    tables, stores = in_memory_tables()
    hourly, sink = stores["hourly"], Sink([], tmp_path / "chdb")
    proc = BatchProcessor(
        config.reference, tables, sink, send_dead_letter, lambda: clock[0], horizon_s=7200
    )
    asyncio.run(proc.process([msg(0, [event(0), event(1, gpu_uuid="g1")])]))
    hourly.bind(0)
    assert len(hourly) == 2  # 05:00 and 06:00 of acme-ai
    first = dict(sink.hourly)

    clock[0] = later
    eleven = event(2, start="2026-10-01T11:00:00Z", end="2026-10-01T11:05:00Z")
    asyncio.run(proc.process([msg(1, [eleven], at=later)]))
    assert [json.loads(k)[1] for k in hourly] == [to_us(later) // 10**6 // 3600 * 3600]
    seven = to_us(datetime(2026, 10, 1, 7, tzinfo=UTC)) // 10**6
    old = [v for k, v in hourly.changes()[0].items() if json.loads(k)[1] < seven]
    assert old == [None, None]  # the two old aggregates go to the changelog as tombstones
    assert tables.hourly_dropped == 2

    late = event(3, gpu_uuid="g3", start="2026-10-01T06:01:00Z", end="2026-10-01T06:03:00Z")
    asyncio.run(proc.process([msg(2, [late], at=later)]))
    assert sink.recalled_hourly == 1
    six = next(k for k in first if k[1].hour == 6)
    assert sink.hourly[six] == first[six] + 120_000_000  # read back, then added to
    before = dict(sink.hourly)
    asyncio.run(proc.process([msg(2, [late], at=later)]))  # redelivered after a crash
    assert sink.hourly == before


def test_the_hour_just_below_the_floor_is_read_back_too(config: Config, tmp_path: Path) -> None:
    """A sample starting at 08:56 when the floor is 09:00: its hour (08:00) was dropped, so
    its aggregate comes back from ClickHouse, however close the sample is to the floor."""
    clock = [datetime(2026, 10, 1, 9, 0, tzinfo=UTC)]

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        raise AssertionError(value)

    tables, _ = in_memory_tables()
    sink = Sink([], tmp_path / "chdb")
    proc = BatchProcessor(
        config.reference, tables, sink, send_dead_letter, lambda: clock[0], horizon_s=7200
    )
    at = clock[0]
    eight = event(0, start="2026-10-01T08:50:00Z", end="2026-10-01T08:55:00Z")
    asyncio.run(proc.process([msg(0, [eight], at=at)]))
    clock[0] = datetime(2026, 10, 1, 11, 10, tzinfo=UTC)
    eleven = event(1, start="2026-10-01T11:00:00Z", end="2026-10-01T11:05:00Z")
    asyncio.run(proc.process([msg(1, [eleven], at=clock[0])]))
    assert tables.hourly_dropped == 1  # 08:00, below the floor of 09:00
    late = event(2, gpu_uuid="g2", start="2026-10-01T08:56:00Z", end="2026-10-01T08:58:00Z")
    asyncio.run(proc.process([msg(2, [late], at=clock[0])]))
    eight_key = next(k for k in sink.hourly if k[1].hour == 8)
    assert sink.hourly[eight_key] == 300_000_000 + 120_000_000
