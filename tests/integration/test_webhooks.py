"""``apply_stripe_event`` on a real ClickHouse ledger, without HTTP: idempotency by Stripe event
id, crash recovery between applying and recording, lookups, transitions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.stripe_gateway import recording_http_client
from pipeline.billing.invoicing import Invoicer
from pipeline.billing.webhooks import NotYetFinalized, apply_stripe_event
from pipeline.config import Config
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.settings import Settings
from tests.integration.test_api import (
    ACME_OCT,
    ACME_OCT_STRIPE,
    ACME_SEP,
    ACME_SEP_STRIPE,
    FLINT_OCT,
    WEBHOOK_START,
    StepClock,
    make_invoicer,
    seed_invoices,
    stripe_event,
)
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse]


class CrashingLedger(Ledger):
    """Stops (raises) when recording the next webhook event, as a process killed right after
    applying it would."""

    crash_next = False

    def save_webhook(self, row: dict[str, Any]) -> None:
        if self.crash_next:
            self.crash_next = False
            raise RuntimeError("killed before recording the webhook event")
        super().save_webhook(row)


@pytest.fixture
def env(settings: Settings, config: Config) -> Iterator[tuple[CrashingLedger, Invoicer, StepClock]]:
    ex = server_executor(settings)
    migrate(ex)
    ledger = CrashingLedger(ex)
    seed_invoices(ledger)
    http = recording_http_client()
    invoicer = make_invoicer(config, ledger, settings, http)
    yield ledger, invoicer, StepClock(WEBHOOK_START)
    ex.close()
    drop_database(settings)
    assert http.recorded == []  # nothing here talks to Stripe


def rows(ledger: Ledger) -> list[tuple[Any, ...]]:
    return ledger.ex.execute(
        "SELECT event_id, invoice_id, outcome FROM stripe_webhook_events FINAL ORDER BY event_id"
    )


def stripe_keys(ledger: Ledger, invoice_id: str) -> list[str]:
    events = ledger.events_for([invoice_id])[invoice_id]
    return sorted(e.key for e in events if e.source == "stripe_webhook")


def test_crash_after_applying_paid_reapplies_once(
    env: tuple[CrashingLedger, Invoicer, StepClock],
) -> None:
    ledger, invoicer, clock = env
    event = stripe_event("evt_2Crash", "invoice.paid", ACME_OCT_STRIPE)
    ledger.crash_next = True
    with pytest.raises(RuntimeError):
        apply_stripe_event(event, ledger, invoicer, clock)
    assert rows(ledger) == []  # not recorded: Stripe's retry comes back
    assert apply_stripe_event(event, ledger, invoicer, clock) == "applied"
    assert stripe_keys(ledger, ACME_OCT) == ["stripe/evt_2Crash"]
    assert rows(ledger) == [("evt_2Crash", ACME_OCT, "applied")]
    assert apply_stripe_event(event, ledger, invoicer, clock) == "duplicate"


def test_crash_after_voiding_reapplies_once(
    env: tuple[CrashingLedger, Invoicer, StepClock],
) -> None:
    ledger, invoicer, clock = env
    event = stripe_event("evt_2CrashVoid", "invoice.voided", ACME_OCT_STRIPE)
    ledger.crash_next = True
    with pytest.raises(RuntimeError):
        apply_stripe_event(event, ledger, invoicer, clock)
    assert apply_stripe_event(event, ledger, invoicer, clock) == "applied"
    view = ledger.invoice(ACME_OCT)
    assert view is not None and view.status == "void"
    assert len(ledger.credit_notes(ACME_OCT)) == 1
    assert rows(ledger) == [("evt_2CrashVoid", ACME_OCT, "applied")]


def test_found_by_metadata_only_when_not_synced_to_another_stripe_invoice(
    env: tuple[CrashingLedger, Invoicer, StepClock],
) -> None:
    ledger, invoicer, clock = env
    # names our acme invoice, but that one is synced to another Stripe invoice
    other = stripe_event("evt_2Other", "invoice.paid", "in_1SomeoneElse", ACME_OCT)
    assert apply_stripe_event(other, ledger, invoicer, clock) == "ignored_unknown_invoice"
    # the draft is found by its metadata: Stripe finalized it but our run crashed before
    # recording that. The payment is not dropped: refused (503) so that Stripe retries it.
    draft = stripe_event("evt_2Draft", "invoice.paid", "in_1NotRecordedYet", FLINT_OCT)
    with pytest.raises(NotYetFinalized, match="gpumeter bill --period 2026-10"):
        apply_stripe_event(draft, ledger, invoicer, clock)
    assert rows(ledger) == [("evt_2Other", "", "ignored_unknown_invoice")]  # not recorded
    assert stripe_keys(ledger, ACME_OCT) == []


def test_void_of_a_paid_invoice_is_ignored(
    env: tuple[CrashingLedger, Invoicer, StepClock],
) -> None:
    ledger, invoicer, clock = env
    event = stripe_event("evt_2VoidPaid", "invoice.voided", ACME_SEP_STRIPE)
    assert apply_stripe_event(event, ledger, invoicer, clock) == "ignored_transition"
    view = ledger.invoice(ACME_SEP)
    assert view is not None and view.status == "paid"
    assert ledger.credit_notes(ACME_SEP) == []


def test_event_without_id_is_refused(env: tuple[CrashingLedger, Invoicer, StepClock]) -> None:
    ledger, invoicer, clock = env
    event = stripe_event("", "invoice.paid", ACME_OCT_STRIPE)
    with pytest.raises(BillingError, match="without an id") as info:
        apply_stripe_event(event, ledger, invoicer, clock)
    assert info.value.code == BillingErrorCode.WEBHOOK_EVENT_INVALID
    assert rows(ledger) == []
