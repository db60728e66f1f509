"""The bench's measurements: the raw consume limit, a worker drained from its first commit to its
last (one or several workers), the naive baseline, freshness, memory and billing."""

from __future__ import annotations

import functools
import json
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.sim.run import plan
from devtools.supervise import start_worker, stop_worker
from pipeline.adapters.kafka import QUICK_CLIENT, make_producer, partition_lags
from pipeline.adapters.store import Store
from pipeline.bootstrap import billing_run, executor
from pipeline.config import Config
from pipeline.domain.aggregate import INDEX_BITS, Agg
from pipeline.domain.hours import HOUR_US
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, RAW_COLUMNS, hourly_row, raw_row


def free_port() -> int:
    """A TCP port nothing listens on now: each bench worker serves its metrics on its own, so
    the stage figures are never read from another worker on this host (a test's, say)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status_mib(pid: int, key: str) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process is gone
        return 0.0
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    return _status_mib(pid, "VmHWM:")


def rss_mib(pid: int) -> float:
    """The process's resident memory now (VmRSS)."""
    return _status_mib(pid, "VmRSS:")


def raw_consume(settings: Settings) -> tuple[int, float]:
    """Read the whole topic with a plain kafka-python consumer, doing nothing with it."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **QUICK_CLIENT,
    )
    try:
        parts = consumer.partitions_for_topic(settings.usage_topic) or set()
        tps = [TopicPartition(settings.usage_topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        total = sum(ends.values())
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n = 0
        t0 = time.monotonic()
        while n < total:
            for records in consumer.poll(timeout_ms=1000, max_records=100_000).values():
                n += len(records)
        return n, time.monotonic() - t0
    finally:
        consumer.close()


Rows = list[tuple[int, int, int]]  # (partition, committed offset, end offset) of the group
Tick = Callable[[Rows, list[int]], None]  # called each poll with the rows and the worker pids


def committed(rows: Rows) -> int:
    return sum(c for _, c, _ in rows)


@dataclass
class Drained:
    busy_s: float  # from the group's first commit until every offset is committed
    wall_s: float  # from the workers' start until then
    peak_rss_mib: float  # the highest VmHWM of any worker
    end_rss_mib: float  # the workers' VmRSS (summed) when drained


def watch(
    settings: Settings,
    procs: list[subprocess.Popen[bytes]],
    logs: list[Path],
    total: int,
    timeout: float,
    started: float,
    on_tick: Tick | None = None,
) -> Drained:
    """Poll the group of ``settings`` until it committed ``total`` offsets with no lag."""
    first_commit = None
    peak = 0.0
    while True:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited ({proc.returncode}); see {log}")
        peak = max([peak, *(peak_rss_mib(p.pid) for p in procs)])
        try:
            rows = partition_lags(
                settings.kafka_bootstrap, settings.worker_id, settings.usage_topic
            )
        except Exception:  # noqa: BLE001 - poll again
            rows = []
        done = committed(rows)
        lag = sum(max(0, e - c) for _, c, e in rows) if rows else 1
        if done and first_commit is None:
            first_commit = time.monotonic()
        if on_tick:
            on_tick(rows, [p.pid for p in procs])
        if done >= total and lag == 0:
            now = time.monotonic()
            end_rss = sum(rss_mib(p.pid) for p in procs)
            peak = max([peak, *(peak_rss_mib(p.pid) for p in procs)])
            return Drained(now - (first_commit or started), now - started, peak, end_rss)
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"bench workers not drained in {timeout:.0f}s")
        time.sleep(0.25)


def drain(
    settings: Settings,
    log: Path,
    total: int,
    timeout: float,
    on_tick: Tick | None = None,
    stages: dict[str, float] | None = None,
) -> Drained:
    """Run one worker until its group committed ``total`` offsets; fills ``stages`` with the
    worker's seconds per stage (its metrics) when given."""
    proc = start_worker(settings, log)
    started = time.monotonic()
    try:
        drained = watch(settings, [proc], [log], total, timeout, started, on_tick)
        if stages is not None:
            stages.update(stage_seconds(settings))
        return drained
    finally:
        stop_worker(proc)


def stage_seconds(settings: Settings) -> dict[str, float]:
    """Seconds per stage of the worker's batches, read from its Prometheus endpoint."""
    from pipeline.status import scrape

    samples = scrape(f"http://127.0.0.1:{settings.metrics_port}/metrics")
    prefix = "gpumeter_stage_seconds_total{stage="
    return {k[len(prefix) : -1]: v for k, v in samples.items() if k.startswith(prefix)}


