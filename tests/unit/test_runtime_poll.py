"""The runtime's batch boundaries (step 1 of the write order), with a stand-in for Kafka's
consumer: a batch stops at its message count or, about, at its bytes, and what it leaves is
the next batch's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.settings import Settings
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.runtime import POLL_RECORDS, Runtime


@dataclass
class Record:
    offset: int
    value: bytes


class Consumer:
    """Hands out ``per_poll`` buffered records per poll, as kafka-python does once fetched."""

    def __init__(self, records: list[Record], per_poll: int) -> None:
        self.records = records
        self.per_poll = per_poll
        self.asked: list[int] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict[str, list[Record]]:
        self.asked.append(max_records)
        n = min(self.per_poll, max_records)
        out, self.records = self.records[:n], self.records[n:]
        return {"tp": out} if out else {}

    def assignment(self) -> set[Any]:
        return set()  # no lag known: the window alone closes a batch


def runtime(consumer: Consumer, **settings: Any) -> Runtime:
    rt = Runtime(Settings(sink_batch_seconds=0.05, **settings), None, WorkerMetrics())
    rt.consumer = consumer
    return rt


def test_a_batch_stops_at_about_its_bytes_and_the_rest_is_the_next_batch() -> None:
    records = [Record(i, b"x" * 1000) for i in range(30)]
    rt = runtime(Consumer(records, per_poll=3), sink_batch_bytes=10_000)
    first = rt._poll()
    assert [r.offset for r in first] == list(range(12))  # 12,000 bytes: the poll that passed it
    second = rt._poll()
    assert [r.offset for r in second] == list(range(12, 24))


def test_a_batch_stops_at_its_message_count_and_polls_at_most_poll_records() -> None:
    records = [Record(i, b"{}") for i in range(3 * POLL_RECORDS)]
    consumer = Consumer(records, per_poll=10 * POLL_RECORDS)
    rt = runtime(consumer, sink_batch_samples=POLL_RECORDS + 200)
    batch = rt._poll()
    assert len(batch) == POLL_RECORDS + 200
    assert consumer.asked == [POLL_RECORDS, 200]
