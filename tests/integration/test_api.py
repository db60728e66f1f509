"""The finance API and the Stripe webhook endpoint against a real ClickHouse ledger.

Invoices are seeded straight into the ledger (the rows ``Invoicer`` writes); webhooks are
signed here exactly as Stripe signs them (``t=<ts>,v1=<hex HMAC-SHA256(secret, "t.payload")>``).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway, recording_http_client
from pipeline.api import create_app
from pipeline.api.auth import Principal, TokenAuth, TokenConfigError, parse_tokens
from pipeline.billing.documents import CSV_HEADER, fraction_text
from pipeline.billing.invoicing import Invoicer
from pipeline.config import Config
from pipeline.domain.lifecycle import StatusEvent
from pipeline.domain.money import to_minor
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

clickhouse = pytest.mark.clickhouse

FINANCE_TOKEN = "fin_7Qm2x9KpL4vR8sT1"
TEAM_TOKEN = "team_3Hc8Wn5Yb2Jd6Fg0"
WEBHOOK_SECRET = "whsec_api_test_9f8e7d6c5b4a"
SEEDED_AT = datetime(2026, 11, 4, 9, 0, tzinfo=UTC)
WEBHOOK_START = datetime(2026, 11, 12, 8, 0, tzinfo=UTC)

ACME_OCT = "GM-2026-10-acme-ai"
FLINT_OCT = "GM-2026-10-flint-mining"
ACME_SEP = "GM-2026-09-acme-ai"
ACME_OCT_STRIPE = "in_1QAcmeOct2026"
ACME_SEP_STRIPE = "in_1QAcmeSep2026"


# -- seeding the ledger ---------------------------------------------------------------------------
@dataclass(frozen=True)
class L:
    """One invoice line as the invoicer composes it."""

    key: str
    kind: str
    description: str
    quantity: Fraction
    unit: str
    unit_price: Decimal
    amount: Decimal
    gpu_model: str = ""
    usage_us: int = 0
    hourly_rows: int = 0


def fixed(key: str, kind: str, description: str, amount: str) -> L:
    """A line without a quantity (discount, minimum true-up, credit)."""
    return L(key, kind, description, Fraction(1), "", Decimal(amount), Decimal(amount))


ACME_OCT_LINES = [
    L(
        "H100/full@tier=reserved",
        "usage",
        "H100 GPU-hours (reserved)",
        Fraction(100),
        "GPU-h",
        Decimal("1.79"),
        Decimal("179.00"),
        "H100",
        100 * 3_600_000_000,
        100,
    ),
    fixed("discount", "discount", "Contract discount 5%", "-8.95"),
    fixed("minimum", "minimum", "Minimum commitment true-up to 40000.00", "39829.95"),
]
FLINT_OCT_LINES = [
    L(
        "H100/full",
        "usage",
        "H100 GPU-hours",
        Fraction(101, 2),
        "GPU-h",
        Decimal("2.29"),
        Decimal("115.65"),
        "H100",
        101 * 1_800_000_000,
        51,
    ),
    fixed("discount", "discount", "Contract discount 10%", "-11.57"),
]
ACME_SEP_LINES = [
    fixed("minimum", "minimum", "Minimum commitment true-up to 40000.00", "40000.00"),
]


def seq(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def seed_invoice(
    ledger: Ledger,
    invoice_id: str,
    tenant_id: str,
    period: str,
    currency: str,
    lines: list[L],
    *,
    stripe_id: str = "",
    paid: bool = False,
    at: datetime = SEEDED_AT,
) -> InvoiceView:
    """The rows ``Invoicer`` writes: revision 1 (lines, header), its draft event, and when
    ``stripe_id`` is given the finalized event (and a paid one)."""
    year, month = map(int, period.split("-"))
    issued = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    credits = sum((ln.amount for ln in lines if ln.kind == "credit"), Decimal(0))
    total = sum((ln.amount for ln in lines), Decimal(0))
    header: dict[str, Any] = {
        "invoice_id": invoice_id,
        "revision": 1,
        "tenant_id": tenant_id,
        "period": period,
        "currency": currency,
        "subtotal_minor": to_minor(total - credits, currency),
        "credits_minor": to_minor(credits, currency),
        "tax_minor": 0,
        "total_minor": to_minor(total, currency),
        "line_count": len(lines),
        "content_hash": hashlib.sha256(invoice_id.encode()).hexdigest(),
        "issued_at": issued,
        "due_at": issued + timedelta(days=30),
        "created_at": at,
    }
    rows = [
        {
            "invoice_id": invoice_id,
            "revision": 1,
            "line_key": ln.key,
            "line_id": f"{invoice_id}/{ln.key}",
            "tenant_id": tenant_id,
            "period": period,
            "kind": ln.kind,
            "period_ref": period,
            "description": ln.description,
            "gpu_model": ln.gpu_model,
            "mig_profile": "",
            "quantity": str(Decimal(ln.quantity.numerator) / ln.quantity.denominator),
            "quantity_exact": fraction_text(ln.quantity),
            "unit": ln.unit,
            "unit_price": str(ln.unit_price),
            "amount_minor": to_minor(ln.amount, currency),
            "exact_amount": fraction_text(Fraction(ln.amount)),
            "currency": currency,
            "usage_us": ln.usage_us,
            "hourly_rows": ln.hourly_rows,
            "stripe_invoice_item_id": "",
            "idempotency_key": f"gpumeter-item-{invoice_id}-{ln.key}",
        }
        for ln in lines
    ]
    ledger.save_revision(header, rows, [])
    view = InvoiceView(**header)
    ledger.append_event(view, StatusEvent("draft/r1", "draft", at, seq(at), "billing", "", ""))
    if stripe_id:
        fin = at + timedelta(hours=1)
        ledger.append_event(
            view, StatusEvent("finalized", "finalized", fin, seq(fin), "billing", stripe_id, "{}")
        )
    if paid:
        pay = at + timedelta(hours=2)
        ledger.append_event(
            view,
            StatusEvent(
                "stripe/evt_seed_paid",
                "paid",
                pay,
                seq(pay),
                "stripe_webhook",
                "evt_seed_paid",
                "invoice.paid",
            ),
        )
    found = ledger.invoice(invoice_id)
    assert found is not None
    return found


def seed_invoices(ledger: Ledger) -> None:
    """2026-10: acme-ai finalized (synced to Stripe), flint-mining still a draft;
    2026-09: acme-ai paid."""
    seed_invoice(
        ledger, ACME_OCT, "acme-ai", "2026-10", "USD", ACME_OCT_LINES, stripe_id=ACME_OCT_STRIPE
    )
    seed_invoice(ledger, FLINT_OCT, "flint-mining", "2026-10", "EUR", FLINT_OCT_LINES)
    seed_invoice(
        ledger,
        ACME_SEP,
        "acme-ai",
        "2026-09",
        "USD",
        ACME_SEP_LINES,
        stripe_id=ACME_SEP_STRIPE,
        paid=True,
        at=SEEDED_AT - timedelta(days=31),
    )


class StepClock:
    """A clock that moves one second on every reading."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


