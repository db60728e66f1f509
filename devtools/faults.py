"""Fault injection on the real stack (``make faults``, ``tests/faults``).

One run: publish a simulated period (optionally with producer resends, late reports and
invalid messages), replay a range of a partition, then let one or two real worker processes
drain the topic while faults are injected at points chosen by progress: SIGKILL of a worker
(then restarted), ClickHouse stopped for a while, the Kafka broker restarted, one of two
workers killed for good (the other takes its partitions over). A worker that exits by itself
is restarted, as a process supervisor would. Afterwards ClickHouse is compared with the ground
truth, key by key, in GPU-micro-seconds, and the period is billed and compared with what a
clean run must charge.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import start_worker, stop_worker
from devtools.verify import compare, expected_bills, stored_as_truth
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.kafka import end_offsets, ensure_topics, group_lag, make_producer
from pipeline.adapters.store import Store
from pipeline.bootstrap import billing_run, executor
from pipeline.config import Config
from pipeline.domain.period import Period
from pipeline.settings import REPO_ROOT, Settings


@dataclass
class FaultPlan:
    period: str = "2026-10"
    nodes: int = 8
    interval_s: int = 600
    seed: int = 5
    kills: int = 0
    clickhouse_outage_s: float = 0.0
    broker_restarts: int = 0
    duplicate_rate: float = 0.0
    replay_messages: int = 0
    late_every: int = 0
    bad_every: int = 0
    workers: int = 1
    kill_one_of_two: bool = False
    timeout_s: float = 1500.0
    # no offset committed for this long with messages waiting: stop and show the workers' logs
    stall_s: float = 300.0
    # messages per batch: small, so that every fault lands between and inside many batches
    # (a worker takes up to GPUMETER_SINK_BATCH_SAMPLES=20,000, more than a test's whole topic)
    batch_messages: int = 400


@dataclass
class FaultReport:
    samples: int = 0
    messages: int = 0
    kills: int = 0
    clickhouse_outages: int = 0
    broker_restarts: int = 0
    duplicates: int = 0
    replayed: int = 0
    late: int = 0
    dlq: int = 0
    lost_us: int = 0
    double_us: int = 0
    self_restarts: int = 0
    workers_retired: int = 0
    keys: int = 0
    parts: dict[str, int] = field(default_factory=dict)
    billing_equal: bool = False
    billed_total: Decimal = Decimal(0)
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"faults: events={self.samples} kills={self.kills} "
            f"clickhouse_outages={self.clickhouse_outages} broker_restarts={self.broker_restarts} "
            f"duplicates={self.duplicates} replayed={self.replayed} late={self.late} "
            f"dlq={self.dlq} lost={self.lost_us} double_counted={self.double_us}"
        )


def infra(script: str, action: str) -> None:
    subprocess.run(
        ["bash", f"infra/{script}.sh", action],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def replay_range(settings: Settings, partition: int, count: int) -> int:
    """Re-publish ``count`` records of a partition from an earlier offset, byte for byte."""
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(settings.usage_topic, partition)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    producer = make_producer(settings.kafka_bootstrap)
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        start = max(0, end // 3)
        consumer.seek(tp, start)
        sent = 0
        failures: list[BaseException] = []
        for rec in consumer:
            if sent >= count or rec.offset >= end:
                break
            producer.send(
                settings.usage_topic,
                key=rec.key,
                value=rec.value,
                partition=partition,
                timestamp_ms=rec.timestamp,
            ).add_errback(failures.append)
            sent += 1
        producer.flush()
        if failures:
            raise RuntimeError(f"replay: {len(failures)} records not acknowledged")
        return sent
    finally:
        producer.close()
        consumer.close()


class Fleet:
    """The worker processes of one run, restarted when they die on their own."""

    def __init__(self, settings: Settings, n: int, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: dict[int, subprocess.Popen[bytes] | None] = {}
        self.retired: set[int] = set()
        self.self_restarts = 0
        for i in range(n):
            self.start(i)

    def worker_settings(self, i: int) -> Settings:
        return self.settings.model_copy(
            update={"worker_data_dir": self.settings.worker_data_dir / f"w{i}"}
        )

    def log_path(self, i: int) -> Path:
        return self.log_dir / f"worker-{i}.log"

    def start(self, i: int) -> None:
        self.procs[i] = start_worker(self.worker_settings(i), self.log_path(i))

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def watch(self) -> None:
        for i, proc in self.procs.items():
            if i not in self.retired and proc is not None and proc.poll() is not None:
                self.self_restarts += 1
                self.start(i)

    def log_lines(self, i: int, marker: str = "") -> list[str]:
        """Worker ``i``'s log lines holding ``marker``."""
        path = self.log_path(i)
        if not path.exists():
            return []
        return [ln for ln in path.read_text(errors="replace").splitlines() if marker in ln]

    def owns_partitions(self, i: int) -> bool:
        """Worker ``i``'s latest assignment (its last ``assigned partitions=`` line) is not
        empty."""
        lines = self.log_lines(i, "assigned partitions=")
        return bool(lines) and not lines[-1].rstrip().endswith("partitions=none")

    def wait_shared(self, timeout: float) -> None:
        """Block until every worker owns partitions (all of them have work once messages
        arrive)."""
        deadline = time.monotonic() + timeout
        while not all(self.owns_partitions(i) for i in self.alive()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers never shared the partitions\n{self.tails()}")
            self.watch()
            time.sleep(0.5)

    def all_processed(self) -> bool:
        """Every live worker has completed a batch."""
        return all(self.log_lines(i, "processed messages=") for i in self.alive())

    def tails(self, lines: int = 25) -> str:
        """The end of each worker's log, for a run that fails."""
        out = []
        for i in sorted(self.procs):
            keep = [t for t in self.log_lines(i) if "kafka.net.selector" not in t][-lines:]
            out.append(f"--- worker-{i}.log (last {len(keep)} lines)\n" + "\n".join(keep))
        return "\n".join(out)

    def alive(self) -> list[int]:
        return [i for i, p in self.procs.items() if i not in self.retired and p is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc is not None:
                stop_worker(proc)


def run_faults(
    settings: Settings,
    config: Config,
    plan: FaultPlan,
    log_dir: Path,
    say: Callable[[str], None] = print,
) -> FaultReport:
    started = time.monotonic()
    settings = settings.model_copy(update={"sink_batch_samples": plan.batch_messages})
    rng = random.Random(plan.seed)
    rep = FaultReport()
    period = Period.parse(plan.period)
    ex = executor(settings)
    migrate(ex)
    ex.close()
    fleet: Fleet | None = None
    if plan.workers > 1:  # every worker owns partitions before the first message arrives
        ensure_topics(settings.kafka_bootstrap, {settings.usage_topic: settings.topic_partitions})
        fleet = Fleet(settings, plan.workers, log_dir)
        fleet.wait_shared(timeout=180)
    sim = publish(
        settings,
        config,
        period,
        nodes=plan.nodes,
        interval_s=plan.interval_s,
        seed=plan.seed,
        bad_every=plan.bad_every,
        progress=False,
        duplicate_rate=plan.duplicate_rate,
        late_every=plan.late_every,
    )
    rep.samples, rep.messages, rep.duplicates = sim.samples, sim.messages, sim.duplicates
    if plan.replay_messages:
        rep.replayed = replay_range(settings, 0, plan.replay_messages)
    total = sum(end_offsets(settings.kafka_bootstrap, settings.usage_topic).values())
    say(
        f"published {sim.messages} messages ({sim.samples} samples), {sim.duplicates} resent, "
        f"{rep.replayed} replayed, {sim.late_messages} late, {sim.bad_messages} invalid"
    )

    # fault schedule: (fraction of offsets committed, action)
    actions: list[tuple[float, str]] = []
    for k in range(plan.kills):
        actions.append(((k + 1) / (plan.kills + 1) * 0.8 + rng.uniform(-0.05, 0.05), "kill"))
    if plan.clickhouse_outage_s:
        actions.append((0.3, "clickhouse"))
    for k in range(plan.broker_restarts):
        actions.append((0.5 + 0.2 * k, "broker"))
    if plan.kill_one_of_two:
        actions.append((0.4, "retire"))
    actions.sort()

    fleet = fleet or Fleet(settings, plan.workers, log_dir)
    committed = 0
    poll_failures = 0
    progress_at, last_committed = time.monotonic(), -1
    last_poll_error = "none"
    try:
        deadline = time.monotonic() + plan.timeout_s
        while True:
            fleet.watch()
            try:
                committed, lag = group_lag(
                    settings.kafka_bootstrap, settings.worker_id, settings.usage_topic
                )
            except Exception as exc:  # noqa: BLE001 - broker restarting: poll again
                lag = -1
                poll_failures += 1
                last_poll_error = f"{type(exc).__name__}: {exc}"
                if poll_failures in (1, 10, 100):
                    say(f"progress poll failed ({poll_failures}x): {type(exc).__name__}: {exc}")
            if lag == 0 and committed >= total:
                break
            if committed != last_committed:
                progress_at, last_committed = time.monotonic(), committed
            elif time.monotonic() - progress_at > plan.stall_s:
                raise TimeoutError(
                    f"no offset committed for {plan.stall_s:.0f}s at {committed}/{total}; "
                    f"lag polls failed {poll_failures}x (last: {last_poll_error}); "
                    f"timeline {rep.log}\n{fleet.tails()}"
                )
            while actions and lag > 0 and committed >= actions[0][0] * total:
                if actions[0][1] == "retire" and not fleet.all_processed():
                    break  # the retired worker must have had work first
                _, what = actions.pop(0)
                rep.log.append(f"{time.monotonic() - started:6.1f}s at {committed}/{total}: {what}")
                say(rep.log[-1])
                if what == "kill":
                    victim = rng.choice(fleet.alive())
                    fleet.kill(victim)
                    rep.kills += 1
                    time.sleep(rng.uniform(0.2, 2.0))
                    fleet.start(victim)
                elif what == "retire":
                    victim = fleet.alive()[-1]
                    fleet.kill(victim)
                    fleet.retired.add(victim)
                    rep.workers_retired += 1
                elif what == "clickhouse":
                    infra("clickhouse", "stop")
                    t_end = time.monotonic() + plan.clickhouse_outage_s
                    while time.monotonic() < t_end:
                        fleet.watch()
                        time.sleep(1)
                    infra("clickhouse", "start")
                    rep.clickhouse_outages += 1
                elif what == "broker":
                    infra("kafka", "restart")
                    rep.broker_restarts += 1
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not drained after {plan.timeout_s}s: {committed}/{total}; "
                    f"timeline {rep.log}\n{fleet.tails()}"
                )
            time.sleep(0.5)
    finally:
        fleet.stop()
    rep.self_restarts = fleet.self_restarts
    if actions:
        rep.log.append(f"not injected (drained first): {[a for _, a in actions]}")
        say(rep.log[-1])

    ex = executor(settings)
    store = Store(ex)
    truth = read_truth(sim.truth_path)
    v = compare(truth, stored_as_truth(store, period))
    rep.lost_us, rep.double_us, rep.keys = v.lost_us, v.double_us, v.keys_expected
    rep.dlq = sum(end_offsets(settings.kafka_bootstrap, settings.dlq_topic).values())
    rep.late = store.late_samples(period)
    rep.parts = store.active_parts()
    report = billing_run(settings, config, store).run(period)
    clean = expected_bills(truth, config, period)
    rep.billing_equal = {r.tenant_id: (r.gpu_hours, r.amount) for r in report.results} == clean
    rep.billed_total = sum((r.amount for r in report.results), Decimal(0))
    ex.close()
    rep.seconds = time.monotonic() - started
    return rep


def describe(rep: FaultReport) -> dict[str, Any]:
    return {
        "seconds": round(rep.seconds, 1),
        "hourly_keys": rep.keys,
        "parts": rep.parts,
        "self_restarts": rep.self_restarts,
        "billing_equal_clean_run": rep.billing_equal,
        "billed_total": str(rep.billed_total),
        "timeline": rep.log,
    }
