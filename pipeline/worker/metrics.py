"""The worker's Prometheus metrics (``prometheus_client``), served on ``GPUMETER_METRICS_PORT``.

One registry per worker (no process-global state): the batch processor records what each batch
did and how long each stage took; the runtime records consumer lag and committed offsets per
partition, and the checkpoint and commit stages. ``gpumeter status`` reads the same endpoint.

| metric | kind | labels |
|---|---|---|
| ``gpumeter_messages_total`` | counter | |
| ``gpumeter_samples_total`` | counter | |
| ``gpumeter_duplicates_total`` | counter | |
| ``gpumeter_dead_letters_total`` | counter | ``reason`` |
| ``gpumeter_batch_seconds`` | histogram | |
| ``gpumeter_stage_seconds_total`` | counter | ``stage`` (see :data:`STAGES`) |
| ``gpumeter_clickhouse_flush_seconds`` | histogram | |
| ``gpumeter_clickhouse_retries_total`` | counter | |
| ``gpumeter_dedupe_buckets_written_total`` | counter | |
| ``gpumeter_dedupe_buckets_expired_total`` | counter | |
| ``gpumeter_dedupe_buckets_held`` | gauge | |
| ``gpumeter_dedupe_recalled_total`` | counter | |
| ``gpumeter_consumer_lag`` | gauge | ``partition`` |
| ``gpumeter_last_committed_offset`` | gauge | ``partition`` |
| ``gpumeter_last_batch_timestamp_seconds`` | gauge | |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGES = ("decode", "rows", "recall", "fold", "state", "insert", "checkpoint", "commit")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("gpumeter_messages", "Kafka messages processed", registry=r)
        self.samples = Counter("gpumeter_samples", "usage samples accepted", registry=r)
        self.duplicates = Counter("gpumeter_duplicates", "duplicate samples skipped", registry=r)
        self.dead_letters = Counter(
            "gpumeter_dead_letters", "dead-lettered events by reason", ["reason"], registry=r
        )
        self.batch_seconds = Histogram(
            "gpumeter_batch_seconds", "one batch, decode to ClickHouse", buckets=_LATENCY,
            registry=r,
        )  # fmt: skip
        self.stage_seconds = Counter(
            "gpumeter_stage_seconds", "time spent per stage of a batch", ["stage"], registry=r
        )
        self.flush_seconds = Histogram(
            "gpumeter_clickhouse_flush_seconds", "ClickHouse writes of one batch, retries included",
            buckets=_LATENCY, registry=r,
        )  # fmt: skip
        self.clickhouse_retries = Counter(
            "gpumeter_clickhouse_retries", "ClickHouse writes retried after an I/O failure",
            registry=r,
        )  # fmt: skip
        self.dedupe_buckets = Counter(
            "gpumeter_dedupe_buckets_written", "dedupe-memory buckets written", registry=r
        )
        self.dedupe_expired = Counter(
            "gpumeter_dedupe_buckets_expired", "dedupe-memory buckets dropped below the floor",
            registry=r,
        )  # fmt: skip
        self.dedupe_held = Gauge(
            "gpumeter_dedupe_buckets_held", "dedupe-memory buckets indexed (expiring partitions)",
            registry=r,
        )  # fmt: skip
        self.dedupe_recalled = Counter(
            "gpumeter_dedupe_recalled",
            "identities below the dedupe floor looked up in ClickHouse", registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "gpumeter_consumer_lag", "messages not yet read, per partition", ["partition"],
            registry=r,
        )  # fmt: skip
        self.committed = Gauge(
            "gpumeter_last_committed_offset", "last committed offset, per partition",
            ["partition"], registry=r,
        )  # fmt: skip
        self.last_batch = Gauge(
            "gpumeter_last_batch_timestamp_seconds", "when the last batch completed (Unix time)",
            registry=r,
        )  # fmt: skip
        for stage in STAGES:
            self.stage_seconds.labels(stage)  # every stage present from the start

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` from a daemon thread."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
