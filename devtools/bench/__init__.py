"""``make bench``: the pipeline's speed, freshness and memory, each against a baseline measured
in the same run on the same machine (ratios hold on a noisy machine; absolute numbers don't).

1. raw limit: a plain kafka-python consumer reading the topic and doing nothing;
2. pipeline: one worker, from its first commit until every hourly aggregate is in ClickHouse;
3. one sample per message: the same, on a topic where each message is one bare CloudEvent;
4. two workers: one consumer group on a four-partition topic, the same measurement;
5. live stream: a worker's RSS over 31 simulated days of a fixed fleet, at day 7 and day 31;
6. naive: the same samples written one INSERT per sample, no stream aggregation;
7. freshness: p50/p99 of (queryable in ClickHouse - produced) at half the measured maximum;
8. memory: the worker's peak RSS with 1,000,000 distinct hourly keys in its state;
9. billing: one month for 1,000 tenants, Stripe calls to stripe-mock included.

``scale`` multiplies the volumes (1.0: 5,000,000 samples and 1,000,000 keys; 1,000,000 samples
one per message and for the two workers; 2,000,000 samples over the 31 live days).
"""

from __future__ import annotations

import shutil
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path

from devtools.bench import faust_ceiling
from devtools.bench.cpu import CpuMeter, ceiling, per_sample
from devtools.bench.floor import stateless_floor
from devtools.bench.result import BenchResult, write_results
from devtools.bench.steps import (
    Rows,
    billing_month,
    committed,
    drain,
    free_port,
    freshness,
    memory_keys,
    naive_inserts,
    raw_consume,
    settle,
)
from devtools.bench.streams import live_stream, one_sample_topic, two_workers
from devtools.sim.run import publish
from pipeline.adapters.clickhouse import ident, migrate
from pipeline.adapters.kafka import ensure_topics
from pipeline.adapters.store import Store
from pipeline.bootstrap import executor
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import REPO_ROOT, Settings

__all__ = ["BenchResult", "cleanup", "run_bench", "write_results"]

SAMPLES_PER_NODE_MONTH = 20_000  # measured: 201 nodes gave 4.5M samples; this gives >= 5M
ONE_SAMPLE_SAMPLES = 1_000_000  # at scale 1.0, one per message
TWO_WORKERS_SAMPLES = 1_000_000  # at scale 1.0, for the two workers
ROOT = REPO_ROOT / ".local" / "bench"


