"""The one place that wires settings to adapters: every entry point (CLI, API, worker, and the
development tools: demo, fault harness, bench) gets its ClickHouse executors, store, ledger,
Stripe gateway, billing run, invoicer and batch processor from here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.config import Config
from pipeline.domain.events import DecodeLimits
from pipeline.settings import Settings, required

if TYPE_CHECKING:
    from pipeline.adapters.s3 import S3Bucket
    from pipeline.api.auth import TokenAuth
    from pipeline.api.dashboard import Sessions
    from pipeline.billing.invoicing import Invoicer
    from pipeline.billing.run import BillingRun
    from pipeline.billing.teams import TeamCosts
    from pipeline.collectors.publish import SpooledOutlet
    from pipeline.exports.builder import Exporter
    from pipeline.worker.metrics import WorkerMetrics
    from pipeline.worker.processor import BatchProcessor, Tables


def executor(settings: Settings, chdb_path: Path | None = None) -> DriverExecutor | ChdbExecutor:
    if chdb_path is not None:
        return ChdbExecutor(chdb_path, settings.clickhouse_database)
    return DriverExecutor(
        settings.clickhouse_host,
        settings.clickhouse_port,
        settings.clickhouse_database,
        settings.clickhouse_user,
        settings.clickhouse_password.get_secret_value(),
    )


def store(settings: Settings) -> Store:
    return Store(executor(settings))


def stripe_gateway(settings: Settings, *, require_key: bool = True) -> StripeGateway:
    """The Stripe gateway; :class:`SettingsError` without ``GPUMETER_STRIPE_API_KEY`` unless
    the caller never sends a request (``require_key=False``: the API, whose webhooks do not
    call Stripe; a call without a key then fails with a Stripe error naming the setting)."""
    key = settings.stripe_api_key
    if require_key:
        key = required(key, "stripe_api_key", "billing sends invoices through Stripe with it")
    return StripeGateway(
        key,
        settings.stripe_api_base,
        max_network_retries=settings.stripe_max_retries,
    )


def ledger(st: Store) -> Ledger:
    return Ledger(st.ex)


def draft_grace(settings: Settings) -> timedelta:
    return timedelta(hours=settings.draft_grace_h)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def billing_run(
    settings: Settings,
    config: Config,
    st: Store,
    *,
    clock: Callable[[], datetime] = _utcnow,
    out_root: Path | None = None,
    progress: bool = False,
) -> BillingRun:
    """A billing run as every entry point gets it: Stripe, draft grace and Stripe threads
    from the settings."""
    from pipeline.billing.run import BillingRun

    return BillingRun(
        config,
        st,
        stripe_gateway(settings),
        settings.out_dir if out_root is None else out_root,
        clock,
        grace=draft_grace(settings),
        progress=progress,
        stripe_threads=settings.stripe_threads,
    )


def invoicer(
    settings: Settings,
    config: Config,
    st: Store,
    *,
    clock: Callable[[], datetime] = _utcnow,
    require_key: bool = True,
) -> Invoicer:
    """The invoice lifecycle outside a billing run (void, webhooks)."""
    from pipeline.billing.invoicing import Invoicer

    return Invoicer(
        config,
        st,
        ledger(st),
        stripe_gateway(settings, require_key=require_key),
        settings.out_dir,
        clock,
        draft_grace(settings),
    )


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        settings.max_message_bytes,
        settings.max_interval_s,
        settings.max_future_skew_s,
        settings.max_past_age_days,
    )


def batch_processor(
    settings: Settings,
    config: Config,
    tables: Tables,
    send_dead_letter: Callable[[bytes | None, bytes], Awaitable[None]],
    metrics: WorkerMetrics | None = None,
) -> BatchProcessor:
    """The worker's batch processor: validation limits, late grace and the ClickHouse sink
    from the settings."""
    from pipeline.worker.processor import BatchProcessor
    from pipeline.worker.sink import ClickHouseSink

    return BatchProcessor(
        config.reference,
        tables,
        ClickHouseSink(executor(settings)),
        send_dead_letter,
        _utcnow,
        decode_limits(settings),
        grace_s=settings.late_grace_s,
        metrics=metrics,
        horizon_s=settings.dedupe_horizon_s,
        partitions=settings.topic_partitions,
    )


def collector_outlet(settings: Settings, state_dir: Path) -> SpooledOutlet:
    """A collector's spool (``state_dir/spool``, bounded by ``spool_max_bytes``), cursor and
    idempotent producer (acks=all) with short timeouts, so that an unreachable Kafka keeps
    records in the spool instead of blocking the collector."""
    from pipeline.adapters.kafka import make_producer
    from pipeline.collectors.publish import SpooledOutlet, reachable, usage_topics
    from pipeline.collectors.spool import Spool

    def producer() -> object:
        reachable(settings.kafka_bootstrap)  # kafka-python leaks sockets when it cannot start
        return make_producer(
            settings.kafka_bootstrap,
            client_id="gpumeter-collector",
            linger_ms=5,
            bootstrap_timeout_ms=5_000,
            max_block_ms=5_000,
            request_timeout_ms=10_000,
            delivery_timeout_ms=20_000,
            reconnect_backoff_max_ms=2_000,
        )

    return SpooledOutlet(
        state_dir,
        Spool(state_dir / "spool", settings.spool_max_bytes),
        usage_topics(settings.usage_topic, settings.unattributed_topic),
        producer,
    )


def exporter(
    settings: Settings,
    config: Config,
    st: Store,
    *,
    clock: Callable[[], datetime] = _utcnow,
    require_key: bool = True,
) -> Exporter:
    """Partner exports: the wholesale cards of ``config/``, the pseudonym key, the output
    folder, the late grace before delivery and the corrections' lookback. The key is required
    unless the caller only reads exports (``require_key=False``: the API)."""
    from pipeline.adapters.export_ledger import ExportLedger
    from pipeline.exports.builder import Exporter
    from pipeline.exports.wholesale import load_wholesale

    key = settings.export_pseudonym_key
    if require_key:
        key = required(
            key,
            "export_pseudonym_key",
            "partner exports show each consumer under a keyed hash (HMAC) made with it",
        )
    return Exporter(
        config,
        load_wholesale(settings.config_dir, config.reference),
        st,
        ExportLedger(st.ex),
        settings.out_dir,
        key.get_secret_value().encode(),
        clock,
        grace=timedelta(seconds=settings.late_grace_s),
        lookback=timedelta(days=settings.export_lookback_days),
    )


def bucket(settings: Settings, url: str) -> S3Bucket:
    """A partner's bucket on the S3 endpoint of the settings (the secret is required)."""
    from pipeline.adapters.s3 import S3Bucket

    secret = required(
        settings.s3_secret_access_key,
        "s3_secret_access_key",
        "exports are pushed to partners' S3 buckets with it",
    )
    return S3Bucket(
        url,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret,
    )


def team_costs(
    settings: Settings,
    config: Config,
    st: Store,
    *,
    clock: Callable[[], datetime] = _utcnow,
) -> TeamCosts:
    """The team cost report (issue 11): capacity and budgets from ``config/``, the draft
    grace of the settings."""
    from pipeline.adapters.team_costs import TeamCostBook
    from pipeline.billing.team_config import load_team_config
    from pipeline.billing.teams import TeamCosts

    team = load_team_config(settings.config_dir, config)
    return TeamCosts(config, team, st, TeamCostBook(st.ex), clock, draft_grace(settings))


def dashboard_sessions(settings: Settings, auth: TokenAuth) -> Sessions:
    """The dashboard's session cookies: signed with ``GPUMETER_DASHBOARD_SECRET`` (required,
    at least 32 characters), valid ``GPUMETER_DASHBOARD_SESSION_MINUTES``."""
    from pipeline.api.dashboard import Sessions

    return Sessions.from_settings(settings, auth)
