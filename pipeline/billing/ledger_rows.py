"""An invoice revision as the ledger's rows (``schemas/clickhouse/0005_ledger.sql``): its header,
its lines and the lineage of its usage lines. Pure mapping: no I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.billing.documents import fraction_text
from pipeline.billing.stripe_sync import item_key
from pipeline.domain.invoice import Composition
from pipeline.domain.money import to_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import Line, UsageRow

Revision = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


def content_hash(lines: list[Line]) -> str:
    """What a revision bills: a new revision only when this changes."""
    h = hashlib.sha256()
    for ln in lines:
        h.update(
            f"{ln.line_key}|{ln.kind}|{ln.period_ref}|{ln.quantity}|{ln.unit_price}|"
            f"{ln.amount}|{ln.currency}\n".encode()
        )
    return h.hexdigest()


def seq(at: datetime) -> int:
    """Orders status events recorded in the same second."""
    return int(at.timestamp() * 1_000_000)


def header_row(
    invoice_id: str,
    revision: int,
    tenant_id: str,
    period: Period,
    currency: str,
    comp: Composition,
    payment_terms_days: int,
    now: datetime,
) -> dict[str, Any]:
    issued = period.end
    return {
        "invoice_id": invoice_id,
        "revision": revision,
        "tenant_id": tenant_id,
        "period": str(period),
        "currency": currency,
        "subtotal_minor": to_minor(comp.subtotal, currency),
        "credits_minor": to_minor(comp.credits, currency),
        "tax_minor": 0,
        "total_minor": to_minor(comp.total, currency),
        "line_count": len(comp.lines),
        "content_hash": content_hash(comp.lines),
        "issued_at": issued,
        "due_at": issued + timedelta(days=payment_terms_days),
        "created_at": now,
    }


def line_rows(
    invoice_id: str,
    revision: int,
    tenant_id: str,
    period: str,
    currency: str,
    comp: Composition,
) -> list[dict[str, Any]]:
    """The ledger rows of a revision's lines."""
    return [
        {
            "invoice_id": invoice_id,
            "revision": revision,
            "line_key": ln.line_key,
            "line_id": f"{invoice_id}/{ln.line_key}",
            "tenant_id": tenant_id,
            "period": period,
            "kind": ln.kind,
            "period_ref": ln.period_ref or period,
            "description": ln.description,
            "gpu_model": ln.gpu_model,
            "mig_profile": ln.mig_profile,
            "quantity": str(ln.quantity_display),
            "quantity_exact": fraction_text(ln.quantity),
            "unit": ln.unit,
            "unit_price": str(ln.unit_price),
            "amount_minor": ln.amount_minor,
            "exact_amount": fraction_text(ln.exact),
            "currency": currency,
            "usage_us": ln.usage_us,
            "hourly_rows": ln.hourly_rows,
            "stripe_invoice_item_id": "",
            "idempotency_key": item_key(invoice_id, revision, ln),
        }
        for ln in comp.lines
    ]


def source_rows(
    invoice_id: str, revision: int, tenant_id: str, comp: Composition, rows: list[UsageRow]
) -> list[dict[str, Any]]:
    """Lineage: the hourly rows behind each usage line, with their GPU-µs at billing."""
    usage_by_key = {r.key: r.usage_us for r in rows}
    return [
        {
            "invoice_id": invoice_id,
            "revision": revision,
            "line_key": ln.line_key,
            "tenant_id": tenant_id,
            "hour": datetime.fromtimestamp(k.hour_s, UTC),
            "project_id": k.project_id,
            "gpu_model": k.gpu_model,
            "mig_profile": k.mig_profile,
            "region": k.region,
            "provider": k.provider,
            "cluster": k.cluster,
            "usage_us": usage_by_key[k],
        }
        for ln in comp.lines
        if ln.kind == "usage"
        for k in ln.source_keys
    ]
