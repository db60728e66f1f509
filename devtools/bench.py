"""``make bench``: the pipeline's speed, freshness and memory, each against a baseline measured
in the same run on the same machine (ratios hold on a noisy machine; absolute numbers don't).

1. raw limit: a plain kafka-python consumer reading the topic and doing nothing;
2. pipeline: one worker, from its first commit until every hourly aggregate is in ClickHouse;
3. naive: the same samples written one INSERT per sample, no stream aggregation;
4. freshness: p50/p99 of (queryable in ClickHouse - produced) at half the measured maximum;
5. memory: the worker's peak RSS with 1,000,000 distinct hourly keys in its state;
6. billing: one month for 1,000 tenants, Stripe calls to stripe-mock included.

``scale`` multiplies the volumes (1.0: 5,000,000 samples and 1,000,000 keys).
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.sim.run import plan, publish
from devtools.supervise import start_worker, stop_worker
from pipeline.adapters.clickhouse import ident, migrate
from pipeline.adapters.kafka import QUICK_CLIENT, ensure_topics, group_lag, make_producer
from pipeline.adapters.store import Store
from pipeline.bootstrap import billing_run, executor
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.hours import HOUR_US
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.settings import REPO_ROOT, Settings
from pipeline.worker.sink import HOURLY_COLUMNS, RAW_COLUMNS, hourly_row, raw_row

SAMPLES_PER_NODE_MONTH = 20_000  # measured: 201 nodes gave 4.5M samples; this gives >= 5M


@dataclass
class BenchResult:
    samples: int = 0
    messages: int = 0
    raw_messages_per_s: float = 0.0
    raw_samples_per_s: float = 0.0
    samples_per_s: float = 0.0
    naive_samples_per_s: float = 0.0
    p50_freshness_s: float = 0.0
    p99_freshness_s: float = 0.0
    freshness_rate: float = 0.0
    peak_rss_mib: float = 0.0
    memory_keys: int = 0
    billing_s: float = 0.0
    billing_tenants: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "messages": self.messages,
            "raw_messages_per_s": round(self.raw_messages_per_s, 1),
            "raw_samples_per_s": round(self.raw_samples_per_s, 1),
            "samples_per_s": round(self.samples_per_s, 1),
            "ratio_raw": round(self.samples_per_s / self.raw_samples_per_s, 4)
            if self.raw_samples_per_s
            else None,
            "naive_samples_per_s": round(self.naive_samples_per_s, 1),
            "ratio_naive": round(self.samples_per_s / self.naive_samples_per_s, 2)
            if self.naive_samples_per_s
            else None,
            "p50_freshness_s": round(self.p50_freshness_s, 3),
            "p99_freshness_s": round(self.p99_freshness_s, 3),
            "freshness_offered_samples_per_s": round(self.freshness_rate, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "memory_keys": self.memory_keys,
            "billing_s": round(self.billing_s, 2),
            "billing_tenants": self.billing_tenants,
            **self.extra,
        }


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


def drain(
    settings: Settings,
    log: Path,
    total: int,
    timeout: float,
    on_tick: Callable[[int], None] | None = None,
    stages: dict[str, float] | None = None,
) -> tuple[float, float, float]:
    """Run one worker until its group committed ``total`` offsets.
    Returns (seconds from first commit to drained, seconds since start, peak RSS MiB); fills
    ``stages`` with the worker's seconds per stage (its metrics) when given."""
    proc = start_worker(settings, log)
    started = time.monotonic()
    first_commit = None
    peak = 0.0
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited ({proc.returncode}); see {log}")
            peak = max(peak, peak_rss_mib(proc.pid))
            try:
                committed, lag = group_lag(
                    settings.kafka_bootstrap, settings.worker_id, settings.usage_topic
                )
            except Exception:  # noqa: BLE001 - poll again
                committed, lag = 0, 1
            if committed and first_commit is None:
                first_commit = time.monotonic()
            if on_tick:
                on_tick(committed)
            if committed >= total and lag == 0:
                now = time.monotonic()
                if stages is not None:
                    stages.update(stage_seconds(settings))
                return now - (first_commit or started), now - started, peak
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"bench worker not drained in {timeout:.0f}s")
            time.sleep(0.25)
    finally:
        peak = max(peak, peak_rss_mib(proc.pid)) if proc.poll() is None else peak
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


def freshness(
    settings: Settings, config: Config, rate: float, seconds: float, log: Path
) -> tuple[list[float], float]:
    """Offer ``rate`` samples/s of live usage (one new hourly key per message) to a running
    worker; time from produce until the key's row is queryable in ClickHouse."""
    tenant = sorted(t for t, v in config.reference.tenants.items() if v.kind == "external")[0]
    per_msg = 8
    msgs_per_s = max(1.0, rate / per_msg)
    proc = start_worker(settings, log)
    producer = make_producer(settings.kafka_bootstrap, linger_ms=0)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    ex = executor(settings)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set() or len(seen) < len(sent):
            rows = ex.execute(
                "SELECT DISTINCT project_id FROM usage_hourly WHERE tenant_id = %(t)s "
                "AND startsWith(project_id, 'probe-')",
                {"t": tenant},
            )
            t = time.monotonic()
            for (p,) in rows:
                seen.setdefault(p, t)
            if stop.is_set() and time.monotonic() - stop_at[0] > 30:
                return
            time.sleep(0.05)

    stop_at = [0.0]
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
            events = []
            for g in range(per_msg):
                events.append(
                    {
                        "specversion": "1.0",
                        "id": f"probe-{i}-{g}",
                        "source": f"//bench/probe/n{i}",
                        "type": "gpu.usage.v1",
                        "data": {
                            "tenant_id": tenant,
                            "project_id": f"probe-{i}",
                            "cluster": "bench",
                            "region": "eu-west-1",
                            "provider": "own-dc",
                            "node": f"n{i}",
                            "gpu_uuid": f"GPU-{g}",
                            "gpu_model": "H100",
                            "gpu_count": 1,
                            "start": (end - timedelta(seconds=10)).isoformat(),
                            "end": end.isoformat(),
                        },
                    }
                )
            producer.send(
                settings.usage_topic, key=tenant.encode(), value=json.dumps(events).encode()
            )
            sent[f"probe-{i}"] = time.monotonic()
            i += 1
        producer.flush()
        stop.set()
        stop_at[0] = time.monotonic()
        poller.join(timeout=40)
    finally:
        producer.close()
        stop_worker(proc)
        ex.close()
    lat = [seen[p] - sent[p] for p in sent if p in seen]
    return lat, msgs_per_s * per_msg


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
    _, _, peak = drain(settings, log, total, timeout=7200)
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


