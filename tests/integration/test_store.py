"""The store's SQL on both engines: Debian's ClickHouse 18.16 server and chdb (current)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor, migrate
from pipeline.adapters.store import Store
from pipeline.domain.aggregate import Agg
from pipeline.domain.events import UsageSample
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.worker.sink import HOURLY_COLUMNS, RAW_COLUMNS, hourly_row, raw_row

pytestmark = [pytest.mark.clickhouse, pytest.mark.chdb]
Ex = DriverExecutor | ChdbExecutor
NOW = datetime(2026, 11, 2, tzinfo=UTC)
OCT = int(datetime(2026, 10, 5, 7, tzinfo=UTC).timestamp())


def key(tenant: str = "acme-ai", hour_s: int = OCT, model: str = "H100") -> HourlyKey:
    return HourlyKey(tenant, hour_s, "p1", model, "", "us-east-1", "northwind-cloud", "c1")


def test_migrate_is_idempotent_and_creates_tables(engine: Ex) -> None:
    assert migrate(engine) == []
    tables = {r[0] for r in engine.execute("SHOW TABLES")}
    assert {
        "usage_raw",
        "usage_hourly",
        "ledger_invoices",
        "ledger_lines",
        "ledger_line_sources",
        "invoice_events",
        "credit_notes",
        "billing_failures",
        "stripe_webhook_events",
        "chargeback_lines",
        "schema_migrations",
    } <= tables


def test_rewritten_hour_replaces_instead_of_adding(engine: Ex) -> None:
    k = key()
    engine.insert("usage_hourly", HOURLY_COLUMNS, [hourly_row(k, Agg(100, 50, 1, 7), NOW)])
    engine.insert("usage_hourly", HOURLY_COLUMNS, [hourly_row(k, Agg(300, 60, 3, 9), NOW)])
    engine.insert(
        "usage_hourly", HOURLY_COLUMNS, [hourly_row(k, Agg(300, 60, 3, 9), NOW)]
    )  # replay
    engine.insert("usage_hourly", HOURLY_COLUMNS, [hourly_row(k, Agg(200, 55, 2, 8), NOW)])  # stale
    rows = Store(engine).hourly_rows(Period.parse("2026-10"))
    assert [(r.key, r.usage_us, r.busy_us) for r in rows["acme-ai"]] == [(k, 300, 60)]


def test_raw_samples_collapse_on_identity(engine: Ex) -> None:
    t0 = int(datetime(2026, 10, 5, 7, tzinfo=UTC).timestamp()) * 1_000_000
    sample = UsageSample(
        "src",
        "e1",
        "acme-ai",
        "p1",
        "c1",
        "us-east-1",
        "northwind-cloud",
        "n1",
        "H100",
        "",
        1,
        t0,
        t0 + 60_000_000,
        None,
        "j1",
        "GPU-1",
    )
    row = raw_row(sample, 0, 5, NOW, late=True)
    engine.insert("usage_raw", RAW_COLUMNS, [row])
    engine.insert("usage_raw", RAW_COLUMNS, [row])
    assert engine.execute("SELECT count(), sum(late) FROM usage_raw FINAL") == [(1, 1)]


def test_period_and_tenant_filters_and_parameters_are_escaped(engine: Ex) -> None:
    sep = int(datetime(2026, 9, 30, 23, tzinfo=UTC).timestamp())
    nov = int(datetime(2026, 11, 1, 0, tzinfo=UTC).timestamp())
    last = int(datetime(2026, 10, 31, 23, tzinfo=UTC).timestamp())
    rows = [hourly_row(key(hour_s=h), Agg(10, 0, 1, 1), NOW) for h in (sep, OCT, last, nov)]
    rows.append(hourly_row(key(tenant="o'brien-ai"), Agg(5, 0, 1, 1), NOW))
    engine.insert("usage_hourly", HOURLY_COLUMNS, rows)
    store = Store(engine)
    got = store.hourly_rows(Period.parse("2026-10"))
    assert sorted(r.key.hour_s for r in got["acme-ai"]) == [OCT, last]
    assert [
        r.usage_us for r in store.hourly_rows(Period.parse("2026-10"), "o'brien-ai")["o'brien-ai"]
    ] == [5]
    assert store.hourly_rows(Period.parse("2026-10"), "x' OR '1'='1") == {}


def test_invoice_status_comes_from_appended_events(engine: Ex) -> None:
    from pipeline.adapters.ledger import InvoiceView, Ledger
    from pipeline.domain.lifecycle import StatusEvent

    ledger = Ledger(engine)
    header = {
        "invoice_id": "GM-2026-10-acme-ai",
        "revision": 1,
        "tenant_id": "acme-ai",
        "period": "2026-10",
        "currency": "USD",
        "subtotal_minor": 1234,
        "credits_minor": 0,
        "tax_minor": 0,
        "total_minor": 1234,
        "line_count": 0,
        "content_hash": "h1",
        "issued_at": NOW,
        "due_at": NOW,
        "created_at": NOW,
    }
    ledger.save_revision(header, [], [])
    ledger.save_revision({**header, "revision": 2, "total_minor": 1500}, [], [])
    view = InvoiceView(**header)

    def ev(key: str, status: str, seq: int, ref: str = "") -> StatusEvent:
        return StatusEvent(key, status, NOW, seq, "test", ref)

    ledger.append_event(view, ev("draft/r1", "draft", 1))
    assert ledger.current("acme-ai", "2026-10").status == "draft"  # type: ignore[union-attr]
    ledger.append_event(view, ev("finalized", "finalized", 2, "in_1"))
    ledger.append_event(view, ev("finalized", "finalized", 2, "in_1"))  # a retried insert
    ledger.append_event(view, ev("stripe/evt_1", "paid", 3))
    ledger.append_event(view, ev("stripe/evt_2", "void", 4))  # not allowed after paid: ignored
    inv = ledger.invoice("GM-2026-10-acme-ai")
    assert inv is not None
    assert (inv.revision, inv.total_minor, inv.status, inv.stripe_invoice_id) == (
        2,
        1500,
        "paid",
        "in_1",
    )
    assert len(ledger.events_for([inv.invoice_id])[inv.invoice_id]) == 4
    assert ledger.current("acme-ai", "2026-09") is None


def test_late_usage_query_lists_what_arrived_after_the_grace_period(engine: Ex) -> None:
    on_time, late = key(hour_s=OCT), key(hour_s=OCT + 3600)
    engine.insert(
        "usage_hourly",
        HOURLY_COLUMNS,
        [
            hourly_row(on_time, Agg(100, 0, 1, 1, 0), NOW),
            hourly_row(late, Agg(100, 0, 2, 2, 40), NOW),
        ],
    )
    rows = Store(engine).late_usage(Period.parse("2026-10"))
    assert [(r[0], int(r[1].timestamp()), r[4], r[5]) for r in rows] == [
        ("acme-ai", OCT + 3600, 40, 100)
    ]
    assert Store(engine).active_parts()["usage_hourly"] >= 1
