"""A recording, in-memory fake of Stripe's HTTP layer for unit tests.

``FakeStripe`` subclasses ``stripe.HTTPClient`` and implements only ``request`` (the single
HTTP attempt), so it plugs into ``StripeClient(..., http_client=FakeStripe())`` exactly like
the real ``RequestsClient`` and the library's own ``request_with_retries`` (409/5xx/network
retries, ``Stripe-Should-Retry``) still runs around it.

State: customers (``cus_``), invoices (``in_``, status draft -> open -> void), invoice items
(``ii_``, attached to an invoice; ``amount_due`` is the sum of the invoice's items).

Idempotency like Stripe: a POST whose ``Idempotency-Key`` was already used with the same
method, path and parameters replays the first (successful) response and creates nothing; the
same key with different parameters or another endpoint answers 400 ``idempotency_error``.
Only executed, successful requests are stored under their key (a failure injected *before*
execution is not, like Stripe, which saves nothing when the endpoint never began executing).

Failure injection, checked in order before a request is executed::

    fake.fail(method="POST", path_prefix="/v1/invoiceitems", times=2, kind="429")

``kind`` is an HTTP status as a string ("400", "401", "402", "403", "404", "409", "429",
"500", "502", "503", ...) answered with a Stripe-shaped error body and nothing applied,
``"timeout_after_send"`` (the request is applied and stored, then the client gets the same
``APIConnectionError(should_retry=True)`` that ``RequestsClient`` raises on a read timeout)
or ``"timeout_before_send"`` (a connect timeout: nothing applied, also retryable).
``times=None`` fails every matching request; ``idempotency_key=`` matches only requests with
that key (one logical call and its retries); ``skip=n`` lets the first n matching requests
(retries count) through first; the first rule that matches and is not spent fires.
``code``/``message`` override the error body; ``should_retry`` sets the
``Stripe-Should-Retry`` response header. A "401" echoes the bearer token in its message (a
worst-case server) so tests can check that callers scrub it.

Every request is recorded in ``fake.requests`` as :class:`Recorded` (method, path,
idempotency key, params, outcome, status); the Authorization header is never recorded.
"""

from __future__ import annotations

import itertools
import json
import textwrap
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit

import requests
import stripe
from requests.structures import CaseInsensitiveDict

_KINDS_NETWORK = ("timeout_after_send", "timeout_before_send")
_PREFIX = {"customer": "cus", "invoice": "in", "invoiceitem": "ii"}


@dataclass(frozen=True)
class Recorded:
    method: str  # "GET" / "POST"
    path: str  # "/v1/invoiceitems"
    idempotency_key: str | None
    params: dict[str, Any]
    # "ok", "replayed", "idempotency_error", "error" (the fake endpoint refused it),
    # "injected_<status>", "timeout_after_send", "timeout_before_send"
    outcome: str
    status: int | None  # None when the client saw a network error


@dataclass
class FailureRule:
    kind: str
    method: str | None = None
    path_prefix: str = ""
    times: int | None = 1
    skip: int = 0
    code: str | None = None
    message: str | None = None
    should_retry: bool | None = None
    idempotency_key: str | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str, key: str | None) -> bool:
        return (
            (self.method is None or self.method.upper() == method)
            and path.startswith(self.path_prefix)
            and (self.idempotency_key is None or self.idempotency_key == key)
        )

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times


