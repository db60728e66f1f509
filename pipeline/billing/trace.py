"""Lineage: from an invoice line to the hourly usage rows behind it, and from those to the
usage events (CloudEvents ``source`` + ``id``) that were counted into them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.adapters.ledger import Ledger, source_key
from pipeline.adapters.store import Store
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.hours import US_PER_SECOND, split_by_hour
from pipeline.domain.period import Period


@dataclass
class Trace:
    line: dict[str, Any]
    status: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # with usage_us_now
    events: list[dict[str, Any]] = field(default_factory=list)
    events_total: int = 0


def trace_line(
    ledger: Ledger,
    store: Store,
    line_id: str,
    event_limit: int = 50,
    max_interval_s: int = 3600,
) -> Trace:
    invoice_id, sep, line_key = line_id.partition("/")
    view = ledger.invoice(invoice_id) if sep else None
    if view is None:
        raise BillingError(
            BillingErrorCode.INVOICE_NOT_FOUND,
            f"no invoice line {line_id!r} (a line id is '<invoice id>/<line key>', as listed by "
            f"`gpumeter invoices show <invoice id>`)",
        )
    line = next(
        (ln for ln in ledger.lines(invoice_id, view.revision) if ln["line_key"] == line_key), None
    )
    if line is None:
        raise BillingError(
            BillingErrorCode.INVOICE_NOT_FOUND, f"invoice {invoice_id} has no line {line_key!r}"
        )
    out = Trace(line, view.status)
    if line["kind"] != "usage":
        return out
    out.rows = ledger.line_sources(invoice_id, view.revision, line_key)
    if not out.rows:
        return out
    tenant = view.tenant_id
    usage = store.hourly_rows(Period.parse(view.period), tenant).get(tenant, [])
    now = {u.key: u.usage_us for u in usage}
    keys = set()
    for r in out.rows:
        key = source_key(tenant, r)
        r["usage_us_now"] = now.get(key, 0)
        keys.add(key)
    # a sample is stored under the hour it starts in but counts in every hour it covers, so
    # look one interval earlier and keep the samples that cover one of the rows' hours
    events = store.events_for(
        view.tenant_id,
        min(r["hour"] for r in out.rows) - timedelta(seconds=max_interval_s),
        max(r["hour"] for r in out.rows),
        line["gpu_model"],
    )
    matching = []
    for e in events:
        e["gpu_model"] = line["gpu_model"]
        e["hours"] = []
        for h, _ in split_by_hour(e["start_us"], e["end_us"]):
            hour = datetime.fromtimestamp(h // US_PER_SECOND, UTC)
            if source_key(tenant, {**e, "hour": hour}) in keys:
                e["hours"].append(hour)
        if e["hours"]:
            matching.append(e)
    out.events_total = len(matching)
    out.events = matching[:event_limit]
    return out
