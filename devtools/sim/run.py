"""``gpumeter simulate``: publish a simulated period of fleet usage to Kafka, and write the
ground truth beside it."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from devtools.sim.fleet import all_reports, build_fleet, report_events, schedule_jobs
from devtools.sim.truth import ground_truth, write_truth
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import Settings

BAD_EVENTS: list[tuple[str, Any]] = [  # (expected reason, how to corrupt a good event)
    ("malformed_json", None),
    ("unknown_gpu_model", ("gpu_model", "Z999")),
    ("non_positive_interval", ("end", "start")),
    ("unknown_tenant", ("tenant_id", "nobody-inc")),
]


@dataclass
class SimResult:
    period: str
    nodes: int
    jobs: int
    messages: int
    samples: int
    bad_messages: int
    truth_path: Path
    seconds: float
    duplicates: int = 0  # messages sent twice (same bytes, as a producer retry would)
    late_messages: int = 0  # reports held back and sent after their hour's grace period
    late_samples: int = 0


def plan(
    config: Config, period: Period, nodes: int, interval_s: int, seed: int
) -> tuple[list[Any], list[Any]]:
    rng = random.Random(seed)
    tenants = sorted(t.id for t in config.reference.tenants.values() if t.active)
    fleet = build_fleet(config.reference, nodes, rng, interval_s)
    jobs = {n.name: schedule_jobs(n, tenants, period.start, period.end, rng) for n in fleet}
    return fleet, [jobs[n.name] for n in fleet]


def bad_message(rng: random.Random, good: dict[str, Any], i: int) -> tuple[str, bytes]:
    reason, change = BAD_EVENTS[i % len(BAD_EVENTS)]
    if change is None:
        return reason, b'{"specversion": "1.0", "id": ' + str(i).encode() + b', "data": {'
    ev = json.loads(json.dumps(good))
    ev["id"] = f"bad-{i}-{rng.random()}"
    field, value = change
    ev["data"][field] = ev["data"][value] if value in ev["data"] else value
    return reason, json.dumps(ev).encode()


def simulate(
    config: Config,
    producer: Any,
    topic: str,
    period: Period,
    out_dir: Path,
    nodes: int = 40,
    interval_s: int = 300,
    seed: int = 42,
    bad_every: int = 0,
    progress: bool = True,
    clock: Any = time.monotonic,
    duplicate_rate: float = 0.0,
    late_every: int = 0,
    late_delay_s: int = 3 * 3600,
) -> SimResult:
    """Publish every collector report of the period, in simulated-time order.

    Each record's Kafka timestamp is its simulated send time (the end of its collection
    window), so the worker judges lateness as it would live. ``late_every``: every Nth report
    is held back and sent ``late_delay_s`` later; ``duplicate_rate``: that share of messages is
    sent a second time at the end (a producer resend)."""
    started = clock()
    fleet, job_lists = plan(config, period, nodes, interval_s, seed)
    by_node = {n.name: jl for n, jl in zip(fleet, job_lists, strict=True)}
    all_jobs = [j for jl in job_lists for j in jl]
    truth = ground_truth(all_jobs)
    truth_path = out_dir / str(period) / "ground_truth.json"
    meta = {
        "period": str(period),
        "nodes": nodes,
        "interval_s": interval_s,
        "seed": seed,
        "generated_at": datetime.now().astimezone().isoformat(),
    }
    write_truth(truth_path, truth, meta)

    reports = list(all_reports(fleet, by_node, period.start, period.end, interval_s))
    rng = random.Random(seed + 1)
    messages = samples = bad = 0
    failures: list[BaseException] = []
    held: list[tuple[bytes, bytes, int]] = []  # (key, value, timestamp ms) sent at the end
    dups = late_msgs = late_samples = 0

    def send(key: bytes, value: bytes, ts_ms: int) -> None:
        producer.send(topic, key=key, value=value, timestamp_ms=ts_ms).add_errback(failures.append)

    bar = _progress(progress)
    with bar:
        task = bar.add_task(f"simulate {period}", total=len(reports))
        for i, r in enumerate(reports):
            events = report_events(r)
            key = r.job.tenant_id.encode()
            value = json.dumps(events, separators=(",", ":")).encode()
            ts_ms = r.time_us // 1000
            messages += 1
            samples += len(events)
            if late_every and i % late_every == late_every // 2:
                held.append((key, value, ts_ms + late_delay_s * 1000))
                late_msgs += 1
                late_samples += len(events)
            else:
                send(key, value, ts_ms)
            if duplicate_rate and rng.random() < duplicate_rate:
                held.append((key, value, ts_ms))
                dups += 1
            if bad_every and i % bad_every == bad_every - 1:
                _reason, payload = bad_message(rng, events[0], bad)
                send(key, payload, ts_ms)
                bad += 1
            if i % 2000 == 0:
                bar.update(
                    task, completed=i, description=f"simulate {period} ({samples:,} samples)"
                )
        rng.shuffle(held)
        for key, value, ts_ms in held:
            send(key, value, ts_ms)
        producer.flush()
        bar.update(task, completed=len(reports))
    if failures:
        raise RuntimeError(
            f"{len(failures)} messages were not acknowledged by Kafka (first: {failures[0]!r}); "
            "the ground truth no longer matches what was published: run the simulation again"
        )
    return SimResult(
        str(period),
        nodes,
        len(all_jobs),
        messages,
        samples,
        bad,
        truth_path,
        clock() - started,
        dups,
        late_msgs,
        late_samples,
    )


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def publish(settings: Settings, config: Config, period: Period, **kwargs: Any) -> SimResult:
    """Create the usage and dead-letter topics if needed and publish a simulated period to
    ``settings.usage_topic`` (see :func:`simulate` for the options)."""
    from pipeline.adapters.kafka import ensure_topics, make_producer

    ensure_topics(
        settings.kafka_bootstrap,
        {settings.usage_topic: settings.topic_partitions, settings.dlq_topic: 1},
    )
    producer = make_producer(settings.kafka_bootstrap)
    try:
        return simulate(config, producer, settings.usage_topic, period, settings.out_dir, **kwargs)
    finally:
        producer.close()
