"""Adjustments: usage that arrives after its period was invoiced is charged on the tenant's
next invoice, as lines that reference the original period. A finalized invoice never changes.

For each line of a closed period, the adjustment is what the line is worth now (rated from all
usage known today) minus what was charged for it so far (the invoice line plus earlier
adjustments). Amounts are differences of line amounts that were each rounded once, so an
adjustment is exact and never needs rounding of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from pipeline.domain.money import from_minor
from pipeline.domain.rating import Line, gpu_hours
from pipeline.domain.reference import GpuCatalog

ADJ_PREFIX = "adj/"


@dataclass(frozen=True, slots=True)
class Billed:
    """What has been charged so far for one line of a closed period."""

    amount_minor: int
    usage_us: int


def adjustment_lines(
    original_period: str,
    current: list[Line],
    billed: dict[str, Billed],
    catalog: GpuCatalog,
    currency: str,
) -> list[Line]:
    now = {ln.line_key: ln for ln in current}
    out = []
    for key in sorted(now.keys() | billed.keys()):
        ln = now.get(key)
        was = billed.get(key, Billed(0, 0))
        delta_minor = (ln.amount_minor if ln else 0) - was.amount_minor
        if delta_minor == 0:
            continue
        model, _, profile = key.partition("/")
        profile = "" if profile == "full" else profile
        delta_us = (ln.usage_us if ln else 0) - was.usage_us
        price = ln.unit_price if ln else from_minor(0, currency)
        label = ln.description if ln else key
        out.append(
            Line(
                line_key=f"{ADJ_PREFIX}{original_period}/{key}",
                description=f"Adjustment for {original_period}: {label}, usage received "
                f"after that period was invoiced",
                gpu_model=model,
                mig_profile=profile,
                quantity=gpu_hours(delta_us, catalog.fraction(model, profile))
                if model in catalog.gpus
                else Fraction(0),
                unit_price=price,
                amount=from_minor(delta_minor, currency),
                currency=currency,
                hourly_rows=ln.hourly_rows if ln else 0,
                usage_us=delta_us,
                busy_us=0,
                source_keys=ln.source_keys if ln else (),
            )
        )
    return out
