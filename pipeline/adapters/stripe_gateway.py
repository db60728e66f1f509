"""Stripe through the official ``stripe`` library (stripe-mock in tests and the local stack).

Every request that creates something carries an idempotency key derived from what it bills
(tenant, period, line and amount), so a retried or repeated request never creates a second
object in Stripe. Transient failures (rate limits, 5xx, network) are retried by the library
with backoff; the API key is a secret and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr


def _stripe() -> Any:
    try:
        import stripe
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("the stripe library is not installed: pip install stripe") from exc
    return stripe


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
    ) -> None:
        stripe = _stripe()
        kwargs: dict[str, Any] = {
            "base_addresses": {"api": api_base},
            "max_network_retries": max_network_retries,
        }
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._client = stripe.StripeClient(api_key.get_secret_value(), **kwargs)

    def ensure_customer(self, tenant_id: str, name: str, email: str | None, idem: str) -> str:
        params: dict[str, Any] = {"name": name, "metadata": {"tenant_id": tenant_id}}
        if email:
            params["email"] = email
        cus = self._client.v1.customers.create(params=params, options={"idempotency_key": idem})
        return str(cus.id)

    def create_invoice(
        self, customer_id: str, currency: str, metadata: dict[str, str], description: str, idem: str
    ) -> StripeInvoice:
        inv = self._client.v1.invoices.create(
            params={
                "customer": customer_id,
                "currency": currency.lower(),
                "collection_method": "send_invoice",
                "days_until_due": 30,
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "description": description,
                "metadata": metadata,
            },
            options={"idempotency_key": idem},
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
        item = self._client.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "invoice": invoice_id,
                "amount": amount_minor,
                "currency": currency.lower(),
                "description": description,
                "metadata": metadata,
            },
            options={"idempotency_key": idem},
        )
        return str(item.id)

    def finalize(self, invoice_id: str, idem: str) -> StripeInvoice:
        inv = self._client.v1.invoices.finalize_invoice(
            invoice_id, params={"auto_advance": False}, options={"idempotency_key": idem}
        )
        return StripeInvoice(str(inv.id), str(inv.status))


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