def isolated(base: Settings, name: str, root: Path) -> Settings:
    """``base.isolated`` with a metrics port of its own (see :func:`free_port`)."""
    return base.isolated(name, root).model_copy(update={"metrics_port": free_port()})


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def run_bench(base: Settings, scale: float, say: Callable[[str], None] = print) -> BenchResult:
    from rich.progress import Progress

    config = Config.load(base.config_dir)
    root = ROOT
    name = uuid.uuid4().hex[:8]
    s = isolated(base, f"bench_{name}", root / name)
    res = BenchResult()
    migrate(executor(s))
    nodes = max(2, round(5_000_000 * scale / SAMPLES_PER_NODE_MONTH))
    say(f"[1/9] publishing {nodes} nodes x one month (~{5_000_000 * scale:,.0f} samples)")
    sim = publish(s, config, Period.parse("2026-10"), nodes=nodes, interval_s=600, seed=99)
    res.samples, res.messages = sim.samples, sim.messages
    spm = sim.samples / sim.messages

    say("[2/9] raw limit: plain kafka-python consumer, doing nothing")
    n, secs = raw_consume(s)
    res.raw_messages_per_s, res.raw_samples_per_s = n / secs, n * spm / secs
    say(f"      {res.raw_samples_per_s:,.0f} samples/s ({res.raw_messages_per_s:,.0f} messages/s)")

    say("[3/9] pipeline: one worker until every aggregate is in ClickHouse")
    stages: dict[str, float] = {}
    meter = CpuMeter()
    with Progress() as bar:
        task = bar.add_task("worker: offsets committed", total=sim.messages)

        def tick(rows: Rows, pids: list[int]) -> None:
            bar.update(task, completed=committed(rows))
            meter.tick(rows, pids)

        drained = drain(
            s,
            root / f"worker-{name}.log",
            sim.messages,
            timeout=7200,
            on_tick=tick,
            stages=stages,
        )
    busy = drained.busy_s
    res.samples_per_s = sim.samples / busy
    # the rest of the busy time: polling Kafka, building the batch
    stages["other"] = max(0.0, busy - sum(stages.values()))
    res.extra["stages"] = {k: round(v, 2) for k, v in stages.items()}
    say(f"      {res.samples_per_s:,.0f} samples/s (ratio to raw {res.as_json()['ratio_raw']})")
    say("      seconds per stage: " + ", ".join(f"{k}={v:.1f}" for k, v in stages.items()))
    cpu = per_sample(meter.seconds(), sim.samples)
    res.extra["cpu_us_per_sample"] = cpu
    res.extra["cpu_machine_busy"] = _rounded(meter.machine_busy())
    res.extra["cpu_ceiling_samples_per_s"] = ceiling(cpu.get("total", 0.0))
    say(
        "      CPU per sample (us): "
        + ", ".join(f"{k}={v}" for k, v in cpu.items())
        + f"; cores busy {res.extra['cpu_machine_busy']}; at this cost the machine's cores "
        f"could do at most {res.extra['cpu_ceiling_samples_per_s']:,.0f} samples/s"
    )
    floor_s = isolated(base, f"bench_{name}z", root / (name + "z"))
    floor = stateless_floor(s, floor_s, config)
    executor(base).execute(f"DROP DATABASE IF EXISTS {ident(floor_s.clickhouse_database)}")
    res.extra["floor_samples_per_s"] = round(floor.samples_per_s, 1)
    res.extra["floor_cpu_us_per_sample"] = floor.cpu_us_per_sample
    res.extra["floor_cpu_ceiling_samples_per_s"] = ceiling(
        floor.cpu_us_per_sample.get("total", 0.0)
    )
    say(
        f"      stateless floor (consume, decode, raw rows, insert, commit; no state): "
        f"{floor.samples_per_s:,.0f} samples/s in one process, CPU per sample (us): "
        + ", ".join(f"{k}={v}" for k, v in floor.cpu_us_per_sample.items())
        + f"; the cores' ceiling at that cost {res.extra['floor_cpu_ceiling_samples_per_s']:,.0f}"
    )
    res.extra["pipeline_wall_s"] = round(drained.wall_s, 1)
    res.extra["pipeline_busy_s"] = round(busy, 1)
    parts = Store(executor(s)).active_parts()
    res.extra["active_parts"] = parts
    # Faust's own ceiling on the same topic: its stream with a do-nothing agent
    bare = faust_ceiling.measure(s, sim.messages, root / f"ceiling-{name}.log")
    res.extra["faust_bare_messages_per_s"] = round(bare, 1)
    res.extra["faust_bare_samples_per_s"] = round(bare * spm, 1)
    res.extra["faust_bare_ratio_raw"] = round(bare / res.raw_messages_per_s, 4)
    say(
        f"      Faust's ceiling (same app, do-nothing agent): {bare:,.0f} messages/s = "
        f"{bare * spm:,.0f} samples/s (ratio to raw {bare / res.raw_messages_per_s:.3f})"
    )

    say("[4/9] one sample per message: the same measurement, each message a bare CloudEvent")
    one_s = isolated(base, f"bench_{name}1", root / (name + "1"))
    migrate(executor(one_s))
    one_nodes = max(2, round(ONE_SAMPLE_SAMPLES * scale / SAMPLES_PER_NODE_MONTH))
    one_n = one_sample_topic(one_s, config, one_nodes)
    n, secs = raw_consume(one_s)
    res.one_sample_raw_samples_per_s = n / secs
    one_stages: dict[str, float] = {}
    with Progress() as bar:
        task = bar.add_task("worker: offsets committed", total=one_n)
        one = drain(
            one_s,
            root / f"worker-{name}1.log",
            one_n,
            timeout=7200,
            on_tick=lambda rows, _: bar.update(task, completed=committed(rows)),
            stages=one_stages,
        )
    res.one_sample_samples_per_s = one_n / one.busy_s
    one_stages["other"] = max(0.0, one.busy_s - sum(one_stages.values()))
    res.extra["one_sample_samples"] = one_n
    res.extra["one_sample_busy_s"] = round(one.busy_s, 1)
    res.extra["one_sample_stages"] = {k: round(v, 2) for k, v in one_stages.items()}
    say(
        f"      {res.one_sample_samples_per_s:,.0f} samples/s over {one_n:,} messages "
        f"(raw {res.one_sample_raw_samples_per_s:,.0f}, "
        f"ratio {res.as_json()['one_sample_ratio_raw']})"
    )

    say("[5/9] two workers, one group, four partitions (both assigned before publishing)")
    two_s = isolated(base, f"bench_{name}2", root / (name + "2"))
    migrate(executor(two_s))
    two_nodes = max(2, round(TWO_WORKERS_SAMPLES * scale / SAMPLES_PER_NODE_MONTH))
    two_meter = CpuMeter()
    two = two_workers(two_s, config, two_nodes, root / f"workers-{name}2", on_tick=two_meter.tick)
    two_cpu = per_sample(two_meter.seconds(), two.samples)
    res.extra["two_workers_cpu_us_per_sample"] = two_cpu
    res.extra["two_workers_cpu_machine_busy"] = _rounded(two_meter.machine_busy())
    res.two_workers_samples_per_s = two.samples / two.drained.busy_s
    n, secs = raw_consume(two_s)
    res.two_workers_raw_samples_per_s = n * (two.samples / two.messages) / secs
    res.extra["two_workers_samples"] = two.samples
    res.extra["two_workers_busy_s"] = round(two.drained.busy_s, 1)
    res.extra["two_workers_publish_s"] = round(two.publish_s, 1)
    res.extra["two_workers_assigned"] = two.assigned
    res.extra["two_workers_stages"] = {k: round(v, 2) for k, v in two.stages.items()}
    say(
        f"      {res.two_workers_samples_per_s:,.0f} samples/s, partitions {two.assigned} "
        f"(raw {res.two_workers_raw_samples_per_s:,.0f}, "
        f"ratio {res.as_json()['two_workers_ratio_raw']}; "
        f"published in {two.publish_s:.1f}s of {two.drained.busy_s:.1f}s; "
        f"cores busy {res.extra['two_workers_cpu_machine_busy']})"
    )

    say("[6/9] live stream: one worker fed 31 simulated days at a fixed rate, RSS at day 7, 31")
    live_s = isolated(base, f"bench_{name}l", root / (name + "l"))
    migrate(executor(live_s))
    live = live_stream(live_s, config, scale, root / f"worker-{name}l.log")
    res.rss_day7_mib, res.rss_day31_mib = live.rss_day7_mib, live.rss_day31_mib
    res.extra.update(
        live_samples=live.samples,
        live_gpus=live.nodes * 8,
        live_day7_sampled_at_day=round(live.day7_reached, 2),
        live_peak_rss_mib=round(live.peak_rss_mib, 1),
        live_busy_s=round(live.busy_s, 1),
    )
    say(
        f"      {live.samples:,} distinct samples from {live.nodes * 8} GPUs: "
        f"RSS {live.rss_day7_mib:.1f} MiB at day {live.day7_reached:.1f}, "
        f"{live.rss_day31_mib:.1f} MiB at day 31 "
        f"(ratio {res.as_json()['rss_day31_over_day7']})"
    )

    say("[7/9] naive baseline: one INSERT per sample")
    naive_s = isolated(base, f"bench_{name}n", root / (name + "n"))
    migrate(executor(naive_s))
    res.naive_samples_per_s = naive_inserts(naive_s, config, seconds=20)
    # its thousands of one-row parts are only there to be counted: dropped, not merged
    executor(base).execute(f"DROP DATABASE IF EXISTS {ident(naive_s.clickhouse_database)}")

    say("[8/9] freshness at half the measured maximum, then memory with distinct keys")
    res.extra["settled_before_freshness_s"] = round(settle(base), 1)
    fresh_s = isolated(base, f"bench_{name}f", root / (name + "f"))
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
    mem_s = isolated(base, f"bench_{name}m", root / (name + "m"))
    migrate(executor(mem_s))
    ensure_topics(s.kafka_bootstrap, {mem_s.usage_topic: s.topic_partitions, mem_s.dlq_topic: 1})
    res.peak_rss_mib, res.memory_keys = memory_keys(
        mem_s, config, int(1_000_000 * scale), root / f"worker-{name}m.log"
    )

    say("[9/9] billing one month for 1,000 tenants (stripe-mock)")
    bill_s = isolated(base, f"bench_{name}b", root / (name + "b"))
    migrate(executor(bill_s))
    res.billing_tenants = max(10, int(1000 * min(1.0, scale * 5)))
    res.billing_s = billing_month(bill_s, config, res.billing_tenants, root / name, res.extra)
    return res


def cleanup(base: Settings) -> None:
    """Drop the bench databases and topics (a full run leaves ~1 GB in Kafka otherwise) and
    the bench workers' local state (their logs stay)."""
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
    for state in ROOT.glob("*/worker"):
        shutil.rmtree(state, ignore_errors=True)
