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
    from pipeline.billing.invoicing import Invoicer
    from pipeline.billing.run import BillingRun
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
    )
