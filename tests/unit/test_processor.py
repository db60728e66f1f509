"""The batch processor with its real sink on a current ClickHouse engine in-process (chdb):
dead letters are delivered before the batch is handed back, ClickHouse receives absolute
values through the real row builder, and a replayed batch adds nothing. Only the Faust tables
are a hand-written stand-in."""

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
from pipeline.domain.events import DedupeKey
from pipeline.domain.usage import HourlyKey
from pipeline.worker.processor import BatchProcessor, Message
from pipeline.worker.sink import ClickHouseSink

pytestmark = pytest.mark.chdb

T = datetime(2026, 10, 1, 6, 10, tzinfo=UTC)


class Tables:
    def __init__(self) -> None:
        self.seen: dict[DedupeKey, int] = {}
        self.aggs: dict[HourlyKey, Agg] = {}
        self.flushes = 0

    def bind(self, msg: Message) -> None:
        pass

    def load(self, key: HourlyKey) -> Agg:
        a = self.aggs.get(key)
        return Agg(*a.to_list()) if a else Agg()

    def store(self, key: HourlyKey, agg: Agg) -> None:
        self.aggs[key] = agg

    def flush(self) -> None:
        self.flushes += 1


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


def msg(offset: int, events: Any, key: bytes = b"acme-ai") -> Message:
    raw = events if isinstance(events, bytes) else json.dumps(events).encode()
    return Message("usage", 0, offset, key, raw, T)


def test_batch_dead_letters_then_sink_then_replay_adds_nothing(
    config: Config, tmp_path: Path
) -> None:
    log: list[str] = []
    dead: list[tuple[bytes | None, dict[str, Any]]] = []

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        log.append("dlq")
        dead.append((key, json.loads(value)))

    tables, sink = Tables(), Sink(log, tmp_path / "chdb")
    proc = BatchProcessor(
        config.reference,
        tables,
        sink,
        send_dead_letter,  # type: ignore[arg-type]
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
    assert tables.flushes == 1

    before = dict(sink.hourly)
    asyncio.run(proc.process(batch[:1]))  # Kafka redelivers offset 0 after a crash
    assert sink.hourly == before
    assert proc.stats.replayed == 2
