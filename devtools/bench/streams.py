"""Bench steps on other shapes of stream: one sample per Kafka message, two workers sharing a
four-partition topic, and a 31-day live stream for the worker's memory."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.bench.steps import (
    Drained,
    Rows,
    Tick,
    drain,
    free_port,
    rss_mib,
    stage_seconds,
    watch,
)
from devtools.sim.fleet import all_reports, report_events
from devtools.sim.run import plan
from devtools.supervise import start_worker, stop_worker
from pipeline.adapters.kafka import default_partition, ensure_topics, make_producer
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings

PERIOD = "2026-10"
Record = tuple[bytes, bytes, int, int | None]  # key, value, timestamp ms, partition (None: key)


def month_records(config: Config, nodes: int, seed: int, one_per_message: bool) -> Iterator[Record]:
    """The simulator's month (one message per collector report, as ``gpumeter simulate``
    publishes it), or the same samples one bare CloudEvent per message."""
    period = Period.parse(PERIOD)
    fleet, jobs = plan(config, period, nodes, 600, seed)
    by_node = {n.name: j for n, j in zip(fleet, jobs, strict=True)}
    for r in all_reports(fleet, by_node, period.start, period.end, 600):
        key, ts_ms = r.job.tenant_id.encode(), r.time_us // 1000
        events = report_events(r)
        if one_per_message:
            for ev in events:
                yield key, json.dumps(ev, separators=(",", ":")).encode(), ts_ms, None
        else:
            yield key, json.dumps(events, separators=(",", ":")).encode(), ts_ms, None


def send_all(settings: Settings, records: Iterator[Record] | list[Record]) -> tuple[int, float]:
    """Produce the records to the usage topic; (messages, seconds). Raises if any send
    failed."""
    producer = make_producer(settings.kafka_bootstrap, linger_ms=50)
    failures: list[BaseException] = []
    n = 0
    t0 = time.monotonic()
    try:
        for key, value, ts_ms, part in records:
            producer.send(
                settings.usage_topic, key=key, value=value, timestamp_ms=ts_ms, partition=part
            ).add_errback(failures.append)
            n += 1
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} bench messages not acknowledged: {failures[0]!r}")
    return n, time.monotonic() - t0


def one_sample_topic(settings: Settings, config: Config, nodes: int) -> int:
    """Publish a simulated month of ``nodes`` collectors, one sample per message; returns the
    samples (= messages)."""
    ensure_topics(
        settings.kafka_bootstrap,
        {settings.usage_topic: settings.topic_partitions, settings.dlq_topic: 1},
    )
    n, _ = send_all(settings, month_records(config, nodes, seed=98, one_per_message=True))
    return n


def assignment(log: Path) -> set[int] | None:
    """The partitions of the worker's latest ``assigned partitions=`` log line (None: no line
    yet)."""
    if not log.exists():
        return None
    lines = [ln for ln in log.read_text().splitlines() if "assigned partitions=" in ln]
    if not lines:
        return None
    parts = lines[-1].rstrip().rsplit("partitions=", 1)[1]
    return set() if parts == "none" else {int(p) for p in parts.split(",")}


@dataclass
class GroupRun:
    drained: Drained
    samples: int
    messages: int
    assigned: list[str]  # each worker's partitions when publishing began
    publish_s: float
    stages: dict[str, float] = field(default_factory=dict)


def two_workers(
    settings: Settings,
    config: Config,
    nodes: int,
    log_dir: Path,
    timeout: float = 3600,
    on_tick: Tick | None = None,
) -> GroupRun:
    """Two workers in one consumer group on a four-partition topic: start them on the empty
    topic, wait until each owns partitions (disjoint, non-empty), then publish a simulated
    month (serialised beforehand, so the producer stays ahead of the workers) and time the
    group from its first commit until every offset is committed."""
    ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: 4, settings.dlq_topic: 1})
    records = list(month_records(config, nodes, seed=97, one_per_message=False))
    samples = sum(len(json.loads(v)) for _, v, _, _ in records)
    workers = [
        settings.model_copy(
            update={
                "worker_data_dir": settings.worker_data_dir / f"w{i}",
                "metrics_port": free_port(),
            }
        )
        for i in range(2)
    ]
    logs = [log_dir / f"worker-{i}.log" for i in range(2)]
    procs = [start_worker(w, log) for w, log in zip(workers, logs, strict=True)]
    started = time.monotonic()
    try:
        while True:
            for proc, log in zip(procs, logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited ({proc.returncode}); see {log}")
            owned = [assignment(log) for log in logs]
            if all(owned) and not set.intersection(*(o or set() for o in owned)):
                break
            if time.monotonic() - started > 180:
                raise TimeoutError(f"the two bench workers never shared the partitions: {owned}")
            time.sleep(0.5)
        sent: list[float] = []
        publisher = threading.Thread(target=lambda: sent.append(send_all(settings, records)[1]))
        publisher.start()
        drained = watch(settings, procs, logs, len(records), timeout, started, on_tick)
        publisher.join()
        stages: dict[str, float] = {}
        for w in workers:
            for k, v in stage_seconds(w).items():
                stages[k] = stages.get(k, 0.0) + v
    finally:
        for proc in procs:
            stop_worker(proc)
    shown = [",".join(map(str, sorted(o or ()))) for o in owned]
    return GroupRun(drained, samples, len(records), shown, sent[0] if sent else 0.0, stages)


LIVE_DAYS = 31
LIVE_INTERVAL_S = 300  # each GPU reports every 5 simulated minutes
LIVE_GPUS_PER_NODE = 8  # one message per node and report: a sample per GPU
LIVE_SAMPLES = 2_000_000  # at scale 1.0: distinct dedupe identities (every sample is one)


@dataclass
class LiveRun:
    nodes: int
    samples: int
    messages: int
    rss_day7_mib: float
    day7_reached: float  # the simulated day the worker's commits had reached when sampled
    rss_day31_mib: float
    peak_rss_mib: float
    busy_s: float


def live_records(
    config: Config, nodes: int, partitions: int
) -> tuple[Iterator[Record], dict[int, int], int]:
    """A fixed fleet reporting every ``LIVE_INTERVAL_S`` of simulated time for ``LIVE_DAYS``
    days; each record's timestamp is its simulated arrival (the end of its window), which the
    worker takes as the arrival time. Returns the records, the offset per partition after
    which day 7 is over, and the message count."""
    tenants = sorted(t for t, v in config.reference.tenants.items() if v.kind == "external")
    start = datetime.fromisoformat(f"{PERIOD}-01T00:00:00").replace(tzinfo=UTC)
    windows = LIVE_DAYS * 86_400 // LIVE_INTERVAL_S
    day7 = 7 * 86_400 // LIVE_INTERVAL_S
    # each node's messages are keyed by its tenant and go where Kafka's default partitioner
    # puts that key (the worker dead-letters anything else as wrong_partition)
    home = [default_partition(tenants[i % len(tenants)].encode(), partitions) for i in range(nodes)]
    day7_offsets = {p: day7 * home.count(p) for p in range(partitions)}

    def gen() -> Iterator[Record]:
        for w in range(windows):
            w_start = start + timedelta(seconds=w * LIVE_INTERVAL_S)
            w_end = w_start + timedelta(seconds=LIVE_INTERVAL_S)
            s_iso, e_iso = w_start.isoformat(), w_end.isoformat()
            ts_ms = int(w_end.timestamp() * 1000)
            for i in range(nodes):
                tenant = tenants[i % len(tenants)]
                events: list[dict[str, Any]] = [
                    {
                        "specversion": "1.0",
                        "id": f"live-n{i}-g{g}@{s_iso}",
                        "source": f"//bench/live/n{i}",
                        "type": "gpu.usage.v1",
                        "data": {
                            "tenant_id": tenant,
                            "project_id": f"live-{i}",
                            "cluster": "bench",
                            "region": "eu-west-1",
                            "provider": "own-dc",
                            "node": f"n{i}",
                            "gpu_uuid": f"GPU-n{i}-{g}",
                            "gpu_model": "H100",
                            "gpu_count": 1,
                            "start": s_iso,
                            "end": e_iso,
                        },
                    }
                    for g in range(LIVE_GPUS_PER_NODE)
                ]
                value = json.dumps(events, separators=(",", ":")).encode()
                yield tenant.encode(), value, ts_ms, home[i]

    return gen(), day7_offsets, windows * nodes


def live_stream(
    settings: Settings, config: Config, scale: float, log: Path, timeout: float = 3600
) -> LiveRun:
    """RSS of one worker fed ``LIVE_DAYS`` simulated days at a fixed rate: sampled (VmRSS)
    when its committed offsets have passed every day-7 record of each partition, and when it
    has committed everything (day 31)."""
    per_node = LIVE_DAYS * 86_400 // LIVE_INTERVAL_S * LIVE_GPUS_PER_NODE
    nodes = max(2, round(LIVE_SAMPLES * scale / per_node))
    parts = settings.topic_partitions
    ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: parts, settings.dlq_topic: 1})
    records, day7_offsets, messages = live_records(config, nodes, parts)
    send_all(settings, records)
    day7: list[tuple[float, float]] = []  # (RSS MiB, simulated day reached)

    def tick(rows: Rows, pids: list[int]) -> None:
        if day7 or not rows:
            return
        if all(c >= day7_offsets[p] for p, c, _ in rows):
            done = sum(c for _, c, _ in rows)
            day7.append((rss_mib(pids[0]), LIVE_DAYS * done / messages))

    drained = drain(settings, log, messages, timeout, on_tick=tick)
    rss7, reached = day7[0] if day7 else (0.0, 0.0)
    return LiveRun(
        nodes,
        messages * LIVE_GPUS_PER_NODE,
        messages,
        rss7,
        reached,
        drained.end_rss_mib,
        drained.peak_rss_mib,
        drained.busy_s,
    )