# -- Stripe events ---------------------------------------------------------------------------
def stripe_event(
    event_id: str, event_type: str, stripe_invoice_id: str, invoice_id: str = ""
) -> dict[str, Any]:
    """A Stripe event (API shape, trimmed) about an invoice."""
    status = {"invoice.paid": "paid", "invoice.voided": "void"}.get(event_type, "open")
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {
            "object": {
                "id": stripe_invoice_id,
                "object": "invoice",
                "customer": "cus_Acme",
                "currency": "usd",
                "status": status,
                "amount_due": 4_000_000,
                "amount_paid": 4_000_000 if status == "paid" else 0,
                "metadata": {"invoice_id": invoice_id, "tenant_id": "acme-ai", "period": "2026-10"}
                if invoice_id
                else {},
            }
        },
    }


def sign(payload: str, secret: str = WEBHOOK_SECRET, ts: int | None = None) -> str:
    t = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    ex = server_executor(settings)
    migrate(ex)
    yield Ledger(ex)
    ex.close()
    drop_database(settings)


@dataclass
class Api:
    client: TestClient
    ledger: Ledger
    stripe_http: Any  # records every request the gateway would send

    def get(self, path: str, token: str | None = FINANCE_TOKEN, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(path, headers=headers, **kw)

    def deliver(self, event: dict[str, Any], signature: str | None = None) -> Any:
        payload = json.dumps(event)
        return self.client.post(
            "/stripe/webhook",
            content=payload.encode(),
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": signature if signature is not None else sign(payload),
            },
        )

    def status(self, invoice_id: str) -> str:
        view = self.ledger.invoice(invoice_id)
        assert view is not None
        return view.status

    def stripe_events(self, invoice_id: str) -> list[StatusEvent]:
        events = self.ledger.events_for([invoice_id]).get(invoice_id, [])
        return [e for e in events if e.source == "stripe_webhook"]

    def webhook_rows(self) -> list[tuple[Any, ...]]:
        return self.ledger.ex.execute(
            "SELECT event_id, type, stripe_invoice_id, invoice_id, outcome "
            "FROM stripe_webhook_events FINAL ORDER BY event_id"
        )


