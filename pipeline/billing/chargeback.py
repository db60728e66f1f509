"""Chargeback for internal teams (brief §6): each usage line debits the team's cost centre and
credits the GPU platform's; a journal CSV for finance and one CSV per cost centre for its team.
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import Line
from pipeline.domain.reference import Tenant


def chargeback_rows(
    tenant: Tenant, period: Period, lines: list[Line], platform_cost_centre: str, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "period": str(period),
            "cost_centre": tenant.cost_centre or "",
            "tenant_id": tenant.id,
            "line_key": ln.line_key,
            "description": ln.description,
            "quantity": str(ln.quantity_display),
            "unit_price": str(ln.unit_price),
            "amount_minor": ln.amount_minor,
            "currency": ln.currency,
            "credit_cost_centre": platform_cost_centre,
            "usage_us": ln.usage_us,
            "busy_us": ln.busy_us,
            "created_at": now,
        }
        for ln in lines
    ]


def write_chargeback_files(out_root: Path, period: Period, rows: list[dict[str, Any]]) -> None:
    folder = out_root / str(period) / "chargeback"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "journal.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "period",
                "entry",
                "cost_centre",
                "tenant_id",
                "line_key",
                "description",
                "gpu_hours",
                "unit_price",
                "debit",
                "credit",
                "currency",
            ]
        )
        for r in rows:
            amount = str(from_minor(r["amount_minor"], r["currency"]))
            common = [
                r["tenant_id"],
                r["line_key"],
                r["description"],
                r["quantity"],
                r["unit_price"],
            ]
            w.writerow([r["period"], "debit", r["cost_centre"], *common, amount, "", r["currency"]])
            w.writerow(
                [
                    r["period"],
                    "credit",
                    r["credit_cost_centre"],
                    *common,
                    "",
                    amount,
                    r["currency"],
                ]
            )
    by_cc: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_cc.setdefault(r["cost_centre"], []).append(r)
    for cc, cc_rows in by_cc.items():
        with (folder / f"{cc.replace('/', '__')}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "period",
                    "cost_centre",
                    "line",
                    "gpu_hours",
                    "unit_price",
                    "cost",
                    "currency",
                    "efficiency_pct",
                ]
            )
            for r in cc_rows:
                eff = (
                    (Decimal(r["busy_us"]) * 100 / Decimal(r["usage_us"])).quantize(Decimal("0.1"))
                    if r["usage_us"]
                    else ""
                )
                w.writerow(
                    [
                        r["period"],
                        cc,
                        r["description"],
                        r["quantity"],
                        r["unit_price"],
                        str(from_minor(r["amount_minor"], r["currency"])),
                        r["currency"],
                        eff,
                    ]
                )