def naive_inserts(settings: Settings, config: Config, seconds: float) -> float:
    """One INSERT per sample (the raw row), no aggregation: samples/s over ``seconds``."""
    ex = executor(settings)
    fleet, jobs = plan(config, Period.parse("2026-10"), 2, 600, 1)
    from devtools.sim.fleet import all_reports, report_events
    from pipeline.domain.events import decode_message

    now = datetime.now(UTC)
    n = 0
    t0 = time.monotonic()
    for r in all_reports(
        fleet,
        {n_.name: j for n_, j in zip(fleet, jobs, strict=True)},
        Period.parse("2026-10").start,
        Period.parse("2026-10").end,
        600,
    ):
        samples, _ = decode_message(json.dumps(report_events(r)).encode(), config.reference, now)
        for s in samples:
            ex.insert("usage_raw", RAW_COLUMNS, [raw_row(s, 0, n, now)])
            n += 1
        if time.monotonic() - t0 > seconds:
            break
    rate = n / (time.monotonic() - t0)
    ex.close()
    return rate


def settle(settings: Settings, quiet_s: float = 3.0, timeout: float = 180.0) -> float:
    """Wait until ClickHouse runs no merge for ``quiet_s`` (the earlier steps' parts, above all
    the naive step's one part per INSERT, are merged in the background for minutes and take a
    core from whatever is measured next); returns the seconds waited."""
    ex = executor(settings)
    started = quiet_since = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            (running,) = ex.execute("SELECT count() FROM system.merges")[0]
            now = time.monotonic()
            if running:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                break
            time.sleep(0.5)
    finally:
        ex.close()
    return time.monotonic() - started


PROBE_NODES = 200  # the freshness step's fleet: one source (collector) per node
PROBE_GPUS = 8  # samples per message: one per GPU, as a node's report


def freshness(
    settings: Settings, config: Config, rate: float, seconds: float, log: Path
) -> tuple[list[float], float]:
    """Offer ``rate`` samples/s of live usage to a running worker; for each message, the time
    from produce until its samples are queryable in ClickHouse's hourly aggregates.

    The stream has the bench month's shape, so that half its measured maximum is half the
    worker's load: nodes reporting one sample per GPU (a source each, reused), into a few hourly
    keys. Each message's arrival is read from the aggregate itself: its version is the Kafka
    offset of the last message folded into it (``offset << 20 | index``), and every probe
    message goes to one partition (one tenant key), so a message is queryable once the
    key's highest version reaches its offset."""
    tenant = sorted(t for t, v in config.reference.tenants.items() if v.kind == "external")[0]
    msgs_per_s = max(1.0, rate / PROBE_GPUS)
    proc = start_worker(settings, log)
    producer = make_producer(settings.kafka_bootstrap, linger_ms=0)
    sent: list[tuple[Any, float]] = []  # (send future, monotonic time sent)
    seen: list[tuple[float, int]] = []  # (monotonic time, highest offset queryable)
    ex = executor(settings)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() or time.monotonic() - stop_at[0] < 30:
            ((top, rows),) = ex.execute(
                "SELECT max(version), count() FROM usage_hourly WHERE tenant_id = %(t)s "
                "AND project_id = 'probe'",
                {"t": tenant},
            )
            seen.append((time.monotonic(), (int(top) >> INDEX_BITS) if rows else -1))
            if stop.is_set() and sent and seen[-1][1] >= last_offset[0] >= 0:
                return
            time.sleep(0.05)

    stop_at = [float("inf")]
    last_offset = [-1]
    try:
        time.sleep(8)  # worker start and partition assignment, not part of freshness
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        t_start = time.monotonic()
        i = 0
        while time.monotonic() - t_start < seconds:
            target = t_start + i / msgs_per_s
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            end = datetime.now(UTC).replace(microsecond=0)
            node = i % PROBE_NODES
            events = [
                {
                    "specversion": "1.0",
                    "id": f"probe-{i}-{g}",
                    "source": f"//bench/probe/n{node}",
                    "type": "gpu.usage.v1",
                    "data": {
                        "tenant_id": tenant,
                        "project_id": "probe",
                        "cluster": "bench",
                        "region": "eu-west-1",
                        "provider": "own-dc",
                        "node": f"n{node}",
                        "gpu_uuid": f"GPU-{node}-{g}",
                        "gpu_model": "H100",
                        "gpu_count": 1,
                        "start": (end - timedelta(seconds=10)).isoformat(),
                        "end": end.isoformat(),
                    },
                }
                for g in range(PROBE_GPUS)
            ]
            fut = producer.send(
                settings.usage_topic, key=tenant.encode(), value=json.dumps(events).encode()
            )
            sent.append((fut, time.monotonic()))
            i += 1
        producer.flush()
        offsets = [(fut.get(timeout=30).offset, t) for fut, t in sent]
        last_offset[0] = max(o for o, _ in offsets)
        stop_at[0] = time.monotonic()
        stop.set()
        poller.join(timeout=40)
    finally:
        producer.close()
        stop_worker(proc)
        ex.close()
    return arrival_latencies(offsets, seen), msgs_per_s * PROBE_GPUS


def arrival_latencies(sent: list[tuple[int, float]], seen: list[tuple[float, int]]) -> list[float]:
    """For each ``(offset, time sent)``: the first time in ``seen`` (``(time, highest offset
    queryable)``, in time order) at which the offset was reached, minus the time sent. An
    offset never reached has no latency."""
    out = []
    j = 0
    for offset, t_sent in sorted(sent):
        while j < len(seen) and seen[j][1] < offset:
            j += 1
        if j == len(seen):
            break
        out.append(max(0.0, seen[j][0] - t_sent))
    return out


