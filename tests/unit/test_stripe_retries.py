"""StripeGateway retries, idempotency and errors against the in-memory FakeStripe.

The library's own retries (5xx, network) sleep 0.5 s or more each and that is not
configurable through public API, so these tests inject few of them and use
max_network_retries=2; the gateway's own 429 backoff is injected (no real sleep).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from pydantic import SecretStr

from pipeline.adapters.stripe_gateway import StripeGateway, StripeSyncError
from tests.stripe_fake import FakeStripe

pytestmark = pytest.mark.unit

API_KEY = "sk_test_secret_DO_NOT_LOG"
AMOUNTS = [1200, 350, 99, 10_000, 1]


def gateway(
    fake: FakeStripe, sleeps: list[float], *, retries: int = 2, rate_limit_retries: int = 3
) -> StripeGateway:
    return StripeGateway(
        SecretStr(API_KEY),
        "http://stripe.fake",
        max_network_retries=retries,
        http_client=fake,
        rate_limit_retries=rate_limit_retries,
        backoff_base_s=0.01,
        sleep=sleeps.append,
    )


def bill(gw: StripeGateway) -> tuple[str, str]:
    """One billing run for one tenant: customer, invoice, 5 items, finalize, send."""
    cus = gw.ensure_customer("t1", "Tenant One", "billing@t1.test", "cus:t1")
    inv = gw.create_invoice(cus, "USD", {"tenant_id": "t1"}, "GPU usage 2024-05", "inv:t1:2024-05")
    assert inv.status == "draft"
    for n, amount in enumerate(AMOUNTS):
        gw.add_item(cus, inv.id, amount, "USD", f"line {n}", {"line": str(n)}, f"item:t1:{n}")
    assert gw.finalize(inv.id, "fin:t1:2024-05").status == "open"
    assert gw.send_invoice(inv.id, "send:t1:2024-05").status == "open"
    return cus, inv.id


def keys_by_outcome(fake: FakeStripe, path: str) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = defaultdict(list)
    for r in fake.requests_to(path, "POST"):
        out[r.idempotency_key].append(r.outcome)
    return dict(out)


def test_retries_create_each_item_exactly_once_and_reuse_the_key() -> None:
    fake = FakeStripe()
    items = "/v1/invoiceitems"
    fake.fail("POST", items, times=2, kind="429", idempotency_key="item:t1:0")  # our layer
    fake.fail("POST", items, kind="500", idempotency_key="item:t1:1")  # the library
    fake.fail("POST", items, kind="timeout_after_send", idempotency_key="item:t1:2")  # library
    fake.fail("POST", items, kind="429", idempotency_key="item:t1:3")  # a 429, then ...
    fake.fail("POST", items, kind="timeout_after_send", idempotency_key="item:t1:3")  # a timeout
    fake.fail("POST", "/v1/invoices/", kind="502")  # finalize: one 502
    sleeps: list[float] = []

    _, invoice_id = bill(gateway(fake, sleeps))

    stored = fake.items_for(invoice_id)
    assert sorted(i["amount"] for i in stored) == sorted(AMOUNTS)
    assert len(fake.created("invoiceitem")) == len(AMOUNTS)
    inv = fake.invoice(invoice_id)
    assert inv["amount_due"] == inv["total"] == sum(AMOUNTS)
    assert inv["status"] == "open"
    assert fake.sent_count(invoice_id) == 1
    assert len(fake.created("customer")) == len(fake.created("invoice")) == 1

    by_key = keys_by_outcome(fake, items)
    assert by_key == {
        "item:t1:0": ["injected_429", "injected_429", "ok"],
        "item:t1:1": ["injected_500", "ok"],
        "item:t1:2": ["timeout_after_send", "replayed"],
        "item:t1:3": ["injected_429", "timeout_after_send", "replayed"],
        "item:t1:4": ["ok"],
    }
    finalize = fake.requests_to(f"/v1/invoices/{invoice_id}/finalize")
    assert [(r.idempotency_key, r.outcome) for r in finalize] == [
        ("fin:t1:2024-05", "injected_502"),
        ("fin:t1:2024-05", "ok"),
    ]
    assert len(sleeps) == 3  # only the 429s went through the gateway's backoff
    assert all(0 < s <= 0.04 for s in sleeps)
    assert all(rule.spent for rule in fake.rules)


def test_rerun_with_the_same_keys_creates_nothing_new() -> None:
    fake = FakeStripe()
    sleeps: list[float] = []
    gw = gateway(fake, sleeps)
    first = bill(gw)
    before = len(fake.requests)

    assert bill(gw) == first

    rerun = fake.requests[before:]
    assert len(rerun) == 1 + 1 + len(AMOUNTS) + 2
    assert {r.outcome for r in rerun} == {"replayed"}
    assert len(fake.created("customer")) == 1
    assert len(fake.created("invoice")) == 1
    assert len(fake.created("invoiceitem")) == len(AMOUNTS)
    assert fake.invoice(first[1])["amount_due"] == sum(AMOUNTS)
    assert fake.sent_count(first[1]) == 1


def test_permanent_400_is_not_retried() -> None:
    fake = FakeStripe()
    gw = gateway(fake, [])
    cus = gw.ensure_customer("t1", "Tenant One", None, "cus:t1")
    inv = gw.create_invoice(cus, "usd", {}, "d", "inv:t1")
    fake.fail("POST", "/v1/invoiceitems", kind="400", code="parameter_invalid_integer")

    with pytest.raises(StripeSyncError) as info:
        gw.add_item(cus, inv.id, 100, "usd", "line", {}, "item:t1:0")

    err = info.value
    assert (err.transient, err.http_status, err.code) == (False, 400, "parameter_invalid_integer")
    assert "add invoice item" in str(err) and "item:t1:0" in str(err)
    assert API_KEY not in str(err) and API_KEY not in repr(err)
    assert len(fake.requests_to("/v1/invoiceitems")) == 1
    assert fake.items_for(inv.id) == []


def test_same_key_different_params_is_a_permanent_idempotency_error() -> None:
    fake = FakeStripe()
    gw = gateway(fake, [])
    cus = gw.ensure_customer("t1", "Tenant One", None, "cus:t1")
    inv = gw.create_invoice(cus, "usd", {}, "d", "inv:t1")
    gw.add_item(cus, inv.id, 100, "usd", "line", {}, "item:t1:0")

    with pytest.raises(StripeSyncError) as info:
        gw.add_item(cus, inv.id, 999, "usd", "line", {}, "item:t1:0")

    assert (info.value.transient, info.value.http_status) == (False, 400)
    assert info.value.code == "idempotency_error"
    assert [i["amount"] for i in fake.items_for(inv.id)] == [100]


def test_500_on_every_attempt_exhausts_retries() -> None:
    fake = FakeStripe()
    gw = gateway(fake, [], retries=2)
    cus = gw.ensure_customer("t1", "Tenant One", None, "cus:t1")
    fake.fail("POST", "/v1/invoices", times=None, kind="500")

    with pytest.raises(StripeSyncError) as info:
        gw.create_invoice(cus, "usd", {}, "d", "inv:t1")

    err = info.value
    assert (err.transient, err.http_status, err.code) == (True, 500, "server_error")
    assert "retries exhausted" in str(err)
    assert API_KEY not in str(err)
    attempts = fake.requests_to("/v1/invoices")
    assert [r.outcome for r in attempts] == ["injected_500"] * 3  # 1 + max_network_retries
    assert {r.idempotency_key for r in attempts} == {"inv:t1"}
    assert fake.created("invoice") == []


def test_rate_limit_exhausts_the_gateway_retries() -> None:
    fake = FakeStripe()
    sleeps: list[float] = []
    gw = gateway(fake, sleeps, rate_limit_retries=2)
    fake.fail("POST", "/v1/customers", times=None, kind="429")

    with pytest.raises(StripeSyncError) as info:
        gw.ensure_customer("t1", "Tenant One", None, "cus:t1")

    assert (info.value.transient, info.value.http_status) == (True, 429)
    assert info.value.code == "rate_limit"
    assert len(fake.requests_to("/v1/customers")) == 3
    assert len(sleeps) == 2  # 0.01 s then 0.02 s, each jittered down to half
    assert 0.005 <= sleeps[0] <= 0.01 <= sleeps[1] <= 0.02


def test_429_with_stripe_should_retry_is_retried_by_the_library() -> None:
    fake = FakeStripe()
    sleeps: list[float] = []
    gw = gateway(fake, sleeps)
    fake.fail("POST", "/v1/customers", kind="429", code="lock_timeout", should_retry=True)

    gw.ensure_customer("t1", "Tenant One", None, "cus:t1")

    assert [r.outcome for r in fake.requests_to("/v1/customers")] == ["injected_429", "ok"]
    assert sleeps == []  # the library's backoff, not the gateway's


def test_network_failure_exhausted_is_transient() -> None:
    fake = FakeStripe()
    gw = gateway(fake, [], retries=1)
    fake.fail("POST", "/v1/customers", times=None, kind="timeout_before_send")

    with pytest.raises(StripeSyncError) as info:
        gw.ensure_customer("t1", "Tenant One", None, "cus:t1")

    assert (info.value.transient, info.value.http_status, info.value.code) == (
        True,
        None,
        "network",
    )
    assert fake.created("customer") == []


def test_authentication_error_never_shows_the_key() -> None:
    fake = FakeStripe()
    gw = gateway(fake, [])
    fake.fail("POST", "/v1/customers", kind="401")  # the fake echoes the bearer token

    with pytest.raises(StripeSyncError) as info:
        gw.ensure_customer("t1", "Tenant One", None, "cus:t1")

    err = info.value
    assert (err.transient, err.http_status, err.code) == (False, 401, "authentication_error")
    assert API_KEY not in str(err) and API_KEY not in repr(err) and API_KEY not in repr(gw)
    assert err.__cause__ is None and err.__context__ is None
    assert len(fake.requests) == 1


def test_void_moves_a_finalized_invoice_to_void() -> None:
    fake = FakeStripe()
    gw = gateway(fake, [])
    _, invoice_id = bill(gw)

    voided = gw.void_invoice(invoice_id, "void:t1:2024-05")

    assert voided.status == "void"
    assert fake.invoice(invoice_id)["status"] == "void"
    assert gw.void_invoice(invoice_id, "void:t1:2024-05").status == "void"  # replay
    with pytest.raises(StripeSyncError) as info:  # a second void, new key: wrong state
        gw.void_invoice(invoice_id, "void:t1:2024-05:again")
    assert (info.value.transient, info.value.code) == (False, "invoice_unexpected_state")
