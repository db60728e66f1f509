"""The finance API and the Stripe webhook endpoint (FastAPI).

Endpoints (bearer token with the ``finance`` role, see :mod:`pipeline.api.auth`):

* ``GET /invoices?period=YYYY-MM[&status=S]``  invoices of a period (latest revisions)
* ``GET /invoices/export.csv?period=YYYY-MM``   the same as ``invoices.csv``
* ``GET /invoices/{invoice_id}``                the invoice document (JSON), with its status
* ``GET /invoices/{invoice_id}.pdf``            the invoice PDF

No token: ``POST /stripe/webhook`` (Stripe's signature instead), ``GET /healthz``,
``GET /openapi.json``.

Errors are ``{"code": "billing....", "message": "..."}`` with the codes of
:class:`~pipeline.domain.errors.BillingErrorCode`.

The ClickHouse client is not thread-safe and FastAPI runs handlers on a thread pool, so every
use of the ledger is serialized by one lock (the API's traffic is a few finance users and
Stripe's webhooks).
"""

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from pipeline import __version__
from pipeline.adapters.ledger import InvoiceView, Ledger
from pipeline.api import chargeback, partners
from pipeline.api.auth import FINANCE, Principal, TokenAuth
from pipeline.billing.documents import customer_party
from pipeline.billing.invoicing import Invoicer
from pipeline.billing.webhooks import NotYetFinalized
from pipeline.config import Config
from pipeline.domain.documents import InvoiceDocument, Status
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.settings import Settings, required

log = logging.getLogger("pipeline.api")

HTTP_STATUS: dict[BillingErrorCode, int] = {
    BillingErrorCode.UNAUTHORIZED: 401,
    BillingErrorCode.FORBIDDEN: 403,
    BillingErrorCode.INVOICE_NOT_FOUND: 404,
    BillingErrorCode.INVALID_PERIOD: 422,
    BillingErrorCode.INVALID_TRANSITION: 409,
    BillingErrorCode.WEBHOOK_SIGNATURE: 400,
    # signed by Stripe but not an event we can apply: retrying the same bytes cannot help
    BillingErrorCode.WEBHOOK_EVENT_INVALID: 400,
    # our failure while applying a verified event (nothing recorded): Stripe retries a 5xx
    BillingErrorCode.WEBHOOK_PROCESSING_FAILED: 500,
    # finalized in Stripe, not yet in the ledger: Stripe retries after the next billing run
    BillingErrorCode.INVOICE_NOT_FINALIZED: 503,
}

TAGS = [
    {"name": "invoices", "description": "Invoices from the ledger (finance role)."},
    {"name": "stripe", "description": "Stripe webhooks (verified by Stripe's signature)."},
    {"name": "ops", "description": "Health."},
]


# -- response models --------------------------------------------------------------------------
class ErrorBody(BaseModel):
    code: str
    message: str


class InvoiceSummary(BaseModel):
    invoice_id: str
    revision: int
    tenant_id: str
    customer: str
    period: str
    status: Status
    currency: str
    subtotal: Decimal
    credits: Decimal
    tax: Decimal
    total: Decimal
    issued_at: datetime
    due_at: datetime
    stripe_invoice_id: str


class CreditNoteRef(BaseModel):
    credit_note_id: str
    total: Decimal
    reason: str
    created_at: datetime


class InvoiceDetail(InvoiceDocument):
    """The invoice document (status included) with where it stands in the ledger."""

    tenant_id: str
    revision: int
    credit_notes: list[CreditNoteRef]


class WebhookResult(BaseModel):
    outcome: str


class Health(BaseModel):
    status: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody} for c in codes}


# -- wiring -----------------------------------------------------------------------------------
def _utcnow() -> datetime:
    return datetime.now(UTC)


class Services:
    """The app's collaborators, built from settings on first use unless given (no I/O when the
    app is created). Every use goes through ``lock``."""

    def __init__(
        self,
        settings: Settings,
        config: Config | None,
        ledger: Ledger | None,
        invoicer: Invoicer | None,
        clock: Callable[[], datetime] | None,
    ) -> None:
        self.settings = settings
        self.clock = clock or _utcnow
        self.lock = threading.RLock()
        self._config = config
        self._ledger = ledger
        self._invoicer = invoicer

    @property
    def config(self) -> Config:
        with self.lock:
            if self._config is None:
                self._config = Config.load(self.settings.config_dir)
            return self._config

    @property
    def ledger(self) -> Ledger:
        with self.lock:
            if self._ledger is None:
                from pipeline.bootstrap import ledger, store

                self._ledger = ledger(store(self.settings))
            return self._ledger

    @property
    def invoicer(self) -> Invoicer:
        with self.lock:
            if self._invoicer is None:
                from pipeline.adapters.store import Store
                from pipeline.bootstrap import invoicer

                self._invoicer = invoicer(
                    self.settings,
                    self.config,
                    Store(self.ledger.ex),
                    clock=self.clock,
                    require_key=False,  # webhooks only: no request to Stripe
                )
            return self._invoicer