def memory_keys(settings: Settings, config: Config, keys: int, log: Path) -> tuple[float, int]:
    """Peak RSS of a worker whose state holds ``keys`` distinct hourly keys."""
    tenants = sorted(config.reference.tenants)
    producer = make_producer(settings.kafka_bootstrap)
    base = datetime(2026, 10, 1, tzinfo=UTC)
    per_msg = 8
    for m in range(keys // per_msg):
        tenant = tenants[m % len(tenants)]
        events = []
        for g in range(per_msg):
            k = m * per_msg + g
            hour = base + timedelta(hours=(k // 7) % 720)
            events.append(
                {
                    "specversion": "1.0",
                    "id": f"mem-{k}",
                    "source": "//bench/mem",
                    "type": "gpu.usage.v1",
                    "data": {
                        "tenant_id": tenant,
                        "project_id": f"p{k}",
                        "cluster": "bench",
                        "region": "eu-west-1",
                        "provider": "own-dc",
                        "node": "n",
                        "gpu_uuid": f"GPU-{g}",
                        "gpu_model": "H100",
                        "gpu_count": 1,
                        "start": hour.isoformat(),
                        "end": (hour + timedelta(seconds=60)).isoformat(),
                    },
                }
            )
        producer.send(
            settings.usage_topic,
            key=tenant.encode(),
            value=json.dumps(events).encode(),
            timestamp_ms=int((hour + timedelta(minutes=1)).timestamp() * 1000),
        )
    producer.flush()
    producer.close()
    total = keys // per_msg
    peak = drain(settings, log, total, timeout=7200).peak_rss_mib
    n = Store(executor(settings)).ex.execute("SELECT count() FROM usage_hourly FINAL")[0][0]
    return peak, int(n)


def billing_month(
    settings: Settings,
    config: Config,
    tenants: int,
    root: Path,
    extra: dict[str, Any] | None = None,
) -> float:
    """Bill a month for ``tenants`` tenants (hourly usage of several GPU models each), each
    invoice through its whole lifecycle; returns the seconds. Then bill the next month the same
    way, with the first one closed (its invoices and chargebacks are history the second run
    must not pay for again): ``billing_second_month_s`` and its ratio to the first go to
    ``extra``."""
    cfg_dir = root / "bench-config"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    for f in ("gpus.yaml", "partners.yaml", "rate_cards.yaml"):
        shutil.copy(settings.config_dir / f, cfg_dir / f)
    lines = ["tenants:"]
    for i in range(tenants):
        kind = "internal" if i % 5 == 4 else "external"
        more = (
            f", cost_centre: bench/team{i}, rate_card: internal-transfer"
            if kind == "internal"
            else ", rate_card: on-demand-usd"
        )
        lines.append(
            f"  - {{id: bench-t{i:04d}, name: Bench {i}, kind: {kind}, currency: USD{more}}}"
        )
    (cfg_dir / "tenants.yaml").write_text("\n".join(lines) + "\n")
    bench_config = Config.load(cfg_dir)
    ex = executor(settings)
    rng = random.Random(1)
    now = datetime.now(UTC)
    models = [("H100", ""), ("A100", "3g.40gb"), ("L40S", "")]
    seconds = []
    for period in (Period.parse("2026-10"), Period.parse("2026-11")):
        rows = []
        h0 = int(period.start.timestamp())
        hours = int((period.end - period.start).total_seconds()) // 3600
        for i in range(tenants):
            for h in range(hours):
                model, mig = models[(i + h) % 3]
                key = HourlyKey(
                    f"bench-t{i:04d}", h0 + h * 3600, "p", model, mig, "eu-west-1", "own-dc", "c1"
                )
                rows.append(hourly_row(key, Agg(rng.randrange(1, 8) * HOUR_US, 0, 1, 1), now))
            if len(rows) > 200_000:
                ex.insert("usage_hourly", HOURLY_COLUMNS, rows)
                rows = []
        ex.insert("usage_hourly", HOURLY_COLUMNS, rows)
        closes = period.end + timedelta(hours=settings.draft_grace_h)  # finalized and closed
        clock: Callable[[], datetime] = functools.partial(lambda at: at, closes)
        run = billing_run(
            settings,
            bench_config,
            Store(ex),
            out_root=root / "bill-out",
            clock=clock,
        )
        t0 = time.monotonic()
        report = run.run(period)
        seconds.append(time.monotonic() - t0)
        assert len(report.results) == tenants
        assert {r.status for r in report.results} == {"finalized", "charged_back"}, report.failed
    ex.close()
    if extra is not None:
        extra["billing_second_month_s"] = round(seconds[1], 2)
        extra["billing_second_month_ratio"] = round(seconds[1] / seconds[0], 2)
    return seconds[0]
