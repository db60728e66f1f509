"""``gpumeter status``: one screen of the worker group's lag, throughput and health.

It reads the consumer group from Kafka (members, the partitions each owns, committed and end
offsets) and scrapes each worker's Prometheus endpoint twice, ``window_s`` apart, for its
rates. A worker is ``ok`` when it completed a batch within the stall timeout or has nothing to
do, ``stalled`` when messages wait on its partitions and no batch completed for that long,
``unreachable`` when its metrics endpoint does not answer.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from pipeline.adapters.kafka import group_members, partition_lags
from pipeline.settings import Settings


def scrape(url: str, timeout: float = 3.0) -> dict[str, float]:
    """The samples of a Prometheus text endpoint as ``name{labels}`` -> value, parsed by the
    Prometheus client's own parser."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator's URL
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@dataclass
class WorkerStatus:
    url: str
    host: str = ""
    partitions: list[int] = field(default_factory=list)
    health: str = "unreachable"
    samples_per_s: float = 0.0
    messages_per_s: float = 0.0
    samples_total: float = 0.0
    dead_letters: float = 0.0
    clickhouse_retries: float = 0.0
    last_batch_age_s: float | None = None
    error: str = ""


@dataclass
class GroupStatus:
    group: str
    topic: str
    partitions: list[tuple[int, int, int]]  # partition, committed, end
    workers: list[WorkerStatus]

    @property
    def lag(self) -> int:
        return sum(max(0, e - c) for _, c, e in self.partitions)

    @property
    def healthy(self) -> bool:
        """Every worker ok; with no worker at all, only when nothing waits."""
        return all(w.health == "ok" for w in self.workers) and bool(self.workers or not self.lag)


def _total(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def group_status(
    settings: Settings,
    urls: list[str] | None = None,
    window_s: float = 2.0,
    now: Callable[[], float] = time.time,
) -> GroupStatus:
    topic = settings.usage_topic
    parts = partition_lags(settings.kafka_bootstrap, settings.worker_id, topic)
    members = group_members(settings.kafka_bootstrap, settings.worker_id, topic)
    if urls is None:  # one worker per member host, on the configured port; none: no worker
        hosts = sorted({h for _, h, _ in members})
        urls = [f"http://{h}:{settings.metrics_port}/metrics" for h in hosts]
    lag_of = {p: max(0, e - c) for p, c, e in parts}
    workers = []
    first: dict[str, dict[str, float] | Exception] = {}
    if not urls:
        return GroupStatus(settings.worker_id, topic, parts, [])
    for url in urls:
        try:
            first[url] = scrape(url)
        except Exception as exc:  # noqa: BLE001 - reported as unreachable, with the reason
            first[url] = exc
    time.sleep(window_s)
    for url in urls:
        w = WorkerStatus(url)
        host = url.split("//", 1)[-1].split(":", 1)[0]
        w.host = host
        w.partitions = sorted(p for _, h, ps in members if h == host for p in ps)
        before = first[url]
        try:
            after = scrape(url)
        except Exception as exc:  # noqa: BLE001
            w.error = str(exc)
            workers.append(w)
            continue
        if isinstance(before, Exception):
            before = after
        w.samples_total = _total(after, "gpumeter_samples_total")
        w.samples_per_s = (w.samples_total - _total(before, "gpumeter_samples_total")) / window_s
        w.messages_per_s = (
            _total(after, "gpumeter_messages_total") - _total(before, "gpumeter_messages_total")
        ) / window_s
        w.dead_letters = _total(after, "gpumeter_dead_letters_total")
        w.clickhouse_retries = _total(after, "gpumeter_clickhouse_retries_total")
        last = after.get("gpumeter_last_batch_timestamp_seconds", 0.0)
        w.last_batch_age_s = now() - last if last else None
        waiting = sum(lag_of.get(p, 0) for p in w.partitions)
        stalled = waiting > 0 and (
            w.last_batch_age_s is None or w.last_batch_age_s > settings.stall_timeout_s
        )
        w.health = "stalled" if stalled else "ok"
        workers.append(w)
    return GroupStatus(settings.worker_id, topic, parts, workers)


def render(st: GroupStatus) -> str:
    lines = [
        f"group {st.group} on {st.topic}: lag={st.lag} "
        f"health={'ok' if st.healthy else 'DEGRADED'} workers={len(st.workers)}",
        "partition  committed        end    lag",
    ]
    for p, c, e in st.partitions:
        lines.append(f"{p:>9}  {c:>9}  {e:>9}  {max(0, e - c):>5}")
    lines.append("worker                                  partitions  health       samples/s  "
                 "msgs/s  last batch  dead letters  CH retries")  # fmt: skip
    for w in st.workers:
        age = "-" if w.last_batch_age_s is None else f"{w.last_batch_age_s:.1f}s ago"
        lines.append(
            f"{w.url:<40}{','.join(map(str, w.partitions)) or '-':>10}  {w.health:<11}"
            f"{w.samples_per_s:>10.0f}  {w.messages_per_s:>6.0f}  {age:>10}  "
            f"{w.dead_letters:>12.0f}  {w.clickhouse_retries:>10.0f}"
            + (f"  ({w.error[:60]})" if w.error else "")
        )
    return "\n".join(lines)