class _StripeErrorResponse(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        body: dict[str, Any] = {"type": type_, "message": message}
        if code:
            body["code"] = code
        self.body = {"error": body}


def _decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][c]=v`` form fields into nested dicts (lists stay dicts keyed "0", "1", ...)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class FakeStripe(stripe.HTTPClient):
    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.invoice_items: dict[str, dict[str, Any]] = {}
        self._created: dict[str, list[str]] = {k: [] for k in _PREFIX}
        self._sent: dict[str, int] = {}
        # key -> (method, path, params, status, body)
        self._idem: dict[str, tuple[str, str, dict[str, Any], int, str]] = {}
        self.rules: list[FailureRule] = []
        self.requests: list[Recorded] = []

    # -- failure injection and inspection ------------------------------------------------

    def fail(
        self,
        method: str | None = "POST",
        path_prefix: str = "",
        times: int | None = 1,
        kind: str = "500",
        *,
        skip: int = 0,
        code: str | None = None,
        message: str | None = None,
        should_retry: bool | None = None,
        idempotency_key: str | None = None,
    ) -> FailureRule:
        if kind not in _KINDS_NETWORK and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise ValueError(f"unknown failure kind {kind!r}")
        rule = FailureRule(
            kind, method, path_prefix, times, skip, code, message, should_retry, idempotency_key
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def forget_idempotency(self) -> None:
        """What Stripe does 24 hours after a key was used: a repeat creates a new object."""
        with self._lock:
            self._idem.clear()

    def clear_failures(self) -> None:
        with self._lock:
            self.rules.clear()

    def created(self, kind: str) -> list[dict[str, Any]]:
        """Objects really created (not replays), oldest first: customer, invoice, invoiceitem."""
        kind = {"item": "invoiceitem", "invoice_item": "invoiceitem"}.get(kind, kind)
        store = {
            "customer": self.customers,
            "invoice": self.invoices,
            "invoiceitem": self.invoice_items,
        }[kind]
        with self._lock:
            return [self._render(kind, store[i]) for i in self._created[kind]]

    def items_for(self, invoice_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i) for i in self.invoice_items.values() if i["invoice"] == invoice_id]

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render("invoice", self.invoices[invoice_id])

    def sent_count(self, invoice_id: str) -> int:
        return self._sent.get(invoice_id, 0)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method.upper())
        ]

    # -- stripe.HTTPClient ---------------------------------------------------------------

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        method = method.upper()
        parts = urlsplit(url)
        path = parts.path[parts.path.find("/v1/") :] if "/v1/" in parts.path else parts.path
        query = post_data if method == "POST" else parts.query
        if isinstance(query, bytes):
            query = query.decode()
        params = _decode_form(parse_qsl(query or "", keep_blank_values=True))
        hdrs = CaseInsensitiveDict(headers or {})
        key = hdrs.get("Idempotency-Key") if method == "POST" else None

        with self._lock:
            rule = self._pick_rule(method, path, key)
            if rule is not None and rule.kind == "timeout_before_send":
                self._record(method, path, key, params, "timeout_before_send", None)
                _raise_timeout(url, connect=True)
            if rule is not None and rule.kind != "timeout_after_send":
                status = int(rule.kind)
                body = _injected_body(status, rule, hdrs.get("Authorization", ""))
                self._record(method, path, key, params, f"injected_{status}", status)
                extra = {}
                if rule.should_retry is not None:
                    extra["Stripe-Should-Retry"] = "true" if rule.should_retry else "false"
                return self._response(status, body, extra)

            outcome, status, body_text, replayed = self._execute(method, path, key, params)
            if rule is not None:  # timeout_after_send: applied (and stored), answer lost
                self._record(method, path, key, params, "timeout_after_send", None)
                _raise_timeout(url, connect=False)
            self._record(method, path, key, params, outcome, status)
            return self._response_text(
                status, body_text, {"Idempotent-Replayed": "true"} if replayed else {}
            )

    def close(self) -> None:
        pass

    # -- internals -----------------------------------------------------------------------

    def _pick_rule(self, method: str, path: str, key: str | None) -> FailureRule | None:
        chosen = None
        for rule in self.rules:
            if rule.spent or not rule.matches(method, path, key):
                continue
            rule.seen += 1
            if chosen is None and rule.seen > rule.skip:
                rule.fired += 1
                chosen = rule
        return chosen

    def _record(
        self,
        method: str,
        path: str,
        key: str | None,
        params: dict[str, Any],
        outcome: str,
        status: int | None,
    ) -> None:
        self.requests.append(Recorded(method, path, key, params, outcome, status))

    def _response(
        self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> tuple[str, int, Mapping[str, str]]:
        return self._response_text(status, json.dumps(body), extra or {})

    def _response_text(
        self, status: int, text: str, extra: dict[str, str]
    ) -> tuple[str, int, Mapping[str, str]]:
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
            {"Content-Type": "application/json", "Request-Id": f"req_fake{next(self._ids)}"}
        )
        headers.update(extra)
        return text, status, headers

    def _execute(
        self, method: str, path: str, key: str | None, params: dict[str, Any]
    ) -> tuple[str, int, str, bool]:
        """Apply one request: (outcome, status, body, replayed)."""
        if key is not None and key in self._idem:
            m, p, prev_params, status, body = self._idem[key]
            if (m, p) != (method, path):
                err = _StripeErrorResponse(
                    400,
                    "idempotency_error",
                    f"Keys for idempotent requests can only be used for the same endpoint "
                    f"they were first used for ('{m} {p}' vs '{method} {path}').",
                )
                return "idempotency_error", 400, json.dumps(err.body), False
            if prev_params != params:
                err = _StripeErrorResponse(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                )
                return "idempotency_error", 400, json.dumps(err.body), False
            return "replayed", status, body, True
        try:
            status, obj = self._route(method, path, params)
        except _StripeErrorResponse as e:
            return "error", e.status, json.dumps(e.body), False
        body = json.dumps(obj)
        if key is not None:
            self._idem[key] = (method, path, params, status, body)
        return "ok", status, body, False

    def _new_id(self, kind: str) -> str:
        oid = f"{_PREFIX[kind]}_fake{next(self._ids):06d}"
        self._created[kind].append(oid)
        return oid

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seg = path.strip("/").split("/")  # ["v1", "invoices", "in_x", "finalize"]
        if len(seg) < 2 or seg[0] != "v1":
            raise _StripeErrorResponse(
                404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})."
            )
        resource, rest = seg[1], seg[2:]
        if method == "POST" and resource == "customers" and not rest:
            return 200, self._create_customer(params)
        if method == "POST" and resource == "invoices" and not rest:
            return 200, self._create_invoice(params)
        if method == "POST" and resource == "invoiceitems" and not rest:
            return 200, self._create_item(params)
        if method == "POST" and resource == "invoices" and len(rest) == 2:
            inv = self._get("invoice", rest[0])
            action = {"finalize": self._finalize, "send": self._send, "void": self._void}.get(
                rest[1]
            )
            if action is not None:
                return 200, action(inv, params)
        if method == "GET" and not rest and resource in ("invoices", "invoiceitems"):
            return 200, self._list(resource, params)
        if method == "GET" and len(rest) == 1:
            kind = {
                "customers": "customer",
                "invoices": "invoice",
                "invoiceitems": "invoiceitem",
            }.get(resource)
            if kind is not None:
                return 200, self._render(kind, self._get(kind, rest[0]))
        raise _StripeErrorResponse(
            404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})."
        )

    def _list(self, resource: str, params: dict[str, Any]) -> dict[str, Any]:
        if resource == "invoices":
            found = [
                self._render("invoice", i)
                for i in self.invoices.values()
                if "customer" not in params or i["customer"] == params["customer"]
            ]
        else:
            found = [
                self._render("invoiceitem", i)
                for i in self.invoice_items.values()
                if "invoice" not in params or i["invoice"] == params["invoice"]
            ]
        return {"object": "list", "data": found, "has_more": False, "url": f"/v1/{resource}"}

    def _get(self, kind: str, oid: str) -> dict[str, Any]:
        store = {
            "customer": self.customers,
            "invoice": self.invoices,
            "invoiceitem": self.invoice_items,
        }[kind]
        if oid not in store:
            raise _StripeErrorResponse(
                404, "invalid_request_error", f"No such {kind}: '{oid}'", "resource_missing"
            )
        return store[oid]

    def _render(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(obj))
        if kind == "invoice":
            items = [i for i in self.invoice_items.values() if i["invoice"] == obj["id"]]
            total = sum(int(i["amount"]) for i in items)
            out.update(
                subtotal=total,
                total=total,
                amount_due=total,
                amount_remaining=0 if obj["status"] in ("paid", "void") else total,
                lines={
                    "object": "list",
                    "data": [
                        {
                            "id": f"il_{i['id']}",
                            "object": "line_item",
                            "amount": i["amount"],
                            "currency": i["currency"],
                            "description": i["description"],
                            "invoice_item": i["id"],
                            "metadata": i["metadata"],
                        }
                        for i in items
                    ],
                    "has_more": False,
                    "url": f"/v1/invoices/{obj['id']}/lines",
                },
            )
        return out

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = self._new_id("customer")
        self.customers[cid] = {
            "id": cid,
            "object": "customer",
            "created": int(time.time()),
            "livemode": False,
            "name": params.get("name"),
            "email": params.get("email"),
            "metadata": params.get("metadata", {}),
        }
        return self._render("customer", self.customers[cid])

    def _create_invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise _StripeErrorResponse(
                400,
                "invalid_request_error",
                "Missing required param: customer.",
                "parameter_missing",
            )
        self._get("customer", customer)
        iid = self._new_id("invoice")
        self.invoices[iid] = {
            "id": iid,
            "object": "invoice",
            "created": int(time.time()),
            "livemode": False,
            "customer": customer,
            "currency": params.get("currency", "usd"),
            "status": "draft",
            "number": None,
            "collection_method": params.get("collection_method", "charge_automatically"),
            "days_until_due": int(params["days_until_due"]) if "days_until_due" in params else None,
            "auto_advance": params.get("auto_advance") == "true",
            "description": params.get("description"),
            "metadata": params.get("metadata", {}),
            "amount_paid": 0,
            "status_transitions": {"finalized_at": None, "voided_at": None},
        }
        return self._render("invoice", self.invoices[iid])

    def _create_item(self, params: dict[str, Any]) -> dict[str, Any]:
        for field in ("customer", "amount", "currency"):
            if field not in params:
                raise _StripeErrorResponse(
                    400,
                    "invalid_request_error",
                    f"Missing required param: {field}.",
                    "parameter_missing",
                )
        self._get("customer", params["customer"])
        invoice_id = params.get("invoice")
        if invoice_id:
            inv = self._get("invoice", invoice_id)
            if inv["status"] != "draft":
                raise _StripeErrorResponse(
                    400,
                    "invalid_request_error",
                    f"Invoice {invoice_id} is {inv['status']}: items can only be added to a draft.",
                    "invoice_not_editable",
                )
            if inv["customer"] != params["customer"] or inv["currency"] != params["currency"]:
                raise _StripeErrorResponse(
                    400,
                    "invalid_request_error",
                    "The invoice item's customer and currency must match the invoice's.",
                    "parameter_invalid",
                )
        try:
            amount = int(params["amount"])
        except ValueError:
            raise _StripeErrorResponse(
                400, "invalid_request_error", "Invalid integer: amount", "parameter_invalid_integer"
            ) from None
        iid = self._new_id("invoiceitem")
        self.invoice_items[iid] = {
            "id": iid,
            "object": "invoiceitem",
            "date": int(time.time()),
            "livemode": False,
            "customer": params["customer"],
            "invoice": invoice_id,
            "amount": amount,
            "currency": params["currency"],
            "quantity": 1,
            "description": params.get("description"),
            "metadata": params.get("metadata", {}),
        }
        return self._render("invoiceitem", self.invoice_items[iid])

    def _require(self, inv: dict[str, Any], allowed: tuple[str, ...], action: str) -> None:
        if inv["status"] not in allowed:
            raise _StripeErrorResponse(
                400,
                "invalid_request_error",
                f"You can only {action} an invoice whose status is {' or '.join(allowed)}; "
                f"invoice {inv['id']} is {inv['status']}.",
                "invoice_unexpected_state",
            )

    def _finalize(self, inv: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self._require(inv, ("draft",), "finalize")
        inv["status"] = "open"
        inv["number"] = f"FAKE-{len(self._created['invoice']):04d}-{inv['id'][-4:]}"
        inv["status_transitions"]["finalized_at"] = int(time.time())
        if "auto_advance" in params:
            inv["auto_advance"] = params["auto_advance"] == "true"
        return self._render("invoice", inv)

    def _send(self, inv: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self._require(inv, ("open", "paid"), "send")
        self._sent[inv["id"]] = self._sent.get(inv["id"], 0) + 1
        return self._render("invoice", inv)

    def _void(self, inv: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        self._require(inv, ("open", "uncollectible"), "void")
        inv["status"] = "void"
        inv["status_transitions"]["voided_at"] = int(time.time())
        return self._render("invoice", inv)


def _injected_body(status: int, rule: FailureRule, authorization: str) -> dict[str, Any]:
    if status == 429:
        type_, code, msg = (
            "invalid_request_error",
            "rate_limit",
            "Too many requests made to the API too quickly.",
        )
    elif status >= 500:
        type_, code, msg = "api_error", None, "An unknown error occurred (injected)."
    elif status == 401:
        token = authorization.removeprefix("Bearer ")
        type_, code, msg = "invalid_request_error", None, f"Invalid API Key provided: {token}"
    elif status == 402:
        type_, code, msg = "card_error", "card_declined", "Your card was declined."
    elif status == 409:
        type_, code, msg = (
            "idempotency_error",
            "idempotency_key_in_use",
            ("There is currently another in-progress request using this Idempotent Key."),
        )
    elif status == 404:
        type_, code, msg = "invalid_request_error", "resource_missing", "No such object (injected)."
    else:
        type_, code, msg = (
            "invalid_request_error",
            "parameter_invalid",
            f"Invalid request (injected {status}).",
        )
    return _StripeErrorResponse(status, type_, rule.message or msg, rule.code or code).body


def _raise_timeout(url: str, *, connect: bool) -> NoReturn:
    """Raise what ``stripe.RequestsClient`` raises for a requests timeout (retryable)."""
    host = urlsplit(url).netloc
    cause: requests.exceptions.RequestException
    if connect:
        cause = requests.exceptions.ConnectTimeout(
            f"HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded "
            "(connect timeout=80)"
        )
    else:
        cause = requests.exceptions.ReadTimeout(
            f"HTTPSConnectionPool(host='{host}', port=443): Read timed out. (read timeout=80)"
        )
    msg = (
        textwrap.fill(
            "Unexpected error communicating with Stripe.  If this problem persists, let us know "
            "at support@stripe.com."
        )
        + f"\n\n(Network error: {type(cause).__name__}: {cause})"
    )
    raise stripe.APIConnectionError(msg, should_retry=True) from cause
