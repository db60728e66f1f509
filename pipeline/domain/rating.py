"""Rate cards and the per-unit charge model: price x GPU-hours, one line per GPU model and
MIG profile. A MIG instance pays its fraction of the parent GPU's hourly price (brief §4, §5).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.hours import HOUR_US
from pipeline.domain.money import minor_digits, round_money, to_minor
from pipeline.domain.reference import GpuCatalog
from pipeline.domain.usage import HourlyKey


class RateCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str = ""
    prices: dict[str, Decimal] = Field(description="GPU model -> price per full-GPU hour")

    @field_validator("prices", mode="before")
    @classmethod
    def _no_floats(cls, v: object) -> object:
        if isinstance(v, dict):
            for model, price in v.items():
                if isinstance(price, float):
                    raise ValueError(
                        f"price of {model} is a binary float ({price!r}); write it as a quoted "
                        f"decimal string, e.g. '{price}'"
                    )
        return v

    @field_validator("prices")
    @classmethod
    def _positive(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        for model, price in v.items():
            if not price.is_finite() or price < 0:
                raise ValueError(f"price of {model} must be a finite amount >= 0, got {price}")
        return v

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, v: str) -> str:
        minor_digits(v)
        return v


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One hourly aggregate as read back from the store."""

    key: HourlyKey
    usage_us: int
    busy_us: int = 0


@dataclass(frozen=True)
class Line:
    line_key: str  # stable within (tenant, period): e.g. "H100/3g.40gb"
    description: str
    gpu_model: str
    mig_profile: str
    quantity: Fraction  # GPU-hours, exact
    unit_price: Decimal
    amount: Decimal  # rounded once, here
    currency: str
    hourly_rows: int
    usage_us: int
    busy_us: int
    source_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def quantity_display(self) -> Decimal:
        """GPU-hours to 6 decimals, for documents (amounts use the exact quantity)."""
        return Decimal(self.quantity.numerator) / Decimal(self.quantity.denominator)

    @property
    def amount_minor(self) -> int:
        return to_minor(self.amount, self.currency)


def gpu_hours(usage_us: int, fraction: Fraction) -> Fraction:
    return Fraction(usage_us, HOUR_US) * fraction


def rate_per_unit(rows: Iterable[UsageRow], card: RateCard, catalog: GpuCatalog) -> list[Line]:
    """Group a tenant's hourly rows by GPU model and MIG profile and price each group."""
    groups: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    for row in rows:
        groups[(row.key.gpu_model, row.key.mig_profile)].append(row)
    lines = []
    for (model, profile), members in sorted(groups.items()):
        price = card.prices.get(model)
        if price is None:
            raise BillingError(
                BillingErrorCode.NO_PRICE,
                f"rate card {card.id!r} has no price for GPU model {model!r}",
            )
        usage = sum(r.usage_us for r in members)
        qty = gpu_hours(usage, catalog.fraction(model, profile))
        label = f"{model} GPU-hours" + (f" (MIG {profile})" if profile else "")
        lines.append(
            Line(
                line_key=f"{model}/{profile or 'full'}",
                description=label,
                gpu_model=model,
                mig_profile=profile,
                quantity=qty,
                unit_price=price,
                amount=round_money(qty * Fraction(price), card.currency),
                currency=card.currency,
                hourly_rows=len(members),
                usage_us=usage,
                busy_us=sum(r.busy_us for r in members),
                source_keys=tuple(sorted(r.key.encode() for r in members)),
            )
        )
    return lines


def idempotency_key(kind: str, *parts: object) -> str:
    """Stripe idempotency key derived from what is billed: same content, same key."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:40]
    return f"gpumeter-{kind}-{digest}"