def _summary(config: Config, v: InvoiceView) -> InvoiceSummary:
    cur = v.currency
    return InvoiceSummary(
        invoice_id=v.invoice_id,
        revision=v.revision,
        tenant_id=v.tenant_id,
        customer=customer_party(config, v.tenant_id).name,
        period=v.period,
        status=v.status,  # type: ignore[arg-type]
        currency=cur,
        subtotal=from_minor(v.subtotal_minor, cur),
        credits=from_minor(v.credits_minor, cur),
        tax=from_minor(v.tax_minor, cur),
        total=from_minor(v.total_minor, cur),
        issued_at=v.issued_at,
        due_at=v.due_at,
        stripe_invoice_id=v.stripe_invoice_id,
    )


def _period(text: str) -> str:
    return str(Period.parse(text))  # BillingError(INVALID_PERIOD) saying what is wrong


def _not_found(invoice_id: str) -> BillingError:
    return BillingError(BillingErrorCode.INVOICE_NOT_FOUND, f"no invoice {invoice_id!r}")


# -- the app ----------------------------------------------------------------------------------
def create_app(
    settings: Settings,
    config: Config | None = None,
    ledger: Ledger | None = None,
    invoicer: Invoicer | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The API. Raises :class:`~pipeline.api.auth.TokenConfigError` when ``api_tokens`` is
    malformed (the message names the entry, never its token) and
    :class:`~pipeline.settings.SettingsError` without a Stripe webhook secret."""
    auth = TokenAuth.from_setting(settings.api_tokens)
    if not len(auth):
        log.warning("no API tokens configured (GPUMETER_API_TOKENS): every /invoices call is 401")
    required(
        settings.stripe_webhook_secret,
        "stripe_webhook_secret",
        "the Stripe webhook endpoint verifies every event with it (the endpoint's signing "
        "secret, whsec_..., from Stripe's dashboard)",
    )
    services = Services(settings, config, ledger, invoicer, clock)

    app = FastAPI(
        title="gpumeter finance API",
        version=__version__,
        description=(
            "Invoices from the gpumeter ledger for finance (bearer token with the finance "
            "role) and the Stripe webhook endpoint. Errors are "
            '`{"code": "billing.…", "message": "…"}`.'
        ),
        openapi_tags=TAGS,
    )
    app.state.services = services

    @app.exception_handler(BillingError)
    async def billing_error(request: Request, exc: BillingError) -> JSONResponse:
        status = HTTP_STATUS.get(exc.code, 500)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status >= 500:
            log.error("billing error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            ErrorBody(code=exc.code.value, message=exc.message).model_dump(),
            status_code=status,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return JSONResponse(
            ErrorBody(code=BillingErrorCode.INVALID_REQUEST.value, message=problems).model_dump(),
            status_code=422,
        )

    bearer = HTTPBearer(auto_error=False, description="A token with the finance role.")

    def finance(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        return auth.require(
            creds.credentials if creds is not None else None,
            (FINANCE,),
            "this endpoint needs a token with the finance role",
        )

    PeriodQ = Annotated[str, Query(description="usage period, YYYY-MM", examples=["2026-10"])]
    StatusQ = Annotated[Status | None, Query(description="only invoices in this status")]

    invoices = APIRouter(
        prefix="/invoices",
        tags=["invoices"],
        dependencies=[Depends(finance)],
        responses=_errors(401, 403),
    )

    def _views(period: str, status: str | None) -> tuple[str, list[InvoiceView]]:
        p = _period(period)  # normalized: the text given is not echoed further
        with services.lock:
            views = services.ledger.invoices(p)
        return p, [v for v in views if status is None or v.status == status]

    # /invoices/export.csv and /invoices/{invoice_id}.pdf before /invoices/{invoice_id}: the
    # first route that matches wins.
    @invoices.get(
        "",
        response_model=list[InvoiceSummary],
        summary="Invoices of a period",
        responses=_errors(422),
    )
    def list_invoices(period: PeriodQ, status: StatusQ = None) -> list[InvoiceSummary]:
        _, views = _views(period, status)
        config = services.config
        return [_summary(config, v) for v in views]

    @invoices.get(
        "/export.csv",
        response_class=Response,
        summary="Invoices of a period as CSV (invoices.csv)",
        responses={200: {"content": {"text/csv": {}}}, **_errors(422)},
    )
    def export_csv(period: PeriodQ, status: StatusQ = None) -> Response:
        from pipeline.billing.documents import invoices_csv

        p, views = _views(period, status)
        return Response(
            invoices_csv(services.config, views),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="invoices-{p}.csv"'},
        )

    def _document(invoice_id: str) -> InvoiceDocument:
        from pipeline.billing.documents import load_document

        with services.lock:
            doc = load_document(services.config, services.ledger, invoice_id)
        if doc is None:
            raise _not_found(invoice_id)
        return doc

    @invoices.get(
        "/{invoice_id}.pdf",
        response_class=Response,
        summary="The invoice PDF",
        responses={200: {"content": {"application/pdf": {}}}, **_errors(404)},
    )
    def invoice_pdf(invoice_id: str) -> Response:
        from pipeline.billing.pdf import render_pdf

        doc = _document(invoice_id)
        return Response(
            render_pdf(doc),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{doc.invoice_id}.pdf"'},
        )

    @invoices.get(
        "/{invoice_id}",
        response_model=InvoiceDetail,
        summary="The invoice document, with its status and credit notes",
        responses=_errors(404),
    )
    def invoice_detail(invoice_id: str) -> InvoiceDetail:
        from pipeline.billing.documents import build_document

        with services.lock:
            ledger = services.ledger
            view = ledger.invoice(invoice_id)
            if view is None:
                raise _not_found(invoice_id)
            lines = ledger.lines(view.invoice_id, view.revision)
            notes = ledger.credit_notes(view.invoice_id)
        doc = build_document(services.config, view, lines)
        return InvoiceDetail.model_validate(
            {
                **doc.model_dump(),
                "tenant_id": view.tenant_id,
                "revision": view.revision,
                "credit_notes": [
                    CreditNoteRef(
                        credit_note_id=n["credit_note_id"],
                        total=from_minor(n["total_minor"], n["currency"]),
                        reason=n["reason"],
                        created_at=n["created_at"],
                    )
                    for n in notes
                ],
            }
        )

    app.include_router(invoices)
    partners.install(app, auth)  # /partners/{id}/exports (partner tokens, finance)
    chargeback.install(app, services, auth)  # /chargeback, /dashboard (teams, finance)

    def _apply(event: dict[str, Any]) -> str:
        from pipeline.billing.webhooks import apply_stripe_event

        with services.lock:
            return apply_stripe_event(event, services.ledger, services.invoicer, services.clock)

    @app.post(
        "/stripe/webhook",
        tags=["stripe"],
        response_model=WebhookResult,
        summary="Stripe events: invoice.paid, invoice.payment_failed, invoice.voided",
        responses=_errors(400, 500, 503),
    )
    async def stripe_webhook(
        request: Request,
        stripe_signature: Annotated[
            str | None, Header(alias="Stripe-Signature", description="Stripe's signature")
        ] = None,
    ) -> WebhookResult:
        import stripe

        payload = await request.body()
        secret = settings.stripe_webhook_secret.get_secret_value()
        try:  # the signature is over the text: a payload that is not UTF-8 cannot be verified
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text, stripe_signature, secret, stripe.Webhook.DEFAULT_TOLERANCE
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            reason = (
                exc.user_message or "signature does not verify"
                if isinstance(exc, stripe.SignatureVerificationError)
                else "payload is not UTF-8"
            )
            _refused(request, reason, len(payload))
            raise BillingError(
                BillingErrorCode.WEBHOOK_SIGNATURE, "the Stripe signature does not verify"
            ) from None
        # from here on the payload is Stripe's: a failure is not a bad signature
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            _refused(request, "signed payload is not a JSON object", len(payload))
            raise BillingError(
                BillingErrorCode.WEBHOOK_EVENT_INVALID, "the payload is not a Stripe event"
            )
        try:
            outcome = await run_in_threadpool(_apply, event)
        except NotYetFinalized as exc:  # Stripe retries a 503 later
            log.warning("stripe webhook %s deferred: %s", event.get("id"), exc.message)
            raise
        except BillingError as exc:
            _refused(request, f"{exc.code.value}: {exc.message}", len(payload))
            raise
        except Exception:
            log.exception("stripe webhook %s (%s) failed", event.get("id"), event.get("type"))
            raise BillingError(
                BillingErrorCode.WEBHOOK_PROCESSING_FAILED,
                f"applying Stripe event {str(event.get('id'))[:64]!r} failed; nothing was "
                "recorded and Stripe will retry it",
            ) from None
        log.info("stripe webhook %s %s: %s", event.get("id"), event.get("type"), outcome)
        return WebhookResult(outcome=outcome)

    @app.get("/healthz", tags=["ops"], response_model=Health, summary="Liveness")
    def healthz() -> Health:
        return Health(status="ok")

    return app


def _refused(request: Request, reason: str, size: int) -> None:
    """Log a refused webhook: why, its size and where from; never the payload or secret."""
    client = request.client.host if request.client else "?"
    log.warning("stripe webhook refused from %s (%d bytes): %s", client, size, reason)


def serve(settings: Settings | None = None) -> None:
    """Run the API with uvicorn on ``api_host:api_port`` (blocks)."""
    import uvicorn

    settings = settings or Settings()
    app = create_app(settings)
    log.info("finance API on http://%s:%d", settings.api_host, settings.api_port)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="info")
