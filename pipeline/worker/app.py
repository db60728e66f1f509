"""The Faust app: a thin entry point that feeds :class:`BatchProcessor`.

Faust gives us the consumer group, partition assignment, the tables with a persistent
(RocksDB) store and their changelog topics, and offset commits of acknowledged messages.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.clickhouse import DriverExecutor
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.events import DecodeLimits
from pipeline.settings import Settings
from pipeline.worker.processor import BatchProcessor, Message
from pipeline.worker.sink import ClickHouseSink

log = logging.getLogger("gpumeter.worker")


def _faust() -> Any:
    try:
        import faust
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("faust-streaming is not installed: pip install faust-streaming") from exc
    return faust


class FaustTables:
    """Adapts Faust tables to :class:`pipeline.worker.processor.Tables`.

    Faust routes a table write to the changelog partition of the *current event*; in a batch
    we set that event explicitly, so each write lands in the partition its message came from.
    """

    def __init__(self, seen: Any, hourly: Any) -> None:
        from faust.streams import _current_event

        self._current = _current_event
        self.seen: MutableMapping[str, int] = seen
        self._hourly = hourly

    def bind(self, msg: Message) -> None:
        self._current.set(weakref.ref(msg.handle))

    def load(self, key: str) -> Agg:
        return Agg.from_list(self._hourly.get(key))

    def store(self, key: str, agg: Agg) -> None:
        self._hourly[key] = agg.to_list()


def create_app(settings: Settings | None = None) -> Any:
    faust = _faust()
    settings = settings or Settings()
    config = Config.load(settings.config_dir)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="rocksdb://",
        datadir=str(settings.worker_data_dir),
        topic_partitions=settings.topic_partitions,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=0,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=settings.sink_batch_samples,
        producer_max_request_size=2 * settings.max_message_bytes,
    )
    usage = app.topic(settings.usage_topic, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.dlq_topic, key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")
    seen = app.Table("seen", default=None, key_type=str, value_type=int,
                     partitions=settings.topic_partitions)
    hourly = app.Table("hourly", default=None, key_type=str, value_type=list,
                       partitions=settings.topic_partitions)

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        fut = await dlq.send(key=key, value=value)
        await fut  # delivered before the source message can be acknowledged

    state: dict[str, BatchProcessor] = {}

    def processor() -> BatchProcessor:
        if "p" not in state:  # connect lazily: no I/O at import or app creation
            ex = DriverExecutor(settings.clickhouse_host, settings.clickhouse_port,
                                settings.clickhouse_database, settings.clickhouse_user,
                                settings.clickhouse_password.get_secret_value())
            limits = DecodeLimits(settings.max_message_bytes, settings.max_interval_s,
                                  settings.max_future_skew_s, settings.max_past_age_days)
            state["p"] = BatchProcessor(config.reference, FaustTables(seen, hourly),
                                        ClickHouseSink(ex), send_dead_letter,
                                        lambda: datetime.now(UTC), limits)
        return state["p"]

    @app.agent(usage)
    async def process(stream: Any) -> None:
        last_report = time.monotonic()
        async for events in stream.take_events(settings.sink_batch_samples,
                                               within=settings.sink_batch_seconds):
            proc = processor()
            batch = [
                Message(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                        e.message.value,
                        datetime.fromtimestamp(e.message.timestamp, UTC)
                        if e.message.timestamp else None, e)
                for e in events
            ]
            await proc.process(batch)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                s = proc.stats
                log.info("processed messages=%d samples=%d duplicates=%d replayed=%d dlq=%d "
                         "ch_rows=%d", s.messages, s.samples, s.duplicates, s.replayed,
                         s.dead_letters, proc.sink.rows_written)

    return app


def run_worker(settings: Settings | None = None, loglevel: str = "info") -> None:
    faust = _faust()
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