def run_bench(base: Settings, scale: float, say: Callable[[str], None] = print) -> BenchResult:
    config = Config.load(base.config_dir)
    root = REPO_ROOT / ".local" / "bench"
    name = uuid.uuid4().hex[:8]
    s = base.isolated(f"bench_{name}", root / name)
    res = BenchResult()
    migrate(executor(s))
    nodes = max(2, round(5_000_000 * scale / SAMPLES_PER_NODE_MONTH))
    say(f"[1/6] publishing {nodes} nodes x one month (~{5_000_000 * scale:,.0f} samples)")
    sim = publish(s, config, Period.parse("2026-10"), nodes=nodes, interval_s=600, seed=99)
    res.samples, res.messages = sim.samples, sim.messages
    spm = sim.samples / sim.messages

    say("[2/6] raw limit: plain kafka-python consumer, doing nothing")
    n, secs = raw_consume(s)
    res.raw_messages_per_s, res.raw_samples_per_s = n / secs, n * spm / secs

    say("[3/6] pipeline: one worker until every aggregate is in ClickHouse")
    from rich.progress import Progress

    stages: dict[str, float] = {}
    with Progress() as bar:
        task = bar.add_task("worker: offsets committed", total=sim.messages)
        busy, wall, _ = drain(
            s,
            root / f"worker-{name}.log",
            sim.messages,
            timeout=7200,
            on_tick=lambda c: bar.update(task, completed=c),
            stages=stages,
        )
    res.samples_per_s = sim.samples / busy
    # the rest of the busy time: Kafka fetch, Faust's per-event machinery, changelog, commits
    stages["other"] = max(0.0, busy - sum(stages.values()))
    res.extra["stages"] = {k: round(v, 2) for k, v in stages.items()}
    say("      seconds per stage: " + ", ".join(f"{k}={v:.1f}" for k, v in stages.items()))
    res.extra["pipeline_wall_s"] = round(wall, 1)
    res.extra["pipeline_busy_s"] = round(busy, 1)
    parts = Store(executor(s)).active_parts()
    res.extra["active_parts"] = parts

    say("[4/6] naive baseline: one INSERT per sample")
    naive_s = base.isolated(f"bench_{name}n", root / (name + "n"))
    migrate(executor(naive_s))
    res.naive_samples_per_s = naive_inserts(naive_s, config, seconds=20)

    say("[5/6] freshness at half the measured maximum, then memory with distinct keys")
    fresh_s = base.isolated(f"bench_{name}f", root / (name + "f"))
    migrate(executor(fresh_s))
    ensure_topics(
        s.kafka_bootstrap, {fresh_s.usage_topic: s.topic_partitions, fresh_s.dlq_topic: 1}
    )
    lat, offered = freshness(
        fresh_s,
        config,
        res.samples_per_s / 2,
        60 * min(1.0, scale) + 20,
        root / f"worker-{name}f.log",
    )
    res.freshness_rate = offered
    if lat:
        lat.sort()
        res.p50_freshness_s = statistics.median(lat)
        res.p99_freshness_s = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    res.extra["freshness_probes"] = len(lat)
    mem_s = base.isolated(f"bench_{name}m", root / (name + "m"))
    migrate(executor(mem_s))
    ensure_topics(s.kafka_bootstrap, {mem_s.usage_topic: s.topic_partitions, mem_s.dlq_topic: 1})
    res.peak_rss_mib, res.memory_keys = memory_keys(
        mem_s, config, int(1_000_000 * scale), root / f"worker-{name}m.log"
    )

    say("[6/6] billing one month for 1,000 tenants (stripe-mock)")
    bill_s = base.isolated(f"bench_{name}b", root / (name + "b"))
    migrate(executor(bill_s))
    res.billing_tenants = max(10, int(1000 * min(1.0, scale * 5)))
    res.billing_s = billing_month(bill_s, config, res.billing_tenants, root / name, res.extra)
    return res


def cleanup(base: Settings) -> None:
    """Drop the bench databases and topics (a full run leaves ~1 GB in Kafka otherwise)."""
    from kafka.admin import KafkaAdminClient

    ex = executor(base)
    for (db,) in ex.execute(
        "SELECT name FROM system.databases WHERE startsWith(name, 'gpumeter_bench_')"
    ):
        ex.execute(f"DROP DATABASE IF EXISTS {ident(db)}")
    ex.close()
    admin = KafkaAdminClient(bootstrap_servers=base.kafka_bootstrap)
    try:
        mine = [t for t in admin.list_topics() if ".bench_" in t or "-bench_" in t]
        if mine:
            admin.delete_topics(mine)
    finally:
        admin.close()


def write_results(res: BenchResult, path: Path) -> dict[str, Any]:
    doc = {"measured_at": datetime.now(UTC).isoformat(), **res.as_json()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc
