"""Stripe through the official ``stripe`` library (stripe-mock in tests and the local stack).

Every request that creates or changes something carries an idempotency key derived from what
it sends (for an invoice item: our invoice, its revision, the line, amount, currency and
description), so a retried or repeated request never creates a second object in Stripe: Stripe
replays the first response for a key it has already seen, and a key is never sent again with
other parameters (Stripe refuses that for 24 hours).

Retries happen in two layers, both resending the *same* request with the *same* key:

* **The library** (``max_network_retries``, stripe-python 16 ``HTTPClient._should_retry``)
  retries, around each HTTP attempt:

  - network failures raised as ``APIConnectionError(should_retry=True)``: with the default
    ``RequestsClient`` that is any ``requests`` ``Timeout`` or ``ConnectionError`` (a connect
    failure, or a read timeout *after* Stripe got the request), but not SSL errors;
  - HTTP 409 (e.g. the same idempotency key still in flight) and every HTTP >= 500;
  - any response carrying ``Stripe-Should-Retry: true`` (Stripe sets it on some 429s, e.g.
    lock timeouts); ``Stripe-Should-Retry: false`` stops a retry even for a 409/5xx.

  It does **not** retry a plain 429 (rate limit) nor any other 4xx. Its backoff is fixed:
  ``0.5 s * 2**(n-1)`` with jitter, never less than 0.5 s, at most 5 s. Those delays are class
  constants read through ``HTTPClient.INITIAL_DELAY``/``MAX_DELAY`` by name in a private
  method, so they cannot be configured through public API: tests keep them short by using few
  retries (``max_network_retries``).

* **This module** retries only what the library leaves alone: HTTP 429 ``RateLimitError``
  (``rate_limit_retries`` times, exponential backoff with jitter from ``backoff_base_s`` up to
  ``backoff_max_s``, slept through the injectable ``sleep``). Each of those retries reruns the
  whole library call, which keeps its own 409/5xx/network retries.

Anything left over (retries exhausted, or a permanent error: 400/404 invalid request or
idempotency error, 401, 402 card error, 403) is raised as :class:`StripeSyncError`. The API key
is a secret: it is never logged, and it is scrubbed from every error message; the library's
exception is not chained (its body is the server's, and we do not control what it echoes).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import SecretStr

log = logging.getLogger(__name__)

T = TypeVar("T")

_KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]+")


def _stripe() -> Any:
    try:
        import stripe
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("the stripe library is not installed: pip install stripe") from exc
    return stripe


class StripeSyncError(Exception):
    """A Stripe call failed for good (permanent error) or after all retries (transient)."""

    def __init__(self, message: str, *, transient: bool, http_status: int | None, code: str):
        super().__init__(message)
        self.transient = transient
        self.http_status = http_status
        self.code = code


def _plain(metadata: Any) -> dict[str, Any]:
    """A StripeObject's metadata as a plain dict (StripeObject is not a dict)."""
    if metadata is None:
        return {}
    return dict(metadata.to_dict()) if hasattr(metadata, "to_dict") else dict(metadata)


@dataclass(frozen=True)
class StripeInvoice:
    id: str
    status: str


class StripeGateway:
    def __init__(
        self,
        api_key: SecretStr,
        api_base: str,
        max_network_retries: int = 3,
        http_client: Any = None,
        *,
        rate_limit_retries: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        stripe = _stripe()
        kwargs: dict[str, Any] = {
            "base_addresses": {"api": api_base},
            "max_network_retries": max_network_retries,
        }
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._client = stripe.StripeClient(api_key.get_secret_value(), **kwargs)
        self._key = api_key  # kept as SecretStr only to scrub messages
        self._rate_limit_retries = rate_limit_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._sleep = sleep

    def __repr__(self) -> str:
        return "StripeGateway(api_key=**********)"

    # -- public API ---------------------------------------------------------------------

    def ensure_customer(self, tenant_id: str, name: str, email: str | None, idem: str) -> str:
        params: dict[str, Any] = {"name": name, "metadata": {"tenant_id": tenant_id}}
        if email:
            params["email"] = email
        cus = self._call(
            f"create customer for tenant {tenant_id}",
            idem,
            lambda: self._client.v1.customers.create(
                params=params, options={"idempotency_key": idem}
            ),
        )
        return str(cus.id)

    def create_invoice(
        self, customer_id: str, currency: str, metadata: dict[str, str], description: str, idem: str
    ) -> StripeInvoice:
        params: dict[str, Any] = {
            "customer": customer_id,
            "currency": currency.lower(),
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "auto_advance": False,
            "pending_invoice_items_behavior": "exclude",
            "description": description,
            "metadata": metadata,
        }
        inv = self._call(
            f"create invoice for customer {customer_id}",
            idem,
            lambda: self._client.v1.invoices.create(
                params=params, options={"idempotency_key": idem}
            ),
        )
        return StripeInvoice(str(inv.id), str(inv.status))

    def add_item(
        self,
        customer_id: str,
        invoice_id: str,
        amount_minor: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        idem: str,
    ) -> str:
        params: dict[str, Any] = {
            "customer": customer_id,
            "invoice": invoice_id,
            "amount": amount_minor,
            "currency": currency.lower(),
            "description": description,
            "metadata": metadata,
        }
        item = self._call(
            f"add invoice item to {invoice_id}",
            idem,
            lambda: self._client.v1.invoice_items.create(
                params=params, options={"idempotency_key": idem}
            ),
        )
        return str(item.id)

    def finalize(self, invoice_id: str, idem: str) -> StripeInvoice:
        inv = self._call(
            f"finalize invoice {invoice_id}",
            idem,
            lambda: self._client.v1.invoices.finalize_invoice(
                invoice_id, params={"auto_advance": False}, options={"idempotency_key": idem}
            ),
        )
        return StripeInvoice(str(inv.id), str(inv.status))

    def send_invoice(self, invoice_id: str, idem: str) -> StripeInvoice:
        inv = self._call(
            f"send invoice {invoice_id}",
            idem,
            lambda: self._client.v1.invoices.send_invoice(
                invoice_id, options={"idempotency_key": idem}
            ),
        )
        return StripeInvoice(str(inv.id), str(inv.status))

    def void_invoice(self, invoice_id: str, idem: str) -> StripeInvoice:
        inv = self._call(
            f"void invoice {invoice_id}",
            idem,
            lambda: self._client.v1.invoices.void_invoice(
                invoice_id, options={"idempotency_key": idem}
            ),
        )
        return StripeInvoice(str(inv.id), str(inv.status))

    # -- recovery: what an earlier, interrupted sync created ----------------------------

    def find_invoice(
        self, customer_id: str, invoice_id: str, revision: int
    ) -> StripeInvoice | None:
        """The customer's Stripe invoice created for our ``invoice_id`` and revision (by its
        metadata), if any and not void: for recovering a sync older than Stripe's 24-hour
        idempotency window."""
        page = self._call(
            f"list invoices of {customer_id}",
            None,
            lambda: self._client.v1.invoices.list(params={"customer": customer_id, "limit": 100}),
        )
        for inv in page.auto_paging_iter():
            meta = _plain(inv.metadata)
            if (
                meta.get("invoice_id") == invoice_id
                and meta.get("revision") == str(revision)
                and inv.status != "void"
            ):
                return StripeInvoice(str(inv.id), str(inv.status))
        return None

    def items_of(self, stripe_invoice_id: str) -> dict[str, str]:
        """Our line id (metadata ``line_id``) -> Stripe invoice item id, for one invoice."""
        page = self._call(
            f"list items of {stripe_invoice_id}",
            None,
            lambda: self._client.v1.invoice_items.list(
                params={"invoice": stripe_invoice_id, "limit": 100}
            ),
        )
        out = {}
        for it in page.auto_paging_iter():
            line_id = _plain(it.metadata).get("line_id")
            if line_id:
                out[str(line_id)] = str(it.id)
        return out

    # -- retries and errors -------------------------------------------------------------

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with jitter in [d/2, d] for the given retry (1-based)."""
        delay = min(self._backoff_base_s * 2 ** (retry - 1), self._backoff_max_s)
        return delay * (0.5 + random.random() / 2)

    def _call(self, what: str, idem: str | None, fn: Callable[[], T]) -> T:
        if not self._key.get_secret_value().strip():
            raise StripeSyncError(
                f"Stripe {what}: no API key (GPUMETER_STRIPE_API_KEY is not set)",
                transient=False,
                http_status=None,
                code="no_api_key",
            )
        stripe = _stripe()
        retries = 0
        while True:
            try:
                return fn()
            except stripe.StripeError as exc:
                if isinstance(exc, stripe.RateLimitError) and retries < self._rate_limit_retries:
                    retries += 1
                    delay = self._backoff(retries)
                    log.warning(
                        "Stripe %s rate limited (HTTP %s); retry %d/%d in %.2fs",
                        what,
                        exc.http_status,
                        retries,
                        self._rate_limit_retries,
                        delay,
                    )
                    self._sleep(delay)
                    continue
                err = self._sync_error(what, idem, exc, retries)
            break
        # raised outside the except block so the library's exception is not chained
        raise err

    def _scrub(self, text: str) -> str:
        secret = self._key.get_secret_value()
        if secret:
            text = text.replace(secret, "[api key]")
        return _KEY_PATTERN.sub("[api key]", text)

    def _sync_error(
        self, what: str, idem: str | None, exc: Any, rate_limit_retries: int
    ) -> StripeSyncError:
        stripe = _stripe()
        status: int | None = exc.http_status
        stripe_code: str | None = exc.code
        if not stripe_code and exc.error is not None:
            stripe_code = getattr(exc.error, "code", None)
        if isinstance(exc, stripe.APIConnectionError):
            transient, code = bool(exc.should_retry), "network"
        elif isinstance(exc, stripe.RateLimitError):
            transient, code = True, stripe_code or "rate_limited"
        elif status == 409:
            transient, code = True, stripe_code or "conflict"
        elif (status is not None and status >= 500) or (
            status is None and type(exc) is stripe.APIError
        ):
            transient, code = True, stripe_code or "server_error"
        elif isinstance(exc, stripe.IdempotencyError):
            transient, code = False, "idempotency_error"
        elif isinstance(exc, stripe.AuthenticationError):
            transient, code = False, stripe_code or "authentication_error"
        elif isinstance(exc, stripe.PermissionError):
            transient, code = False, stripe_code or "permission_error"
        elif isinstance(exc, stripe.CardError):
            transient, code = False, stripe_code or "card_error"
        elif isinstance(exc, stripe.InvalidRequestError):
            transient, code = False, stripe_code or "invalid_request"
        else:
            transient, code = False, stripe_code or type(exc).__name__
        if transient:
            how = "retries exhausted"
            if rate_limit_retries:
                how += f" ({rate_limit_retries} rate-limit retries)"
        else:
            how = "permanent error, not retried"
        detail = exc.user_message or "<no message>"
        if exc.request_id:
            detail += f" [request {exc.request_id}]"
        message = (
            f"Stripe {what} failed ({how}): {type(exc).__name__} "
            f"HTTP {status if status is not None else '-'} code={code}"
            f"{f' idempotency_key={idem}' if idem else ''}: {detail}"
        )
        return StripeSyncError(
            self._scrub(message), transient=transient, http_status=status, code=code
        )


def recording_http_client() -> Any:
    """A real HTTP client that also records each request (method, path, idempotency key)."""
    stripe = _stripe()

    class Recording(stripe.RequestsClient):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.recorded: list[tuple[str, str, str | None]] = []

        def request(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
            self.recorded.append((method, url, (headers or {}).get("Idempotency-Key")))
            return super().request(method, url, headers, post_data)

    return Recording()
