"""The worker's entry point: checks the topic, wires the batch processor (one bootstrap) and
hands it to the runtime (:mod:`pipeline.worker.runtime`: kafka-python consumer group, state in
memory with its own changelog topics, commits after ClickHouse and the changelog)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.adapters.kafka import partition_count
from pipeline.bootstrap import batch_processor
from pipeline.config import Config
from pipeline.settings import Settings
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.runtime import EXIT_CLICKHOUSE_PERMANENT, EXIT_CONFIG, EXIT_HUNG, run

__all__ = [
    "EXIT_CLICKHOUSE_PERMANENT",
    "EXIT_CONFIG",
    "EXIT_HUNG",
    "check_partitions",
    "run_worker",
]

log = logging.getLogger("gpumeter.worker")


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
    settings = settings or Settings()
    logging.basicConfig(
        level=loglevel.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # the sink logs each failed write once, with what it holds; the driver would add a trace
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    # kafka-python 3 warns whenever a batch keeps its I/O loop busy for >0.1 s: every batch
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    check_partitions(settings)
    config = Config.load(settings.config_dir)
    metrics = WorkerMetrics()
    if settings.metrics_port:
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

    def make_processor(tables: Any, send_dead_letter: Any) -> Any:
        return batch_processor(settings, config, tables, send_dead_letter, metrics)

    run(settings, make_processor, metrics)