def make_invoicer(config: Config, ledger: Ledger, settings: Settings, http: Any) -> Invoicer:
    """An invoicer whose Stripe gateway is never called (webhook voids do not go to Stripe)."""
    gateway = StripeGateway(SecretStr("sk_test_x"), "http://127.0.0.1:12111", http_client=http)
    return Invoicer(
        config,
        Store(ledger.ex),
        ledger,
        gateway,
        settings.out_dir,
        StepClock(WEBHOOK_START),
        timedelta(hours=72),
    )


@pytest.fixture
def api(settings: Settings, config: Config, ledger: Ledger) -> Iterator[Api]:
    s = settings.model_copy(
        update={
            "api_tokens": SecretStr(
                f"{FINANCE_TOKEN}=finance:controller, {TEAM_TOKEN}=team:research/vision"
            ),
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
        }
    )
    seed_invoices(ledger)
    http = recording_http_client()
    invoicer = make_invoicer(config, ledger, s, http)
    app = create_app(s, config, ledger, invoicer, StepClock(WEBHOOK_START))
    with TestClient(app) as client:
        yield Api(client, ledger, http)
    assert http.recorded == []  # nothing here talks to Stripe


# -- auth ----------------------------------------------------------------------------------------
FINANCE_PATHS = [
    "/invoices?period=2026-10",
    f"/invoices/{ACME_OCT}",
    f"/invoices/{ACME_OCT}.pdf",
    "/invoices/export.csv?period=2026-10",
]


