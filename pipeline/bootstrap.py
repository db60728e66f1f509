"""The one place that wires settings to adapters."""

from __future__ import annotations

from pathlib import Path

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway
from pipeline.settings import Settings, required


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
