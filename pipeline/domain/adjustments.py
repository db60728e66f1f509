"""Adjustments: usage that arrives after its period was invoiced is charged on the tenant's
next invoice, as lines that reference the original period. A finalized invoice never changes.

The closed period is composed again from all usage known today, with its contract's terms
(discount, minimum commitment, credits), and each of its lines is compared with what was
charged for it so far (the invoice line plus earlier adjustments). So usage that arrives late
in a month whose minimum commitment was not met is absorbed by a smaller true-up: the usage
adjustment and the true-up adjustment cancel. Amounts are differences of line amounts that were
each rounded once, so an adjustment is exact and never needs rounding of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from pipeline.domain.line_key import LineKey
from pipeline.domain.money import from_minor
from pipeline.domain.rating import Line, fixed_line


@dataclass(frozen=True, slots=True)
class Billed:
    """What has been charged so far for one line of a closed period."""

    amount_minor: int
    usage_us: int
    quantity: Fraction = Fraction(0)


def adjustment_lines(
    original_period: str,
    current: list[Line],
    billed: dict[str, Billed],
    currency: str,
    closed_as: str = "invoiced",
) -> list[Line]:
    """Lines for a later document correcting ``original_period``: for each line key, what
    the period's lines come to now minus what was ``billed`` for it so far (no line where
    they agree). ``closed_as`` words the descriptions ("invoiced", "charged back")."""
    now = {ln.line_key: ln for ln in current}
    out = []
    for key in sorted(now.keys() | billed.keys()):
        ln = now.get(key)
        was = billed.get(key, Billed(0, 0, Fraction(0)))
        delta_minor = (ln.amount_minor if ln else 0) - was.amount_minor
        if delta_minor == 0:
            continue
        amount = from_minor(delta_minor, currency)
        label = ln.description if ln else key
        line_key = LineKey(key)
        adj_key = line_key.adjustment_for(original_period).format()
        if line_key.is_fixed:  # discount, minimum true-up or credit recomputed for the period
            out.append(
                fixed_line(
                    adj_key,
                    "adjustment",
                    f"Adjustment for {original_period}: {label}, recomputed with the usage "
                    f"received after that period was {closed_as}",
                    amount,
                    currency,
                    original_period,
                )
            )
            continue
        if ln is not None:
            model, profile = ln.gpu_model, ln.mig_profile
        else:  # a line the period no longer has
            model, profile = line_key.gpu_model, line_key.mig_profile
        out.append(
            Line(
                line_key=adj_key,
                description=f"Adjustment for {original_period}: {label}, usage received "
                f"after that period was {closed_as}",
                gpu_model=model,
                mig_profile=profile,
                quantity=(ln.quantity if ln else Fraction(0)) - was.quantity,
                unit_price=ln.unit_price if ln else from_minor(0, currency),
                amount=amount,
                currency=currency,
                hourly_rows=ln.hourly_rows if ln else 0,
                usage_us=(ln.usage_us if ln else 0) - was.usage_us,
                busy_us=0,
                source_keys=ln.source_keys if ln else (),
                kind="adjustment",
                period_ref=original_period,
            )
        )
    return out
