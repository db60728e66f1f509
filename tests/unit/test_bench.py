"""The bench's pure parts: the streams it publishes decode as the worker decodes them, the live
stream's day-7 offsets, the workers' assignments read from their logs, the JSON keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from devtools.bench import BenchResult
from devtools.bench.steps import arrival_latencies
from devtools.bench.streams import (
    LIVE_GPUS_PER_NODE,
    LIVE_INTERVAL_S,
    assignment,
    live_records,
    month_records,
)
from pipeline.adapters.kafka import default_partition
from pipeline.config import Config
from pipeline.domain.events import decode_message


def _decode(config: Config, value: bytes, ts_ms: int) -> int:
    arrival = datetime.fromtimestamp(ts_ms / 1000, UTC)
    samples, rejects = decode_message(value, config.reference, arrival)
    assert rejects == []
    return len(samples)


def test_one_sample_messages_hold_the_same_samples_as_report_messages(config: Config) -> None:
    reports = list(month_records(config, 2, seed=5, one_per_message=False))
    singles = list(month_records(config, 2, seed=5, one_per_message=True))
    assert all(json.loads(v)["id"] for _, v, _, _ in singles[:50])  # bare objects, not arrays
    ids = [e["id"] for _, v, _, _ in reports for e in json.loads(v)]
    assert [json.loads(v)["id"] for _, v, _, _ in singles] == ids
    for _, value, ts_ms, _ in singles[:20]:
        assert _decode(config, value, ts_ms) == 1


def test_live_stream_day7_offsets_count_the_records_of_its_first_seven_days(
    config: Config,
) -> None:
    records, day7, messages = live_records(config, nodes=3, partitions=4)
    rows = list(records)
    assert len(rows) == messages == 3 * 31 * 86_400 // LIVE_INTERVAL_S
    end7 = int(datetime(2026, 10, 8, tzinfo=UTC).timestamp() * 1000)
    seen: dict[int, int] = {}
    for key, _, ts_ms, part in rows:
        assert part == default_partition(key, 4)  # where the worker expects its key
        if ts_ms <= end7:
            seen[part] = seen.get(part, 0) + 1
    assert {p: n for p, n in day7.items() if n} == seen
    ids = [e["id"] for _, v, _, _ in rows[:500] for e in json.loads(v)]
    assert len(ids) == len(set(ids)) == 500 * LIVE_GPUS_PER_NODE  # every sample is an identity
    _, value, ts_ms, _ = rows[0]
    assert _decode(config, value, ts_ms) == LIVE_GPUS_PER_NODE


def test_assignment_is_the_last_rebalance_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    assert assignment(log) is None
    log.write_text("[INFO] starting\n")
    assert assignment(log) is None
    log.write_text("[INFO] assigned partitions=0,1,2,3 \n[INFO] assigned partitions=none \n")
    assert assignment(log) == set()
    log.write_text(log.read_text() + "[INFO] assigned partitions=1,3 \n")
    assert assignment(log) == {1, 3}


def test_the_json_keeps_its_keys_and_adds_the_new_figures() -> None:
    doc = BenchResult(
        samples_per_s=100,
        raw_samples_per_s=1000,
        one_sample_samples_per_s=50,
        one_sample_raw_samples_per_s=500,
        two_workers_samples_per_s=150,
        two_workers_raw_samples_per_s=1500,
        rss_day7_mib=200,
        rss_day31_mib=220,
    ).as_json()
    for key in ("samples_per_s", "ratio_raw", "peak_rss_mib", "billing_s", "memory_keys"):
        assert key in doc
    assert doc["one_sample_samples_per_s"] == 50
    assert doc["one_sample_ratio_raw"] == 0.1
    assert doc["two_workers_samples_per_s"] == 150
    assert doc["two_workers_ratio_raw"] == 0.1
    assert doc["two_workers_over_one"] == 1.5
    assert (doc["rss_day7_mib"], doc["rss_day31_mib"], doc["rss_day31_over_day7"]) == (
        200,
        220,
        1.1,
    )
    assert BenchResult().as_json()["rss_day31_over_day7"] is None


def test_a_message_arrives_when_the_highest_queryable_offset_first_reaches_it() -> None:
    sent = [(10, 1.0), (11, 1.1), (12, 1.2), (13, 1.3)]
    seen = [(1.05, -1), (1.5, 11), (1.6, 11), (2.0, 12)]  # 13 never became queryable
    lat = arrival_latencies(sent, seen)
    assert [round(x, 3) for x in lat] == [0.5, 0.4, 0.8]
    # sent in any order, the same answer
    assert arrival_latencies(list(reversed(sent)), seen) == lat
