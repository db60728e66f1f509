"""Stable error codes.

Codes are part of the public contract: finance tooling, dashboards and the dead-letter topic
match on them, so a code is never renamed or reused. Add new ones at the end.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a usage event was dead-lettered (``reason`` header and field on the DLQ)."""

    MESSAGE_TOO_LARGE = "message_too_large"
    MALFORMED_JSON = "malformed_json"
    EMPTY_BATCH = "empty_batch"
    INVALID_ENVELOPE = "invalid_envelope"
    UNSUPPORTED_SPECVERSION = "unsupported_specversion"
    UNSUPPORTED_TYPE = "unsupported_type"
    INVALID_DATA = "invalid_data"
    UNKNOWN_GPU_MODEL = "unknown_gpu_model"
    UNKNOWN_MIG_PROFILE = "unknown_mig_profile"
    UNKNOWN_TENANT = "unknown_tenant"
    NON_POSITIVE_INTERVAL = "non_positive_interval"
    INTERVAL_TOO_LONG = "interval_too_long"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    KEY_MISMATCH = "key_mismatch"  # message key is not the tenant_id of its samples
    UNKNOWN_REGION = "unknown_region"  # region of no partner in config/partners.yaml
    REGION_PROVIDER_MISMATCH = "region_provider_mismatch"  # region is not the provider's
    # a deterministic failure while processing a valid-looking event (fold, building rows);
    # the detail holds the exception text
    PROCESSING_ERROR = "processing_error"
    # the message is not in the partition Kafka's default partitioner (murmur2) gives its key:
    # a producer with another partitioner (librdkafka's CRC32) would split a tenant
    WRONG_PARTITION = "wrong_partition"


class BillingErrorCode(StrEnum):
    """Finance-facing billing errors."""

    INVALID_PERIOD = "billing.invalid_period"
    PERIOD_NOT_CLOSED = "billing.period_not_closed"
    INVALID_RATE_CARD = "billing.invalid_rate_card"
    INVALID_REFERENCE_DATA = "billing.invalid_reference_data"
    INVALID_CONTRACT = "billing.invalid_contract"
    NO_PRICE = "billing.no_price_for_usage"
    UNKNOWN_TENANT = "billing.unknown_tenant"
    STRIPE_FAILED = "billing.stripe_failed"
    INVOICE_NOT_FOUND = "billing.invoice_not_found"
    INVALID_TRANSITION = "billing.invalid_status_transition"
    WEBHOOK_SIGNATURE = "billing.webhook_signature_invalid"
    UNAUTHORIZED = "billing.unauthorized"
    FORBIDDEN = "billing.forbidden"
    INVALID_REQUEST = "billing.invalid_request"
    # a verified Stripe webhook that is not an event we can apply (not a JSON object, no id
    # or type): 400, nothing recorded
    WEBHOOK_EVENT_INVALID = "billing.webhook_event_invalid"
    # a verified Stripe webhook whose application failed on our side: 500, nothing recorded,
    # Stripe retries it
    WEBHOOK_PROCESSING_FAILED = "billing.webhook_processing_failed"
    # a Stripe webhook about an invoice whose finalization the ledger has not recorded yet:
    # 503, Stripe retries it after the next billing run
    INVOICE_NOT_FINALIZED = "billing.invoice_not_finalized_yet"


class BillingError(Exception):
    """An error finance sees: a stable ``code`` and a message saying what is wrong."""

    def __init__(self, code: BillingErrorCode, message: str) -> None:
        super().__init__(f"[{code.value}] {message}")
        self.code = code
        self.message = message


class ExportErrorCode(StrEnum):
    """Partner-export errors (``gpumeter exports``, ``/partners/{id}/exports``)."""

    NOT_FOUND = "exports.not_found"  # no such partner, period or file (or not yours): 404
    # usage on a GPU model / region the partner's wholesale rate card has no price for
    NO_WHOLESALE_PRICE = "exports.no_wholesale_price"
    PERIOD_NOT_CLOSED = "exports.period_not_closed"  # delivering before period end + grace
    # a delivered export's files no longer match what was delivered: never rewritten
    DELIVERED_EXPORT_CHANGED = "exports.delivered_export_changed"
    DELIVERY_FAILED = "exports.delivery_failed"  # the partner's bucket refused or is missing


class ExportError(Exception):
    """A partner-export error: a stable ``code`` and a message saying what is wrong."""

    def __init__(self, code: ExportErrorCode, message: str) -> None:
        super().__init__(f"[{code.value}] {message}")
        self.code = code
        self.message = message


class ChargebackErrorCode(StrEnum):
    """Team cost report errors (``gpumeter chargeback``, ``/chargeback``, ``/dashboard``)."""

    INVALID_PERIOD = "chargeback.invalid_period"  # not YYYY-MM: 422
    INVALID_COST_CENTRE = "chargeback.invalid_cost_centre"  # not a cost-centre path: 422
    UNAUTHORIZED = "chargeback.unauthorized"  # no token or session, or an unknown one: 401
    FORBIDDEN = "chargeback.forbidden"  # a token whose role sees no cost (partner): 403
    # no report for that period, or a cost centre outside the caller's subtree: 404
    NOT_FOUND = "chargeback.not_found"
    INVALID_REQUEST = "chargeback.invalid_request"  # a login form or origin we refuse: 400
    INVALID_CAPACITY = "chargeback.invalid_capacity"  # config/capacity.yaml
    INVALID_BUDGET = "chargeback.invalid_budget"  # config/budgets.yaml


class ChargebackError(Exception):
    """A team cost report error: a stable ``code`` and a message saying what is wrong."""

    def __init__(self, code: ChargebackErrorCode, message: str) -> None:
        super().__init__(f"[{code.value}] {message}")
        self.code = code
        self.message = message