@clickhouse
@pytest.mark.parametrize("path", FINANCE_PATHS)
def test_no_token_or_unknown_token_is_401(api: Api, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-known-token"},
        {"Authorization": f"Bearer {FINANCE_TOKEN}x"},
        {"Authorization": f"Basic {FINANCE_TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        r = api.client.get(path, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.json()["code"] == "billing.unauthorized"
        assert r.json()["message"]
        assert r.headers["WWW-Authenticate"] == "Bearer"


@clickhouse
@pytest.mark.parametrize("path", FINANCE_PATHS)
def test_token_without_finance_role_is_403(api: Api, path: str) -> None:
    r = api.get(path, token=TEAM_TOKEN)
    assert r.status_code == 403
    assert r.json() == {
        "code": "billing.forbidden",
        "message": "this endpoint needs a token with the finance role",
    }


@clickhouse
def test_healthz_needs_no_token(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.unit
def test_token_setting_is_parsed_into_digests() -> None:
    tokens = parse_tokens(
        SecretStr(" tok-a=finance, tok-b=team:research/vision ,YWI==partner:northwind-cloud,")
    )
    assert set(tokens.values()) == {
        Principal("finance"),
        Principal("team", "research/vision"),
        Principal("partner", "northwind-cloud"),
    }
    assert all(len(d) == 32 for d in tokens)  # SHA-256 digests, not the tokens
    auth = TokenAuth(tokens)
    assert auth.authenticate("tok-a") == Principal("finance")
    assert auth.authenticate("YWI=") == Principal("partner", "northwind-cloud")  # base64 padding
    assert auth.authenticate("tok-") is None and auth.authenticate("") is None
    assert auth.authenticate(None) is None
    assert parse_tokens(SecretStr("")) == {}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("s3cretvalue", "entry 1: expected token=role"),
        ("ok=finance,s3cretvalue=", "entry 2: expected token=role"),
        ("=finance", "entry 1: expected token=role"),
        ("s3cretvalue=admin", "entry 1: unknown role"),
        ("finance=s3cretvalue", "entry 1: unknown role"),
        ("s3cret value=finance", "entry 1: the token contains whitespace"),
        ("s3cretvalue=team", "entry 1: role team needs a subject"),
        ("s3cretvalue=finance,s3cretvalue=team:x", "entry 2: the same token appears twice"),
    ],
)
def test_malformed_token_setting_fails_at_app_creation_without_echoing_tokens(
    spec: str, problem: str, tmp_path: Any
) -> None:
    with pytest.raises(TokenConfigError) as info:
        create_app(Settings(api_tokens=SecretStr(spec), out_dir=tmp_path))
    assert problem in str(info.value)
    assert "s3cret" not in str(info.value)


# -- reading invoices ----------------------------------------------------------------------------
@clickhouse
def test_list_filters_by_period_and_status(api: Api) -> None:
    r = api.get("/invoices?period=2026-10")
    assert r.status_code == 200
    rows = r.json()
    assert [(x["invoice_id"], x["status"]) for x in rows] == [
        (ACME_OCT, "finalized"),
        (FLINT_OCT, "draft"),
    ]
    acme = rows[0]
    assert acme["customer"] == "Acme Ai Inc."
    assert (acme["currency"], acme["total"], acme["subtotal"]) == ("USD", "40000.00", "40000.00")
    assert acme["stripe_invoice_id"] == ACME_OCT_STRIPE
    assert rows[1]["total"] == "104.08" and rows[1]["currency"] == "EUR"

    r = api.get("/invoices", params={"period": "2026-10", "status": "draft"})
    assert [x["invoice_id"] for x in r.json()] == [FLINT_OCT]
    r = api.get("/invoices", params={"period": "2026-10", "status": "paid"})
    assert r.json() == []
    r = api.get("/invoices", params={"period": "2026-09", "status": "paid"})
    assert [x["invoice_id"] for x in r.json()] == [ACME_SEP]
    assert api.get("/invoices?period=2025-01").json() == []


@clickhouse
@pytest.mark.parametrize(
    ("period", "says"),
    [
        ("2026-13", "month must be 01-12"),
        ("oct-2026", "not of the form YYYY-MM"),
        ("2026-1", "not of the form YYYY-MM"),
    ],
)
def test_invalid_period_says_what_is_wrong(api: Api, period: str, says: str) -> None:
    for path in ("/invoices", "/invoices/export.csv"):
        r = api.get(path, params={"period": period})
        assert r.status_code == 422
        assert r.json()["code"] == "billing.invalid_period"
        assert says in r.json()["message"]


@clickhouse
def test_missing_period_or_unknown_status_is_422(api: Api) -> None:
    r = api.get("/invoices")
    assert r.status_code == 422
    assert r.json()["code"] == "billing.invalid_request" and "period" in r.json()["message"]
    assert api.get("/invoices/export.csv").status_code == 422  # not taken for an invoice id
    r = api.get("/invoices", params={"period": "2026-10", "status": "settled"})
    assert r.status_code == 422
    assert r.json()["code"] == "billing.invalid_request" and "status" in r.json()["message"]


@clickhouse
def test_invoice_detail(api: Api) -> None:
    r = api.get(f"/invoices/{ACME_OCT}")
    assert r.status_code == 200
    doc = r.json()
    assert doc["invoice_id"] == ACME_OCT and doc["kind"] == "invoice"
    assert (doc["status"], doc["tenant_id"], doc["revision"]) == ("finalized", "acme-ai", 1)
    assert doc["customer"]["name"] == "Acme Ai Inc."
    assert doc["stripe_invoice_id"] == ACME_OCT_STRIPE
    assert doc["period"] == "2026-10" and doc["total"] == "40000.00"
    assert [(ln["line_id"], ln["amount"]) for ln in doc["lines"]] == [
        (f"{ACME_OCT}/H100/full@tier=reserved", "179.00"),
        (f"{ACME_OCT}/discount", "-8.95"),
        (f"{ACME_OCT}/minimum", "39829.95"),
    ]
    assert doc["credit_notes"] == []
    assert api.get(f"/invoices/{ACME_SEP}").json()["status"] == "paid"


@clickhouse
@pytest.mark.parametrize("path", ["/invoices/GM-2026-10-nobody", "/invoices/GM-2026-10-nobody.pdf"])
def test_unknown_invoice_is_404(api: Api, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404
    assert r.json() == {
        "code": "billing.invoice_not_found",
        "message": "no invoice 'GM-2026-10-nobody'",
    }


@clickhouse
def test_invoice_pdf(api: Api) -> None:
    from pypdf import PdfReader

    r = api.get(f"/invoices/{FLINT_OCT}.pdf")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(r.content)).pages)
    assert FLINT_OCT in text and "Flint Mining Ltd" in text


