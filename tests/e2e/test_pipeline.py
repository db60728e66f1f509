"""A simulated month through Kafka, the worker (a real child process), ClickHouse,
stripe-mock and the chargeback files, checked against the simulator's ground truth."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta

import pytest

from devtools.sim.run import publish
from devtools.sim.truth import read_truth
from devtools.supervise import drain_once
from devtools.verify import compare, expected_bills, stored_as_truth
from pipeline.adapters.chargeback import ChargebackLedger
from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.store import Store
from pipeline.adapters.stripe_gateway import StripeGateway, recording_http_client
from pipeline.billing.reconcile import reconcile
from pipeline.billing.run import BillingRun
from pipeline.billing.trace import trace_line
from pipeline.config import Config
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.settings import Settings
from tests.services import drop_database, server_executor

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.kafka,
    pytest.mark.clickhouse,
    pytest.mark.stripe,
    pytest.mark.slow,
]


def consume_all(settings: Settings, topic: str) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        enable_auto_commit=False,
    )
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()


def test_a_month_through_the_whole_stack(settings: Settings, config: Config) -> None:
    period = Period.parse("2026-10")
    ex = server_executor(settings)
    migrate(ex)
    sim = publish(
        settings,
        config,
        period,
        nodes=6,
        interval_s=1800,
        seed=11,
        bad_every=300,
        progress=False,
    )
    assert sim.samples > 10_000 and sim.bad_messages > 0

    drain_once(settings, settings.out_dir / "worker.log", timeout=600)

    store = Store(ex)
    truth = read_truth(sim.truth_path)
    stored = stored_as_truth(store, period)
    v = compare(truth, stored)
    assert v.mismatches == [] and v.exact, v
    assert stored == truth  # every hourly key, to the GPU-micro-second

    dead = [json.loads(m) for m in consume_all(settings, settings.dlq_topic)]
    assert len(dead) == sim.bad_messages
    assert {d["reason"] for d in dead} == {
        "malformed_json",
        "unknown_gpu_model",
        "non_positive_interval",
        "unknown_tenant",
    }
    assert all(d["value_b64"] and d["topic"] == settings.usage_topic for d in dead)

    http = recording_http_client()
    gateway = StripeGateway(settings.stripe_api_key, settings.stripe_api_base, http_client=http)
    after_grace = period.end + timedelta(days=4)
    billing = BillingRun(
        config, store, gateway, settings.out_dir, lambda: after_grace, stripe_threads=4
    )
    report = billing.run(period)
    expected = expected_bills(truth, config, period)
    assert {r.tenant_id for r in report.results} == set(expected)
    for r in report.results:
        qty, amount = expected[r.tenant_id]
        assert (r.gpu_hours, r.amount) == (qty, amount), r.tenant_id
    ledger = Ledger(ex)
    invoices = ledger.invoices(str(period))
    events = ledger.events_for([inv.invoice_id for inv in invoices])
    for inv in invoices:
        assert inv.status == "finalized" and inv.stripe_invoice_id.startswith("in_")
        assert from_minor(inv.total_minor, inv.currency) == expected[inv.tenant_id][1]
        lines = ledger.lines(inv.invoice_id, inv.revision)
        assert sum(ln["amount_minor"] for ln in lines) == inv.total_minor
        (final,) = [e for e in events[inv.invoice_id] if e.status == "finalized"]
        items = json.loads(final.detail)["items"]
        assert sorted(items) == sorted(ln["line_key"] for ln in lines)
        assert all(i.startswith("ii_") for i in items.values())
    rec = reconcile(config, store, ledger, period)
    assert rec.clean and len(rec.tenants) == len(invoices), rec.summary_line()

    # lineage: an invoice line -> the hourly rows behind it -> the events counted into them
    inv = max(invoices, key=lambda v: v.total_minor)
    line = max(
        (ln for ln in ledger.lines(inv.invoice_id, inv.revision) if ln["kind"] == "usage"),
        key=lambda ln: ln["amount_minor"],
    )
    tr = trace_line(ledger, store, line["line_id"], event_limit=10**9)
    assert (
        sum(r["usage_us"] for r in tr.rows)
        == line["usage_us"]
        == sum(r["usage_us_now"] for r in tr.rows)
    )
    assert len(tr.rows) == line["hourly_rows"] and tr.events_total == len(tr.events) > 0
    # every sample of those rows, and none other: their µs inside the rows' hours add up
    in_rows = 0
    for e in tr.events:
        for hour in e["hours"]:
            h0 = int(hour.timestamp()) * 10**6
            overlap = min(e["end_us"], h0 + 3600 * 10**6) - max(e["start_us"], h0)
            in_rows += overlap * e["gpu_count"]
    assert in_rows == line["usage_us"]
    internal = {t for t, ten in config.reference.tenants.items() if ten.kind == "internal"}
    charged = defaultdict(int)
    for row in ChargebackLedger(ex).journal(str(period)):
        charged[row["tenant_id"]] += row["amount_minor"]
    for tenant in internal & set(expected):
        assert from_minor(charged[tenant], "USD") == expected[tenant][1]

    http.recorded.clear()
    again = billing.run(period)
    assert http.recorded == []
    assert [(r.tenant_id, r.amount) for r in again.results] == [
        (r.tenant_id, r.amount) for r in report.results
    ]
    ex.close()
    drop_database(settings)
