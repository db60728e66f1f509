"""The Faust app: a thin entry point that feeds :class:`BatchProcessor`.

Faust gives us the consumer group, partition assignment, the tables with a persistent
(RocksDB) store and their changelog topics, and offset commits of acknowledged messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.kafka import partition_count
from pipeline.bootstrap import batch_processor
from pipeline.config import Config
from pipeline.settings import Settings
from pipeline.worker.liveness import Liveness, Observation
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.processor import BatchProcessor, Message
from pipeline.worker.sink import PermanentClickHouseError
from pipeline.worker.tables import FaustTables

log = logging.getLogger("gpumeter.worker")

EXIT_CONFIG = 78  # EX_CONFIG: a setting contradicts the topic; no retry helps
EXIT_CLICKHOUSE_PERMANENT = EXIT_CONFIG  # ClickHouse refuses our writes; no retry helps
EXIT_HUNG = 75  # EX_TEMPFAIL: hung (liveness.py); a restart replays what was not committed


def _faust() -> Any:
    try:
        import faust
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("faust-streaming is not installed: pip install faust-streaming") from exc
    return faust


# Faust's consumer fetches at most this much per partition and request. Its default (1 MiB)
# starves the agent: on the bench topic a do-nothing agent took 1,580 messages/s with it and
# 4,180 with 16 MiB (32 MiB: no better); `make bench` reports that ceiling.
CONSUMER_MAX_FETCH_BYTES = 16 * 1024 * 1024


def app_options(settings: Settings) -> dict[str, Any]:
    """The worker's Faust settings (also used by the bench's do-nothing agent, so that its
    ceiling is measured with the same consumer)."""
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": "rocksdb://",
        "datadir": str(settings.worker_data_dir),
        "topic_partitions": settings.topic_partitions,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "consumer_max_fetch_size": CONSUMER_MAX_FETCH_BYTES,
        "web_enabled": False,
        "table_standby_replicas": 0,
        "broker_commit_every": 10_000,
        "broker_commit_interval": 1.0,
        "stream_buffer_maxsize": settings.sink_batch_samples,
        "producer_max_request_size": 2 * settings.max_message_bytes,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": max(1.0, settings.session_timeout_s / 4),
    }


def raw_topic(app: Any, name: str) -> Any:
    """A topic of raw bytes (keys and values), decoded by us, never by Faust's codecs."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def create_app(settings: Settings | None = None) -> Any:
    faust = _faust()
    settings = settings or Settings()
    config = Config.load(settings.config_dir)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.worker_id, **app_options(settings))
    usage = raw_topic(app, settings.usage_topic)
    dlq = raw_topic(app, settings.dlq_topic)
    raw = {"key_type": bytes, "value_type": bytes, "partitions": settings.topic_partitions}
    # "_v2": keys are typed (JSON arrays) since the string keys of the first version
    seen = app.Table("seen_v2", default=None, **raw)
    hourly = app.Table("hourly_v2", default=None, **raw)

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        fut = await dlq.send(key=key, value=value)
        await fut  # delivered before the source message can be acknowledged

    def seen_keys_in(partition: int) -> Any:
        """The dedupe table's keys in one partition's RocksDB (Faust's store keeps one DB per
        partition; it has no public per-partition iteration)."""
        dbs = getattr(seen.data, "_dbs", None)
        if dbs is None:
            return list(seen.keys())
        db = dbs.get(partition)
        return [] if db is None else db.keys()

    tables = FaustTables(seen, hourly, seen_keys_in)
    state: dict[str, BatchProcessor] = {}

    def processor() -> BatchProcessor:
        if "p" not in state:  # connect lazily: no I/O at import or app creation
            state["p"] = batch_processor(settings, config, tables, send_dead_letter, metrics)
        return state["p"]

    progress = {"in_batch": False}
    liveness = Liveness(settings.stall_timeout_s, settings.recovery_timeout_s, time.monotonic())
    metrics = WorkerMetrics()

    @app.on_partitions_assigned.connect
    async def say_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        """One line per rebalance: the usage-topic partitions this worker now owns."""
        mine = sorted(tp.partition for tp in assigned if tp.topic == settings.usage_topic)
        tables.forget_index()  # the dedupe buckets held may have changed elsewhere
        liveness.progressed(time.monotonic())
        log.info("assigned partitions=%s", ",".join(map(str, mine)) or "none")

    @app.task
    async def serve_metrics() -> None:
        if not settings.metrics_port:
            return
        try:
            metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as exc:  # e.g. a second worker on the same host and port
            log.error(
                "metrics not served on %s:%d (%s); set GPUMETER_METRICS_PORT per worker",
                settings.metrics_host,
                settings.metrics_port,
                exc,
            )
        else:
            log.info(
                "metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port
            )

    def usage_lags() -> dict[int, int]:
        """Messages waiting per assigned usage-topic partition whose end offset is known."""
        consumer = app.consumer
        read = getattr(consumer, "_read_offset", {})  # Faust keeps no public "position"
        lags = {}
        for tp in consumer.assignment():
            if tp.topic != settings.usage_topic:
                continue
            hw = consumer.highwater(tp)
            if hw is not None:
                done = read.get(tp)
                lags[tp.partition] = hw - (0 if done is None else done + 1)
        return lags

    @app.timer(interval=5.0)
    async def consumer_gauges() -> None:
        """Lag and last committed offset per assigned partition of the usage topic."""
        for partition, lag in usage_lags().items():
            metrics.lag.labels(str(partition)).set(lag)
        committed = getattr(app.consumer, "_committed_offset", {})
        for tp in app.consumer.assignment():
            if tp.topic == settings.usage_topic and committed.get(tp) is not None:
                metrics.committed.labels(str(tp.partition)).set(committed[tp])
        metrics.dedupe_held.set(tables.buckets_held())

    @app.timer(interval=5.0)
    async def watchdog() -> None:
        """Liveness (pipeline/worker/liveness.py): exit when hung, so that the supervisor
        restarts the worker and the uncommitted messages are replayed."""
        recovery = getattr(app.tables, "recovery", None)
        recovering = bool(getattr(app, "in_recovery", False) or app.rebalancing)
        why = liveness.check(
            Observation(
                now=time.monotonic(),
                in_batch=progress["in_batch"],
                recovering=recovering,
                recovery_remaining=recovery.active_remaining_total()
                if recovering and recovery is not None
                else None,
                backlog=sum(usage_lags().values()),
            )
        )
        if why:
            log.critical("%s; exiting so that the supervisor restarts the worker", why)
            logging.shutdown()
            os._exit(EXIT_HUNG)

    @app.agent(usage)
    async def process(stream: Any) -> None:
        last_report = 0.0  # the first batch is reported at once, then every 5 s
        async for events in stream.take_events(
            settings.sink_batch_samples, within=settings.sink_batch_seconds
        ):
            progress["in_batch"] = True
            proc = processor()
            batch = [
                Message(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    datetime.fromtimestamp(e.message.timestamp, UTC)
                    if e.message.timestamp
                    else None,
                    e,
                )
                for e in events
            ]
            try:
                await proc.process(batch)
            except asyncio.CancelledError:
                # Stopped mid-batch (SIGTERM): Faust would acknowledge the half-done batch
                # while unwinding, so leave now; the batch is replayed on the next start.
                log.warning("stopped in the middle of a batch; it will be replayed")
                logging.shutdown()
                os._exit(0)
            except PermanentClickHouseError as exc:
                # Retrying cannot help (schema, database, credentials): say so and stop.
                log.critical(
                    "ClickHouse refuses the worker's writes; fix the cause and restart "
                    "(nothing was committed, the batch will be replayed): %s",
                    exc,
                )
                logging.shutdown()
                os._exit(EXIT_CLICKHOUSE_PERMANENT)
            except BaseException:
                # Crash-only: Faust would acknowledge the batch while unwinding the stream,
                # so die before it can commit; the batch is replayed on restart.
                log.critical("batch processing failed; exiting without committing", exc_info=True)
                logging.shutdown()
                os._exit(70)
            progress["in_batch"] = False
            liveness.progressed(time.monotonic())
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                s = proc.stats
                log.info(
                    "processed messages=%d samples=%d duplicates=%d replayed=%d dlq=%d "
                    "ch_rows=%d recalled=%d",
                    s.messages,
                    s.samples,
                    s.duplicates,
                    s.replayed,
                    s.dead_letters,
                    proc.sink.rows_written,
                    proc.sink.recalled,
                )

    return app


def check_partitions(settings: Settings) -> None:
    """Refuse to start when the usage topic has another partition count than
    ``GPUMETER_TOPIC_PARTITIONS``: the worker checks that each message sits in the partition
    Kafka's partitioner gives its key for that count, so with a wrong count it would
    dead-letter most messages as ``wrong_partition``. A broker not answering is not a reason to
    refuse (the worker waits for it like any other time); the check runs at the next start."""
    from kafka.errors import KafkaError

    try:
        found = partition_count(settings.kafka_bootstrap, settings.usage_topic)
    except KafkaError as exc:
        log.warning("partition count of %s not checked: %s", settings.usage_topic, exc)
        return
    if found is not None and found != settings.topic_partitions:
        log.critical(
            "topic %s has %d partitions but GPUMETER_TOPIC_PARTITIONS=%d; set it to the "
            "topic's count and restart (partitions added to a live topic move tenants: drain "
            "it and migrate to a new topic instead, see the README's Limits)",
            settings.usage_topic,
            found,
            settings.topic_partitions,
        )
        logging.shutdown()
        raise SystemExit(EXIT_CONFIG)


def run_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    faust = _faust()
    settings = settings or Settings()
    check_partitions(settings)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
