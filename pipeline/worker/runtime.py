"""The worker's runtime: a kafka-python consumer group feeding :class:`BatchProcessor` in
batches, the state in memory with its own changelog topics.

It replaces Faust's stream and tables, which cannot reach the throughput target: on the bench
topic Faust's stream with a do-nothing agent takes about 21,000 samples/s, under the 50,000
asked of the whole worker (``make bench``: ``faust_bare_samples_per_s``; README "Stream
runtime"). What Faust gave is kept: one consumer group, each partition's state restored from a
compacted changelog before its messages are processed, offsets committed only after
everything a batch caused is durable.

Write order, per batch (the contract; the steps are numbered the same in the code, in
:mod:`pipeline.worker.processor` and :mod:`pipeline.worker.sink`):

1. Poll a batch: up to ``GPUMETER_SINK_BATCH_SAMPLES`` messages, about ``..._BYTES`` of them,
   or ``..._SECONDS`` of waiting.
   A rebalance while polling drops what was polled (positions go back to the committed
   offsets; the new owner reads them). Decode; rejects are sent to the dead-letter topic.
2. Fold into the in-memory state (dedupe memory, hourly aggregates); each changed key is
   remembered for step 4.
3. Write the raw rows and the ABSOLUTE hourly values to ClickHouse, retried until it has them.
4. Send each changed state key once (its last value, or a tombstone) to its changelog
   partition, and wait until Kafka acknowledged them and the batch's dead letters.
5. Commit the batch's offsets.

A crash anywhere before 5 replays the batch from the committed offsets on the recovered state:
before 4 the state is that of the previous batch and the replay folds the batch again, writing
the same absolute values and versions (``ReplacingMergeTree`` collapses them); after 4 the
state already holds the batch, its identities are found at their own positions and the replay
is a no-op for the counts. Nothing is lost or counted twice.

**Assignment.** A partition assigned to this worker is restored from the beginning of its
changelogs to their ends before any of its messages is processed, unless this worker holds it
and the changelogs end where this worker's last checkpoint left them (nobody else wrote since). A
partition with committed offsets but empty changelogs has lost its state and is read again
from its beginning (:meth:`Runtime._replay_without_state`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

from pipeline.adapters.kafka import make_producer, partition_lags
from pipeline.settings import Settings
from pipeline.worker import changelog
from pipeline.worker.liveness import Liveness, Observation
from pipeline.worker.metrics import WorkerMetrics
from pipeline.worker.processor import BatchProcessor, Message
from pipeline.worker.sink import PermanentClickHouseError
from pipeline.worker.tables import in_memory_tables

log = logging.getLogger("gpumeter.worker")

POLL_RECORDS = 2_000  # records per poll inside a batch: how far a batch overshoots its bytes
EXIT_CONFIG = 78  # EX_CONFIG: a setting contradicts the topic; no retry helps
EXIT_CLICKHOUSE_PERMANENT = EXIT_CONFIG  # ClickHouse refuses our writes; no retry helps
EXIT_HUNG = 75  # EX_TEMPFAIL: hung (liveness.py); a restart replays what was not committed
EXIT_CRASH = 70  # EX_SOFTWARE: a batch failed; nothing of it was committed

FETCH_BYTES = changelog.FETCH_BYTES  # per partition and request (1 MiB starves the worker)


def _die(code: int, message: str, *args: Any, exc_info: bool = False) -> None:
    log.critical(message, *args, exc_info=exc_info)
    logging.shutdown()
    os._exit(code)


class Runtime:
    """One worker process: consumer, producer, state, processor, metrics and watchdog."""

    def __init__(self, settings: Settings, make_processor: Any, metrics: WorkerMetrics) -> None:
        self.s = settings
        self.metrics = metrics
        self.tables, self.stores = in_memory_tables()
        self.make_processor = make_processor
        self.processor: BatchProcessor | None = None
        self.checkpoint: changelog.Checkpoint | None = None
        self.consumer: Any = None
        self.generation = 0  # bumped at every rebalance: a batch polled across one is dropped
        self.stopping = False
        self.in_batch = False
        self.recovering = False
        self.recovery_left: int | None = None
        self.backlog = 0
        self.liveness = Liveness(
            settings.stall_timeout_s, settings.recovery_timeout_s, time.monotonic()
        )

    # -- rebalance -------------------------------------------------------------------------
    def on_revoked(self, revoked: Any) -> None:
        self.generation += 1

    def on_assigned(self, assigned: Any) -> None:
        """Restore the newly assigned partitions from their changelogs (see the docstring)."""
        self.generation += 1
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.s.usage_topic)
        for p in self.stores["seen"].held() - set(mine):
            for store in self.stores.values():
                store.drop(p)
        self.tables.forget_index()
        self.liveness.progressed(time.monotonic())
        log.info("assigned partitions=%s", ",".join(map(str, mine)) or "none")
        assert self.checkpoint is not None
        stale = self._stale(mine)
        if stale:
            self.recovering = True
            try:
                ends = changelog.recover(self.s, self.stores, stale, self._recovery_left)
            finally:
                self.recovering = False
                self.recovery_left = None
            self.checkpoint.written_to.update(ends)
            self.liveness.progressed(time.monotonic())
            self._replay_without_state(
                [p for p in stale if not any(ends[k] for k in ends if k[1] == p)]
            )

    def _replay_without_state(self, empty: list[int]) -> None:
        """Partitions with committed offsets but nothing in their changelogs have lost their
        state (a worker from before the changelogs, or the changelog topics deleted):
        continuing from the committed offsets would write hourly values counted from zero over
        the right ones. They are read again from their beginning instead, which rebuilds the
        state (the usage topic keeps its records without time limit; versions and dedupe make
        the replay exact)."""
        from kafka.structs import TopicPartition

        if not empty:
            return
        s = self.s
        committed = {
            p: c for p, c, _ in partition_lags(s.kafka_bootstrap, s.worker_id, s.usage_topic)
        }
        for p in empty:
            if committed.get(p, 0) > 0:
                log.warning(
                    "partition %d: offsets committed up to %d but no state in the changelog; "
                    "reading the partition again from its beginning to rebuild the state",
                    p,
                    committed[p],
                )
                self.consumer.seek_to_beginning(TopicPartition(self.s.usage_topic, p))

    def _recovery_left(self, n: int) -> None:
        self.recovery_left = n

    def _stale(self, partitions: list[int]) -> list[int]:
        """The partitions whose state must be read from the changelog: those not held, and
        those whose changelog someone else wrote to since this worker's last checkpoint."""
        assert self.checkpoint is not None
        if not partitions:
            return []
        held = self.stores["seen"].held()
        ends = changelog.ends(self.s, partitions)
        known = self.checkpoint.written_to
        return [
            p
            for p in partitions
            if p not in held or any(ends[k] != known.get(k) for k in ends if k[1] == p)
        ]

    # -- the loop ----------------------------------------------------------------------------
    def _poll(self) -> list[Any]:
        """Step 1: up to ``sink_batch_samples`` records holding at most about
        ``sink_batch_bytes`` (a poll takes at most :data:`POLL_RECORDS`, so a batch overshoots
        the bytes by less than that many messages; a batch's decoded samples take many times
        their JSON, so the bytes bound the worker's memory whatever the message size). Once
        ``sink_batch_seconds`` passed since the first, the batch closes unless the messages
        waiting on the assigned partitions would fill it: a backlog (catching up) fills batches
        to the limit; a live stream, whose few waiting messages would only keep the batch open
        while more arrive, is processed within the window. A rebalance inside a poll drops what
        earlier polls returned (positions went back to the committed offsets); what that poll
        returned is of the new assignment."""
        limit, within = self.s.sink_batch_samples, self.s.sink_batch_seconds
        records: list[Any] = []
        size = 0
        deadline = None
        while len(records) < limit and size < self.s.sink_batch_bytes and not self.stopping:
            if deadline is None:
                wait = 1.0
            elif time.monotonic() < deadline:
                wait = deadline - time.monotonic()
            elif sum(self._lags().values()) >= limit - len(records):
                wait = 0.0  # a backlog: take what is fetched without waiting
            else:
                break
            generation = self.generation
            polled = self.consumer.poll(
                timeout_ms=int(wait * 1000), max_records=min(POLL_RECORDS, limit - len(records))
            )
            if self.generation != generation:
                records, size = [], 0
            for batch in polled.values():
                records.extend(batch)
                size += sum(len(r.value or b"") for r in batch)
            if records and deadline is None:
                deadline = time.monotonic() + within
            if not records and deadline is None:
                break  # nothing waiting: let the caller update its gauges
            if not polled and deadline is not None and time.monotonic() >= deadline:
                break
        return records

    async def _process(self, records: list[Any]) -> None:
        assert self.processor is not None and self.checkpoint is not None
        batch = [
            Message(
                r.topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                datetime.fromtimestamp(r.timestamp / 1000, UTC) if r.timestamp > 0 else None,
            )
            for r in records
        ]
        self.in_batch = True
        try:
            # 1.-3. decode, dead letters, fold, ClickHouse
            await self.processor.process(batch)
            # 4. changed state and dead letters acknowledged by Kafka
            t = time.perf_counter()
            self.checkpoint.state(self.stores)
            self.checkpoint.flush()
            self.metrics.stage_seconds.labels("checkpoint").inc(time.perf_counter() - t)
        except PermanentClickHouseError as exc:
            _die(
                EXIT_CLICKHOUSE_PERMANENT,
                "ClickHouse refuses the worker's writes; fix the cause and restart (nothing was "
                "committed, the batch will be replayed): %s",
                exc,
            )
        except Exception:  # noqa: BLE001 - crash-only: nothing committed, replayed on restart
            _die(EXIT_CRASH, "batch processing failed; exiting without committing", exc_info=True)
        # 5. commit
        t = time.perf_counter()
        self._commit(records)
        self.metrics.stage_seconds.labels("commit").inc(time.perf_counter() - t)
        self.in_batch = False
        self.liveness.progressed(time.monotonic())

    def _commit(self, records: list[Any]) -> None:
        from kafka.errors import CommitFailedError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        last: dict[int, int] = {}
        for r in records:
            last[r.partition] = max(last.get(r.partition, -1), r.offset)
        offsets = {
            TopicPartition(self.s.usage_topic, p): OffsetAndMetadata(o + 1, "", -1)
            for p, o in last.items()
        }
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # the group moved on without us: the new owner replays the batch on the state in
            # the changelog; the next poll rejoins (and restores what another worker changed)
            log.warning("offsets not committed, the group rebalanced: %s", exc)
            return
        for p, o in last.items():
            self.metrics.committed.labels(str(p)).set(o + 1)

    def _lags(self) -> dict[int, int]:
        """Messages waiting per assigned partition (end offset seen by the last fetch minus
        position), for the partitions where both are known."""
        from kafka.errors import KafkaError

        lags = {}
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except KafkaError:  # not known yet (just assigned): the next round has it
                continue
            if position is not None:
                lags[tp.partition] = max(0, hw - position)
        return lags

    def _gauges(self) -> None:
        """Lag per assigned partition and the dedupe memory's size; ``backlog`` feeds the
        watchdog."""
        lags = self._lags()
        for partition, lag in lags.items():
            self.metrics.lag.labels(str(partition)).set(lag)
        self.backlog = sum(lags.values())
        self.metrics.dedupe_held.set(self.tables.buckets_held())

    async def run(self) -> None:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        s = self.s
        changelog.ensure(s)
        producer = make_producer(  # acks=all, idempotent
            s.kafka_bootstrap,
            linger_ms=5,
            batch_size=1024 * 1024,
            max_request_size=2 * s.max_message_bytes,
            client_id=f"{s.worker_id}-producer",
        )
        self.checkpoint = changelog.Checkpoint(s, producer)
        checkpoint = self.checkpoint

        async def send_dead_letter(key: bytes | None, value: bytes) -> None:
            checkpoint.dead_letter(key, value)  # acknowledged in step 4, before the commit

        self.processor = self.make_processor(self.tables, send_dead_letter)
        self.consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.worker_id,
            client_id=f"{s.worker_id}-{os.getpid()}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=4 * FETCH_BYTES,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, s.session_timeout_s / 4) * 1000),
            max_poll_interval_ms=30 * 60 * 1000,  # a batch may wait out a ClickHouse outage
        )
        runtime = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                runtime.on_revoked(revoked)

            def on_partitions_assigned(self, assigned: Any) -> None:
                runtime.on_assigned(assigned)

        self.consumer.subscribe([s.usage_topic], listener=Listener())
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        last_report = 0.0
        try:
            while not self.stopping:
                records = self._poll()
                if records:
                    await self._process(records)
                self._gauges()
                if records and time.monotonic() - last_report > 5:
                    last_report = time.monotonic()
                    self._report()
        finally:
            self.consumer.close()
            producer.close(timeout=10)
        log.info("stopped")

    def _report(self) -> None:
        assert self.processor is not None
        st, sink = self.processor.stats, self.processor.sink
        log.info(
            "processed messages=%d samples=%d duplicates=%d replayed=%d dlq=%d ch_rows=%d "
            "recalled=%d",
            st.messages, st.samples, st.duplicates, st.replayed, st.dead_letters,
            sink.rows_written, sink.recalled,
        )  # fmt: skip

    def _watchdog(self) -> None:
        """Liveness (pipeline/worker/liveness.py): exit when hung, so that the supervisor
        restarts the worker and the uncommitted messages are replayed."""
        while True:
            time.sleep(5.0)
            why = self.liveness.check(
                Observation(
                    now=time.monotonic(),
                    in_batch=self.in_batch,
                    recovering=self.recovering,
                    recovery_remaining=self.recovery_left,
                    backlog=self.backlog,
                )
            )
            if why:
                _die(EXIT_HUNG, "%s; exiting so that the supervisor restarts the worker", why)

    def stop(self, *_: Any) -> None:
        """SIGTERM/SIGINT: finish the batch in hand, commit it, leave the group."""
        self.stopping = True


GC_THRESHOLDS = (50_000, 20, 10)  # allocations per young collection; collections per older


def tune_gc() -> None:
    """Cyclic garbage collection sized for a batch worker. A batch keeps some 10^5 container
    objects alive until it ends (records, samples, keys, rows); with Python's default
    thresholds (a young collection every 700 allocations) each is traced again and again while
    it lives, about a fifth of the worker's time on the bench's messages. Here a young
    collection comes every 50,000 allocations, and what start-up loaded (modules, schemas,
    reference data) is frozen out of every collection. Cycles are still collected, later."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(settings: Settings, make_processor: Any, metrics: WorkerMetrics) -> None:
    tune_gc()
    runtime = Runtime(settings, make_processor, metrics)
    signal.signal(signal.SIGTERM, runtime.stop)
    signal.signal(signal.SIGINT, runtime.stop)
    asyncio.run(runtime.run())
