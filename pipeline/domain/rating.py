"""Rate cards and rating: hourly usage rows -> priced usage lines (brief §4, §5).

A rate card holds prices per GPU model, optionally narrowed by region, provider and tier, with
effective dates; each price uses one charge model (per unit, graduated or volume tiers, see
:mod:`pipeline.domain.charges`). A MIG instance pays its fraction of the parent GPU's price.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.domain.charges import Tier, check_tiers, graduated, volume
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.hours import HOUR_US, check_window, on_whole_hour
from pipeline.domain.line_key import LineKey
from pipeline.domain.money import minor_digits, refuse_float, round_money, to_minor
from pipeline.domain.reference import GpuCatalog
from pipeline.domain.usage import HourlyKey

PriceTier = Literal["on-demand", "reserved", "spot"]
ChargeModel = Literal["per_unit", "graduated", "volume"]


class Price(BaseModel):
    """One price of a rate card: a GPU model, optionally narrowed by region, provider and tier,
    valid from ``effective_from`` (inclusive) until ``effective_until`` (exclusive).

    ``charge`` picks the charge model: ``per_unit`` takes ``price``; ``graduated`` and
    ``volume`` take ``tiers`` (thresholds in full-GPU-hours per period). Prices are per
    full-GPU hour; a MIG slice pays its fraction. Effective dates fall on whole UTC hours,
    because usage is metered per hour: a price change splits the usage at that instant.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_model: str
    region: str | None = None
    provider: str | None = None
    tier: PriceTier | None = None
    effective_from: AwareDatetime | None = None
    effective_until: AwareDatetime | None = None
    charge: ChargeModel = "per_unit"
    price: Decimal | None = None
    tiers: list[Tier] | None = None

    @field_validator("price", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        return refuse_float(v)

    @field_validator("effective_from", "effective_until")
    @classmethod
    def _whole_hour(cls, v: datetime | None) -> datetime | None:
        return on_whole_hour(v)

    @model_validator(mode="after")
    def _consistent(self) -> Price:
        if self.charge == "per_unit":
            if self.price is None or self.tiers is not None:
                raise ValueError("a per_unit price needs 'price' (and no 'tiers')")
            if not self.price.is_finite() or self.price < 0:
                raise ValueError(f"price must be a finite amount >= 0, got {self.price}")
        else:
            if self.tiers is None or self.price is not None:
                raise ValueError(f"a {self.charge} price needs 'tiers' (and no 'price')")
            check_tiers(self.tiers)
        check_window(self.effective_from, self.effective_until)
        return self

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Most narrowing dimensions first; ties: region, then provider, then tier."""
        dims = (self.region is not None, self.provider is not None, self.tier is not None)
        return (sum(dims), *dims)

    @property
    def key(self) -> str:
        """Stable id inside a line key: '' for a plain, always-valid price."""
        parts = [
            f"{name}={value}"
            for name, value in (
                ("region", self.region),
                ("provider", self.provider),
                ("tier", self.tier),
                ("from", _hour_text(self.effective_from)),
                ("until", _hour_text(self.effective_until)),
            )
            if value
        ]
        return ",".join(parts)

    def valid_at(self, when: datetime) -> bool:
        return (self.effective_from is None or self.effective_from <= when) and (
            self.effective_until is None or when < self.effective_until
        )

    def matches(self, key: HourlyKey, tier: str) -> bool:
        return (
            self.gpu_model == key.gpu_model
            and self.region in (None, key.region)
            and self.provider in (None, key.provider)
            and self.tier in (None, tier)
        )

    def overlaps(self, other: Price) -> bool:
        lo = max(_t(self.effective_from, _MIN), _t(other.effective_from, _MIN))
        hi = min(_t(self.effective_until, _MAX), _t(other.effective_until, _MAX))
        return lo < hi


_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)


def _t(v: datetime | None, default: datetime) -> datetime:
    return default if v is None else v


def _hour_text(v: datetime | None) -> str:
    return v.strftime("%Y-%m-%dT%H") if v is not None else ""


class RateCard(BaseModel):
    """Prices in one currency. ``prices`` is a list of :class:`Price`; the short form
    ``{H100: "2.49", ...}`` means per-unit prices valid for every region, provider and tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str = ""
    prices: list[Price]

    @field_validator("prices", mode="before")
    @classmethod
    def _short_form(cls, v: object) -> object:
        if isinstance(v, dict):
            return [
                {"gpu_model": model, **price}
                if isinstance(price, dict)
                else {"gpu_model": model, "price": price}
                for model, price in v.items()
            ]
        return v

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, v: str) -> str:
        minor_digits(v)
        return v

    @model_validator(mode="after")
    def _no_ambiguity(self) -> RateCard:
        for i, a in enumerate(self.prices):
            for b in self.prices[i + 1 :]:
                same = (a.gpu_model, a.region, a.provider, a.tier) == (
                    b.gpu_model,
                    b.region,
                    b.provider,
                    b.tier,
                )
                if same and a.overlaps(b):
                    where = f"{a.key or 'no narrowing'} / {b.key or 'no narrowing'}"
                    raise ValueError(
                        f"two prices for {a.gpu_model} ({where}) are valid at the same time: "
                        "give them effective dates that do not overlap"
                    )
        return self

    def price_for(self, key: HourlyKey, tier: str) -> Price:
        """The price of one hourly row: the most specific price valid at its hour."""
        when = datetime.fromtimestamp(key.hour_s, UTC)
        found = [p for p in self.prices if p.matches(key, tier) and p.valid_at(when)]
        if not found:
            raise BillingError(
                BillingErrorCode.NO_PRICE,
                f"rate card {self.id!r} has no price for GPU model {key.gpu_model!r} "
                f"(region {key.region!r}, provider {key.provider!r}, tier {tier}) at "
                f"{when.isoformat()}; usage key: tenant {key.tenant_id!r}, hour "
                f"{when.isoformat()}, project {key.project_id!r}, GPU model "
                f"{key.gpu_model!r}, MIG profile {key.mig_profile!r}, region {key.region!r}, "
                f"provider {key.provider!r}, cluster {key.cluster!r}",
            )
        return max(found, key=lambda p: p.specificity)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One hourly aggregate as read back from the store."""

    key: HourlyKey
    usage_us: int
    busy_us: int = 0


@dataclass(frozen=True)
class Line:
    line_key: str  # stable within (tenant, period): e.g. "H100/3g.40gb" or "H100/full@tier=spot"
    description: str
    gpu_model: str
    mig_profile: str
    quantity: Fraction  # GPU-hours, exact (1 for a fixed line)
    unit_price: Decimal
    amount: Decimal  # rounded once, here
    currency: str
    hourly_rows: int
    usage_us: int
    busy_us: int
    source_keys: tuple[HourlyKey, ...] = field(default=(), repr=False)  # lineage
    kind: str = "usage"  # usage | discount | minimum | credit | adjustment | tax
    period_ref: str = ""  # the usage period it belongs to ("" = the invoice's own)
    exact_amount: Fraction | None = None  # before rounding (usage lines), for reconciliation
    unit: str = "GPU-h"

    @property
    def quantity_display(self) -> Decimal:
        """GPU-hours to 6 decimals, for documents (amounts use the exact quantity)."""
        return (Decimal(self.quantity.numerator) / Decimal(self.quantity.denominator)).quantize(
            Decimal("0.000001")
        )

    @property
    def amount_minor(self) -> int:
        return to_minor(self.amount, self.currency)

    @property
    def exact(self) -> Fraction:
        return Fraction(self.amount) if self.exact_amount is None else self.exact_amount


def fixed_line(
    key: str, kind: str, description: str, amount: Decimal, currency: str, period_ref: str = ""
) -> Line:
    """A line without usage behind it (discount, true-up, credit, their adjustments)."""
    return Line(
        line_key=key,
        description=description,
        gpu_model="",
        mig_profile="",
        quantity=Fraction(1),
        unit_price=amount,
        amount=amount,
        currency=currency,
        hourly_rows=0,
        usage_us=0,
        busy_us=0,
        kind=kind,
        period_ref=period_ref,
        unit="",
    )


def gpu_hours(usage_us: int, fraction: Fraction) -> Fraction:
    return Fraction(usage_us, HOUR_US) * fraction


def usage_hours(rows: Iterable[UsageRow], catalog: GpuCatalog) -> Fraction:
    """Full-GPU-hours of ``rows`` (a model or MIG profile the catalogue lacks counts whole)."""
    total = Fraction(0)
    for r in rows:
        try:
            fraction = catalog.fraction(r.key.gpu_model, r.key.mig_profile)
        except KeyError:
            fraction = Fraction(1)
        total += gpu_hours(r.usage_us, fraction)
    return total


@dataclass(frozen=True)
class RatedUsage:
    """Usage lines plus the exact amount charged in each hour (what prepaid credits, which
    are valid for part of a period, are drawn against)."""

    lines: list[Line]
    hourly: dict[int, Fraction]  # hour (epoch s) -> exact amount

    @property
    def subtotal(self) -> Decimal:
        return sum((ln.amount for ln in self.lines), Decimal(0))


def rate_usage(
    rows: Iterable[UsageRow],
    card: RateCard,
    catalog: GpuCatalog,
    tier_of: Callable[[HourlyKey], str] = lambda _key: "on-demand",
) -> RatedUsage:
    """Price a tenant's hourly rows for one period.

    Each row gets the most specific price valid at its hour (so a price change mid-period
    splits the usage at that instant). Per-unit prices give one line per GPU model, MIG
    profile and price; graduated and volume prices give lines per tier, over the full-GPU-hours
    of all rows that price covers in the period.
    """
    per_unit: dict[tuple[str, str, str], list[UsageRow]] = defaultdict(list)
    tiered: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    chosen: dict[str, Price] = {}
    # the prices that can match a (model, region, provider, tier), most specific first
    candidates: dict[tuple[str, str, str, str], list[tuple[Price, str]]] = {}
    for row in rows:
        k, tier = row.key, tier_of(row.key)
        found = candidates.get((k.gpu_model, k.region, k.provider, tier))
        if found is None:
            matching = [p for p in card.prices if p.matches(k, tier)]
            matching.sort(key=lambda p: p.specificity, reverse=True)  # stable: file order
            found = candidates[(k.gpu_model, k.region, k.provider, tier)] = [
                (p, p.key) for p in matching
            ]
        when = datetime.fromtimestamp(k.hour_s, UTC)
        hit = next(((p, key) for p, key in found if p.valid_at(when)), None)
        if hit is None:
            card.price_for(k, tier)  # raises the coded error that says what is missing
            raise AssertionError("unreachable")
        price, pkey = hit
        chosen[pkey + "#" + price.gpu_model] = price
        if price.charge == "per_unit":
            per_unit[(price.gpu_model, k.mig_profile, pkey)].append(row)
        else:
            tiered[(price.gpu_model, pkey)].append(row)
    lines: list[Line] = []
    hourly: dict[int, Fraction] = defaultdict(Fraction)
    for (model, profile, pkey), members in sorted(per_unit.items()):
        price = chosen[pkey + "#" + model]
        assert price.price is not None
        frac = catalog.fraction(model, profile)
        usage = sum(r.usage_us for r in members)
        qty = gpu_hours(usage, frac)
        exact = qty * Fraction(price.price)
        per_us = frac * Fraction(price.price) / HOUR_US  # one exact rate, not one per row
        by_hour: dict[int, int] = defaultdict(int)
        for r in members:
            by_hour[r.key.hour_s] += r.usage_us
        for hour_s, us in by_hour.items():
            hourly[hour_s] += us * per_us
        label = f"{model} GPU-hours" + (f" (MIG {profile})" if profile else "")
        lines.append(
            _usage_line(
                LineKey.usage(model, profile, pkey).format(),
                label + _narrowing(price),
                model,
                profile,
                qty,
                price.price,
                exact,
                card.currency,
                members,
            )
        )
    for (model, pkey), members in sorted(tiered.items()):
        price = chosen[pkey + "#" + model]
        assert price.tiers is not None
        qtys = [gpu_hours(r.usage_us, catalog.fraction(model, r.key.mig_profile)) for r in members]
        total_qty = sum(qtys, Fraction(0))
        charges = (graduated if price.charge == "graduated" else volume).charge(
            f"{model} GPU-hours{_narrowing(price)}", total_qty, price.tiers, card.currency
        )
        exact_total = sum((c.quantity * Fraction(c.unit_price) for c in charges), Fraction(0))
        for r, q in zip(members, qtys, strict=True):
            if total_qty:
                hourly[r.key.hour_s] += exact_total * q / total_qty
        for c in charges:
            lines.append(
                _usage_line(
                    LineKey.tier(model, c.tier, pkey).format(),
                    c.label,
                    model,
                    "",
                    c.quantity,
                    c.unit_price,
                    c.quantity * Fraction(c.unit_price),
                    card.currency,
                    members,
                    amount=c.amount,
                )
            )
    return RatedUsage(lines, dict(hourly))


def _narrowing(price: Price) -> str:
    parts = [v for v in (price.region, price.provider, price.tier) if v]
    if price.effective_from or price.effective_until:
        since = price.effective_from.strftime("%Y-%m-%d %H:%M") if price.effective_from else ""
        until = price.effective_until.strftime("%Y-%m-%d %H:%M") if price.effective_until else ""
        parts.append(
            f"{since}..{until} UTC"
            if since and until
            else f"from {since} UTC"
            if since
            else f"until {until} UTC"
        )
    return f" [{', '.join(parts)}]" if parts else ""


def _usage_line(
    key: str,
    description: str,
    model: str,
    profile: str,
    qty: Fraction,
    unit_price: Decimal,
    exact: Fraction,
    currency: str,
    members: list[UsageRow],
    amount: Decimal | None = None,
) -> Line:
    return Line(
        line_key=key,
        description=description,
        gpu_model=model,
        mig_profile=profile,
        quantity=qty,
        unit_price=unit_price,
        amount=round_money(exact, currency) if amount is None else amount,
        currency=currency,
        hourly_rows=len(members),
        usage_us=sum(r.usage_us for r in members),
        busy_us=sum(r.busy_us for r in members),
        source_keys=tuple(sorted(r.key for r in members)),
        exact_amount=exact,
    )


def idempotency_key(kind: str, *parts: object) -> str:
    """Stripe idempotency key derived from what is billed: same content, same key."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:40]
    return f"gpumeter-{kind}-{digest}"