@clickhouse
def test_csv_export_has_a_row_per_invoice(api: Api) -> None:
    r = api.get("/invoices/export.csv", params={"period": "2026-10"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="invoices-2026-10.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == CSV_HEADER
    body = [dict(zip(CSV_HEADER, row, strict=True)) for row in rows[1:]]
    assert [(b["invoice_id"], b["status"], b["total"]) for b in body] == [
        (ACME_OCT, "finalized", "40000.00"),
        (FLINT_OCT, "draft", "104.08"),
    ]
    only = api.get("/invoices/export.csv", params={"period": "2026-10", "status": "finalized"})
    assert len(list(csv.reader(io.StringIO(only.text)))) == 2


@clickhouse
def test_openapi_lists_the_endpoints(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "gpumeter finance API"
    assert spec["info"]["version"]
    assert {
        "/invoices",
        "/invoices/export.csv",
        "/invoices/{invoice_id}",
        "/invoices/{invoice_id}.pdf",
        "/stripe/webhook",
        "/healthz",
    } <= set(spec["paths"])
    assert {t["name"] for t in spec["tags"]} == {"invoices", "stripe", "ops"}
    assert spec["paths"]["/invoices"]["get"]["tags"] == ["invoices"]
    assert spec["paths"]["/invoices"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/stripe/webhook"]["post"]
    assert (
        "application/pdf"
        in (spec["paths"]["/invoices/{invoice_id}.pdf"]["get"]["responses"]["200"]["content"])
    )


# -- the Stripe webhook --------------------------------------------------------------------------
@clickhouse
def test_bad_signature_is_400_and_records_nothing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    event = stripe_event("evt_1BadSig", "invoice.paid", ACME_OCT_STRIPE)
    payload = json.dumps(event)
    tampered = json.dumps({**event, "type": "invoice.voided"})
    caplog.set_level(logging.WARNING, logger="pipeline.api")
    for signature in (
        sign(payload, secret="whsec_someone_else"),
        sign(tampered),  # signed another payload
        sign(payload, ts=int(time.time()) - 3600),  # replayed: outside the tolerance
        "t=1,v1=deadbeef",
        "garbage",
        "",
    ):
        r = api.deliver(event, signature=signature)
        assert r.status_code == 400, signature
        assert r.json()["code"] == "billing.webhook_signature_invalid"
    r = api.client.post("/stripe/webhook", content=payload.encode())  # no header at all
    assert r.status_code == 400
    assert api.webhook_rows() == []
    assert api.status(ACME_OCT) == "finalized"
    assert api.stripe_events(ACME_OCT) == []
    refused = [r for r in caplog.records if "stripe webhook refused" in r.getMessage()]
    assert len(refused) == 7 and all(r.levelno == logging.WARNING for r in refused)
    assert WEBHOOK_SECRET not in caplog.text and ACME_OCT_STRIPE not in caplog.text


@clickhouse
def test_verified_event_that_cannot_be_applied_has_its_own_code(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid signature with a failure inside is not a bad signature: each failure answers
    with its own code, and nothing is recorded (Stripe retries a non-2xx answer)."""
    # signed, but not an event we can apply: not JSON, not an object, no id or type
    for payload in ("not json", "[1, 2]", json.dumps(stripe_event("", "invoice.paid", "in_x"))):
        r = api.client.post(
            "/stripe/webhook",
            content=payload.encode(),
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload)},
        )
        assert (r.status_code, r.json()["code"]) == (400, "billing.webhook_event_invalid"), payload
    # a failure of ours while applying a verified event
    caplog.set_level(logging.ERROR, logger="pipeline.api")

    def broken(event_id: str) -> bool:
        raise ValueError("ledger row with an unexpected value")

    api.ledger.webhook_seen = broken  # type: ignore[method-assign]
    r = api.deliver(stripe_event("evt_1Broken", "invoice.paid", ACME_OCT_STRIPE, ACME_OCT))
    assert (r.status_code, r.json()["code"]) == (500, "billing.webhook_processing_failed")
    assert "evt_1Broken" in caplog.text
    del api.ledger.webhook_seen
    assert api.webhook_rows() == []
    assert api.status(ACME_OCT) == "finalized"


@clickhouse
def test_event_for_an_invoice_not_finalized_yet_is_503_with_a_known_code(api: Api) -> None:
    r = api.deliver(stripe_event("evt_1Early", "invoice.paid", "in_1QFlintOct", FLINT_OCT))
    assert r.status_code == 503
    assert r.json()["code"] == "billing.invoice_not_finalized_yet"
    assert api.webhook_rows() == []


@clickhouse
def test_invoice_paid(api: Api) -> None:
    r = api.deliver(stripe_event("evt_1Paid", "invoice.paid", ACME_OCT_STRIPE, ACME_OCT))
    assert r.status_code == 200 and r.json() == {"outcome": "applied"}
    assert api.get(f"/invoices/{ACME_OCT}").json()["status"] == "paid"
    [ev] = api.stripe_events(ACME_OCT)
    assert (ev.key, ev.status, ev.source_ref, ev.detail) == (
        "stripe/evt_1Paid",
        "paid",
        "evt_1Paid",
        "invoice.paid",
    )
    assert api.webhook_rows() == [
        ("evt_1Paid", "invoice.paid", ACME_OCT_STRIPE, ACME_OCT, "applied")
    ]


@clickhouse
def test_same_event_twice_is_applied_once(api: Api) -> None:
    event = stripe_event("evt_1Twice", "invoice.paid", ACME_OCT_STRIPE)
    assert api.deliver(event).json() == {"outcome": "applied"}
    assert api.deliver(event).json() == {"outcome": "duplicate"}
    assert len(api.stripe_events(ACME_OCT)) == 1
    assert [row[4] for row in api.webhook_rows()] == ["applied"]
    assert api.status(ACME_OCT) == "paid"


@clickhouse
def test_payment_failed_then_paid(api: Api) -> None:
    failed = stripe_event("evt_1Failed", "invoice.payment_failed", ACME_OCT_STRIPE)
    assert api.deliver(failed).json() == {"outcome": "applied"}
    assert api.get(f"/invoices/{ACME_OCT}").json()["status"] == "payment_failed"
    listed = api.get("/invoices", params={"period": "2026-10", "status": "payment_failed"})
    assert [x["invoice_id"] for x in listed.json()] == [ACME_OCT]
    paid = stripe_event("evt_1PaidLater", "invoice.paid", ACME_OCT_STRIPE)
    assert api.deliver(paid).json() == {"outcome": "applied"}
    assert api.status(ACME_OCT) == "paid"
    assert [e.status for e in sorted(api.stripe_events(ACME_OCT), key=lambda e: e.seq)] == [
        "payment_failed",
        "paid",
    ]
    # a failure reported after the payment changes nothing
    late = stripe_event("evt_1FailedLate", "invoice.payment_failed", ACME_OCT_STRIPE)
    assert api.deliver(late).json() == {"outcome": "ignored_transition"}
    assert api.status(ACME_OCT) == "paid"


@clickhouse
def test_invoice_voided_in_stripe_voids_and_issues_a_credit_note(api: Api) -> None:
    event = stripe_event("evt_1Voided", "invoice.voided", ACME_OCT_STRIPE, ACME_OCT)
    assert api.deliver(event).json() == {"outcome": "applied"}
    assert api.status(ACME_OCT) == "void"
    [note] = api.ledger.credit_notes(ACME_OCT)
    assert (note["credit_note_id"], note["total_minor"], note["reason"]) == (
        f"CN-{ACME_OCT}",
        -4_000_000,
        "voided in Stripe",
    )
    [ev] = api.stripe_events(ACME_OCT)
    assert (ev.status, ev.source_ref) == ("void", "evt_1Voided")
    doc = api.get(f"/invoices/{ACME_OCT}").json()
    assert doc["status"] == "void"
    assert [(n["credit_note_id"], n["total"]) for n in doc["credit_notes"]] == [
        (f"CN-{ACME_OCT}", "-40000.00")
    ]
    assert api.deliver(event).json() == {"outcome": "duplicate"}
    assert len(api.ledger.credit_notes(ACME_OCT)) == 1


@clickhouse
def test_paid_event_for_a_void_invoice_is_ignored(api: Api) -> None:
    voided = stripe_event("evt_1VoidFirst", "invoice.voided", ACME_OCT_STRIPE)
    assert api.deliver(voided).json() == {"outcome": "applied"}
    paid = stripe_event("evt_1PaidAfterVoid", "invoice.paid", ACME_OCT_STRIPE)
    assert api.deliver(paid).json() == {"outcome": "ignored_transition"}
    assert api.status(ACME_OCT) == "void"
    assert [e.source_ref for e in api.stripe_events(ACME_OCT)] == ["evt_1VoidFirst"]
    assert dict((row[0], row[4]) for row in api.webhook_rows()) == {
        "evt_1VoidFirst": "applied",
        "evt_1PaidAfterVoid": "ignored_transition",
    }


@clickhouse
def test_unknown_invoice_and_other_event_types_are_recorded_and_ignored(api: Api) -> None:
    unknown = stripe_event("evt_1Unknown", "invoice.paid", "in_1NotOurs")
    assert api.deliver(unknown).json() == {"outcome": "ignored_unknown_invoice"}
    other = stripe_event("evt_1Finalized", "invoice.finalized", ACME_OCT_STRIPE)
    assert api.deliver(other).json() == {"outcome": "ignored_type"}
    assert api.webhook_rows() == [
        ("evt_1Finalized", "invoice.finalized", ACME_OCT_STRIPE, "", "ignored_type"),
        ("evt_1Unknown", "invoice.paid", "in_1NotOurs", "", "ignored_unknown_invoice"),
    ]
    assert api.status(ACME_OCT) == "finalized"


# -- wiring ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_app_creation_does_no_io(tmp_path: Any) -> None:
    """Nothing is loaded or connected until an endpoint needs it."""
    s = Settings(
        clickhouse_port=1,
        config_dir=tmp_path / "missing",
        out_dir=tmp_path,
        api_tokens=SecretStr(""),
    )
    with TestClient(create_app(s)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert "/invoices" in client.get("/openapi.json").json()["paths"]
        assert client.get("/invoices?period=2026-10").status_code == 401


@pytest.mark.unit
def test_serve_runs_uvicorn_on_the_configured_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    from pipeline.api import serve

    serve(Settings(api_host="0.0.0.0", api_port=18999, out_dir=tmp_path))
    assert (seen["host"], seen["port"]) == ("0.0.0.0", 18999)
    assert seen["app"].title == "gpumeter finance API"


@clickhouse
def test_defaults_are_built_from_settings(settings: Settings, ledger: Ledger) -> None:
    """Without injected collaborators the app wires config, ledger and invoicer from settings."""
    seed_invoices(ledger)
    s = settings.model_copy(
        update={
            "api_tokens": SecretStr(f"{FINANCE_TOKEN}=finance"),
            "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
        }
    )
    with TestClient(create_app(s)) as client:
        api = Api(client, ledger, None)
        assert [x["invoice_id"] for x in api.get("/invoices?period=2026-10").json()] == [
            ACME_OCT,
            FLINT_OCT,
        ]
        event = stripe_event("evt_1Defaults", "invoice.voided", ACME_OCT_STRIPE)
        assert api.deliver(event).json() == {"outcome": "applied"}
        assert api.status(ACME_OCT) == "void"
        assert (s.out_dir / "2026-10" / "invoices" / f"CN-{ACME_OCT}.pdf").exists()
