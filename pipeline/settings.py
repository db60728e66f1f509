"""Runtime settings, read from the environment (prefix ``GPUMETER_``).

Secrets are ``SecretStr`` so that they never appear in reprs or logs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "GPUMETER_"


class SettingsError(Exception):
    """A setting the command cannot run without is missing or unusable."""


def required(value: SecretStr, field: str, purpose: str) -> SecretStr:
    """``value`` unless it is empty: then :class:`SettingsError` naming the variable."""
    if value.get_secret_value().strip():
        return value
    raise SettingsError(
        f"{ENV_PREFIX}{field.upper()} is not set: {purpose}. It has no default outside the "
        "local stack, whose test value is in infra/local.env (`make` and "
        '`eval "$(infra/stack.sh env)"` export it)'
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Kafka
    kafka_bootstrap: str = "localhost:19092"
    usage_topic: str = "gpu.usage.v1"
    dlq_topic: str = "gpu.usage.dlq"
    # collectors: usage no tenant is billed for (idle, unmapped namespaces, unknown accounts)
    unattributed_topic: str = "gpu.usage.unattributed"
    collector_state_dir: Path = REPO_ROOT / ".local" / "collector"  # spool + cursor per collector
    spool_max_bytes: int = 256 * 1024 * 1024  # not yet acknowledged by Kafka; then SpoolFull
    topic_partitions: int = 4
    worker_id: str = "gpumeter-worker"
    worker_data_dir: Path = REPO_ROOT / ".local" / "worker"
    worker_web_port: int = 16066
    # Prometheus metrics of the worker (/metrics); 0 turns them off. Bind 0.0.0.0 to be scraped
    # from another host. Workers sharing a host need one port each.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 16067
    # a batch: at most this many Kafka messages (each one sample or a node's report; the name
    # is kept for existing deployments) and about this many bytes of them, or what arrived
    # this many seconds after the first. The bytes bound the memory whatever the message size
    # (decoded samples take many times their JSON): on the bench month (~3.5 KB messages) a
    # batch is ~5,000 messages; 20,000 of them held ~110,000 samples of objects at once, for a
    # peak RSS of 1,034.6 MiB at 1,000,000 hourly keys (593.0 with the bytes bound) and no
    # more speed. One-sample messages (~0.6 KB) still fill 20,000 per batch.
    sink_batch_samples: int = Field(default=20_000, ge=1)
    sink_batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    # 0.25 s: p99 freshness 1.3 s at half the maximum rate (1 s gave 3.1 s), still at most
    # four inserts per second and table on a live stream
    sink_batch_seconds: float = 0.25
    # an hour stays open this long after it ends; later samples still count, marked late
    late_grace_s: int = 3600
    # the dedupe memory keeps identities whose start is within this of the partition's newest
    # record time; older ones are looked up in ClickHouse (pipeline/domain/dedupe.py)
    dedupe_horizon_s: int = Field(default=2 * 86_400, ge=3600)
    # consumer-group liveness: how soon a dead worker's partitions move to another
    session_timeout_s: float = 10.0
    # liveness: exit (for the supervisor to restart) after this long with a backlog and no batch
    stall_timeout_s: float = 30.0
    # liveness: exit after this long in a rebalance or table recovery that restores nothing
    recovery_timeout_s: float = 120.0

    # ClickHouse
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 19000
    clickhouse_database: str = "gpumeter"
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")

    # Stripe. The two secrets have no default: billing refuses to start without the API key
    # and the webhook endpoint without the signing secret (see :func:`required`); the local
    # stack (Makefile, infra/stack.sh, docker compose, the tests) sets stripe-mock's test
    # values from infra/local.env.
    stripe_api_key: SecretStr = SecretStr("")
    stripe_api_base: str = "http://127.0.0.1:12111"
    stripe_max_retries: int = 4  # rate limits, 5xx and network errors, with backoff
    stripe_threads: int = 4  # invoices synced to Stripe concurrently by a billing run
    # webhook signing secret (whsec_...): events whose signature does not verify are refused
    stripe_webhook_secret: SecretStr = SecretStr("")

    # Billing: a draft invoice stays open (and follows late usage) this long after its
    # period ends; the first billing run after that finalizes it and sends it through Stripe
    draft_grace_h: int = 72

    # Finance API: bearer tokens, "token=role[:subject]" separated by commas (roles: finance;
    # team:<cost centre>; partner:<id>). Only SHA-256 digests of tokens are kept in memory.
    api_tokens: SecretStr = SecretStr("")
    api_host: str = "127.0.0.1"
    api_port: int = 18080
    # Team dashboard (/dashboard): the key that signs its session cookies (no default: the API
    # refuses to start without one of at least 32 characters; the local stack's is in
    # infra/local.env) and how long a session lasts after logging in with a token.
    dashboard_secret: SecretStr = SecretStr("")
    dashboard_session_minutes: int = Field(default=30, ge=1, le=720)

    # Partner exports (docs/exports.md). A partner sees each consumer under HMAC-SHA256 of the
    # (partner, consumer) pair with this key: no default outside the local stack (a known key
    # would let anyone map pseudonyms back to tenants); changing it renames every consumer.
    export_pseudonym_key: SecretStr = SecretStr("")
    # pushing exports to partners' buckets: the S3-compatible endpoint ('' = AWS) and its
    # credentials (the secret has no default outside the local stack)
    s3_endpoint_url: str = "http://127.0.0.1:18333"
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # corrections look back this far for delivered exports (older samples are refused anyway)
    export_lookback_days: int = 400
    # the FinOps Foundation's focus-validator, in its own virtual environment
    focus_validator_venv: Path = REPO_ROOT / ".local" / "focus-validator" / "venv"

    # Reference data and outputs
    config_dir: Path = REPO_ROOT / "config"
    out_dir: Path = REPO_ROOT / "out"

    # validation limits
    max_interval_s: int = Field(default=3600, description="longest interval one sample may cover")
    max_future_skew_s: int = 3600
    max_past_age_days: int = 400
    max_message_bytes: int = 1_000_000

    def isolated(self, name: str, root: Path) -> Settings:
        """A copy with its own ClickHouse database, topics, consumer group and folders under
        ``root``: for tests, fault runs and benchmarks that share one local stack."""
        return self.model_copy(
            update={
                "clickhouse_database": f"gpumeter_{name}",
                "usage_topic": f"{self.usage_topic}.{name}",
                "dlq_topic": f"{self.dlq_topic}.{name}",
                "unattributed_topic": f"{self.unattributed_topic}.{name}",
                "collector_state_dir": root / "collector",
                "worker_id": f"{self.worker_id}-{name}",
                "worker_data_dir": root / "worker",
                "out_dir": root / "out",
            }
        )
