"""Partner usage exports as FinOps FOCUS 1.2 rows (brief §7): pure.

A partner (a provider whose data centres host GPUs we use) receives, per billing period, the
usage that ran on its capacity, priced on its **wholesale rate card** (what it charges us),
one row per hour, consumer, region, cluster, GPU model and MIG profile. Who is who (FOCUS 1.2
definitions, see ``docs/exports.md``):

* ``ProviderName``, ``PublisherName``, ``InvoiceIssuerName``: the partner. It makes the GPU
  capacity available, produces it, and invoices us for it.
* ``BillingAccountId/Name``: our account with the partner (from its wholesale card).
* ``SubAccountId/Name``: the consumer (our tenant) under a per-partner pseudonym
  (:func:`pseudonym`); names of customers, teams and projects never appear.

Quantities and money (the one rounding, stated): ``PricingQuantity`` (GPU-hours, MIG fraction
applied) and ``ConsumedQuantity`` (hours of the allocated GPU instance) are the exact values
rounded half away from zero to :data:`QUANTITY_PLACES` decimal places; every cost is the
exact product of a unit price and that rounded quantity (no second rounding), so
``ListCost = ListUnitPrice x PricingQuantity`` holds exactly, as FOCUS requires.
``x_UsageMicroseconds`` carries the exact integer behind each row.

Corrections: usage metered for an hour after that hour's export was delivered becomes a row
with ``ChargeClass = "Correction"`` and the original hour as its charge period in the next
export built; its quantities are the difference between the rounded current value and the
rounded value delivered so far, so a key's delivered rows always add up to its rounded
current value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from fractions import Fraction
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.domain.errors import ExportError, ExportErrorCode
from pipeline.domain.hours import HOUR_US, check_window, on_whole_hour
from pipeline.domain.money import minor_digits, refuse_float
from pipeline.domain.period import Period
from pipeline.domain.reference import ID_PATTERN, GpuCatalog

FOCUS_VERSION = "1.2"
DATASET = "CostAndUsage"
QUANTITY_PLACES = 9  # GPU-hours: 1e-9 GPU-hour = 3.6 GPU-micro-seconds
PRICE_PLACES = 6  # at most this many decimals in a wholesale price
COST_PLACES = QUANTITY_PLACES + PRICE_PLACES  # a price x a quantity is exact at this scale
PRICING_UNIT = "GPU-Hours"
CONSUMED_UNIT = "GPU Instance-Hours"
TAG_PREFIX = "gpumeter/"  # our provider-defined tag scheme
# What the dataset supports, in FOCUS 1.2's applicability criteria (focus-validator checks the
# conditional columns these call for). Not supported: availability zones, capacity
# reservations, commitment discounts, several pricing categories / account types, pricing in
# another currency than billing, virtual currencies.
APPLICABILITY: tuple[str, ...] = (
    "ACCOUNT_NAMING_SUPPORTED",
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
    "NEGOTIATED_PRICING_SUPPORTED",
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "REGION_SUPPORTED",
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",
    "TAGGING_SUPPORTED",
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)

ColumnKind = Literal["string", "decimal", "datetime", "integer", "json"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind
    scale: int = 0  # decimals: digits after the point (Parquet decimal128(38, scale))
    nullable: bool = False

    @property
    def focus(self) -> bool:
        """A FOCUS column (custom ones start with ``x_``)."""
        return not self.name.startswith("x_")


def _d(name: str, scale: int, nullable: bool = False) -> Column:
    return Column(name, "decimal", scale, nullable)


def _s(name: str, nullable: bool = False) -> Column:
    return Column(name, "string", 0, nullable)


def _t(name: str) -> Column:
    return Column(name, "datetime")


# FOCUS columns in the spec's alphabetical order, then ours (x_). Types as FOCUS 1.2 defines
# them; the Parquet file stores decimals as decimal128(38, scale), date/times as UTC
# timestamps; the CSV file writes date/times as ISO 8601 with a Z and decimals in plain
# notation.
COLUMNS: tuple[Column, ...] = (
    _d("BilledCost", COST_PLACES),
    _s("BillingAccountId"),
    _s("BillingAccountName"),
    _s("BillingCurrency"),
    _t("BillingPeriodEnd"),
    _t("BillingPeriodStart"),
    _s("ChargeCategory"),
    _s("ChargeClass", nullable=True),
    _s("ChargeDescription"),
    _s("ChargeFrequency"),
    _t("ChargePeriodEnd"),
    _t("ChargePeriodStart"),
    # always null (we have no commitment discounts); present because focus-validator 2.2.1's
    # ConsumedQuantity rules read it and fail when it is missing
    _s("CommitmentDiscountStatus", nullable=True),
    _d("ConsumedQuantity", QUANTITY_PLACES),
    _s("ConsumedUnit"),
    _d("ContractedCost", COST_PLACES),
    _d("ContractedUnitPrice", PRICE_PLACES),
    _d("EffectiveCost", COST_PLACES),
    _s("InvoiceId"),
    _s("InvoiceIssuerName"),
    _d("ListCost", COST_PLACES),
    _d("ListUnitPrice", PRICE_PLACES),
    _s("PricingCategory"),
    _s("PricingCurrency"),
    _d("PricingCurrencyContractedUnitPrice", PRICE_PLACES),
    _d("PricingCurrencyEffectiveCost", COST_PLACES),
    _d("PricingCurrencyListUnitPrice", PRICE_PLACES),
    _d("PricingQuantity", QUANTITY_PLACES),
    _s("PricingUnit"),
    _s("ProviderName"),
    _s("PublisherName"),
    _s("RegionId"),
    _s("RegionName"),
    _s("ResourceId"),
    _s("ResourceName"),
    _s("ResourceType"),
    _s("ServiceCategory"),
    _s("ServiceName"),
    _s("ServiceSubcategory"),
    _s("SkuId"),
    _s("SkuMeter"),
    Column("SkuPriceDetails", "json"),
    _s("SkuPriceId"),
    _s("SubAccountId"),
    _s("SubAccountName"),
    Column("Tags", "json"),
    _s("x_Cluster"),
    _s("x_GpuModel"),
    _s("x_MigProfile"),
    _s("x_MigFraction"),
    _d("x_GpuHours", QUANTITY_PLACES),
    Column("x_UsageMicroseconds", "integer"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)


# -- the partner's wholesale rate card (reference data, config/wholesale.yaml) -------------------
class WholesalePrice(BaseModel):
    """What the partner charges us per full-GPU hour of one GPU model (a MIG instance: its
    fraction), optionally in one region only, valid from ``effective_from`` (inclusive) until
    ``effective_until`` (exclusive), both on whole UTC hours. ``list_price`` is the partner's
    published price, ``contracted_price`` what our agreement with it says (default: the list
    price)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_model: str
    region: str | None = None
    list_price: Decimal
    contracted_price: Decimal | None = None
    effective_from: AwareDatetime | None = None
    effective_until: AwareDatetime | None = None

    @field_validator("list_price", "contracted_price", mode="before")
    @classmethod
    def _floats(cls, v: object) -> object:
        return refuse_float(v)

    @field_validator("list_price", "contracted_price")
    @classmethod
    def _amount(cls, v: Decimal | None) -> Decimal | None:
        if v is None:
            return v
        if not v.is_finite() or v < 0:
            raise ValueError(f"a price must be a finite amount >= 0, got {v}")
        exponent = v.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -PRICE_PLACES:
            raise ValueError(f"{v} has more than {PRICE_PLACES} decimal places")
        return v

    @field_validator("effective_from", "effective_until")
    @classmethod
    def _whole_hour(cls, v: datetime | None) -> datetime | None:
        return on_whole_hour(v)

    @model_validator(mode="after")
    def _dates(self) -> WholesalePrice:
        check_window(self.effective_from, self.effective_until)
        return self

    @property
    def contracted(self) -> Decimal:
        return self.list_price if self.contracted_price is None else self.contracted_price

    @property
    def key(self) -> str:
        """Stable id of this price among the card's (model, region, start)."""
        start = self.effective_from.strftime("%Y-%m-%dT%H") if self.effective_from else "start"
        return f"{self.region or 'any'}@{start}"

    def valid_at(self, when: datetime) -> bool:
        return (self.effective_from is None or self.effective_from <= when) and (
            self.effective_until is None or when < self.effective_until
        )


class WholesaleCard(BaseModel):
    """One partner's wholesale terms: currency, our billing account with it, where its
    exports are pushed (optional) and its prices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner: str = Field(pattern=ID_PATTERN)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    billing_account_id: str = Field(min_length=1, max_length=128)
    billing_account_name: str = Field(min_length=1, max_length=256)
    service_name: str = Field(default="GPU Capacity", min_length=1, max_length=128)
    bucket: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?$",
        description="push delivery: s3://bucket[/prefix] on the S3 endpoint of the settings",
    )
    prices: list[WholesalePrice] = Field(min_length=1)

    @field_validator("currency")
    @classmethod
    def _known(cls, v: str) -> str:
        minor_digits(v)  # ValueError naming the known currencies
        return v

    @model_validator(mode="after")
    def _no_overlap(self) -> WholesaleCard:
        by_scope: dict[tuple[str, str | None], list[WholesalePrice]] = {}
        for p in self.prices:
            by_scope.setdefault((p.gpu_model, p.region), []).append(p)
        lowest = datetime.min.replace(tzinfo=UTC)
        highest = datetime.max.replace(tzinfo=UTC)
        for (model, region), prices in by_scope.items():
            spans = sorted(
                (p.effective_from or lowest, p.effective_until or highest) for p in prices
            )
            for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                if start < end:
                    where = f" in {region}" if region else ""
                    raise ValueError(
                        f"two prices for {model}{where} are valid at {start.isoformat()}"
                    )
        return self

    def price_at(self, gpu_model: str, region: str, when: datetime) -> WholesalePrice | None:
        """The price valid at ``when``: one for the region before one for every region."""
        found = [
            p
            for p in self.prices
            if p.gpu_model == gpu_model and p.region in (None, region) and p.valid_at(when)
        ]
        found.sort(key=lambda p: p.region is None)
        return found[0] if found else None


# -- consumers under a pseudonym --------------------------------------------------------------
def pseudonym(key: bytes, partner_id: str, tenant_id: str) -> str:
    """A consumer's id as one partner sees it: HMAC-SHA256 under our secret key of the
    (partner, tenant) pair. Stable for the pair while the key is unchanged; without the key it
    can neither be reversed nor linked to the same consumer's id at another partner. Finance
    maps it back by computing it for every tenant (``gpumeter exports consumers``)."""
    msg = json.dumps([partner_id, tenant_id], ensure_ascii=False, separators=(",", ":"))
    return "c-" + hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()[:24]


# -- rows ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, order=True)
class ExportKey:
    """What one row sums usage by: the hour, where it ran, the GPU and the consumer. Projects
    are summed up (their names are the consumer's)."""

    hour_s: int
    region: str
    cluster: str
    gpu_model: str
    mig_profile: str
    tenant_id: str

    @property
    def hour(self) -> datetime:
        return datetime.fromtimestamp(self.hour_s, UTC)


@dataclass(frozen=True, slots=True)
class Charge:
    """One row's quantities. ``usage_us``: GPU-instance micro-seconds it states (for a
    correction, the difference to what was delivered)."""

    key: ExportKey
    usage_us: int
    consumed: Decimal  # GPU-instance hours
    quantity: Decimal  # GPU-hours (MIG fraction applied)
    correction: bool = False


def round_places(exact: Fraction, places: int = QUANTITY_PLACES) -> Decimal:
    """``exact`` rounded half away from zero to ``places`` decimals."""
    scaled = abs(exact) * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    return Decimal(-whole if exact < 0 else whole).scaleb(-places)


def instance_hours(usage_us: int) -> Fraction:
    return Fraction(usage_us, HOUR_US)


def gpu_hours(usage_us: int, fraction: Fraction) -> Fraction:
    return Fraction(usage_us, HOUR_US) * fraction


def usage_charges(cells: Mapping[ExportKey, int], catalog: GpuCatalog) -> list[Charge]:
    """One charge per key with usage in the period."""
    out = []
    for key, usage in sorted(cells.items()):
        if usage == 0:
            continue
        f = catalog.fraction(key.gpu_model, key.mig_profile)
        out.append(
            Charge(
                key,
                usage,
                round_places(instance_hours(usage)),
                round_places(gpu_hours(usage, f)),
            )
        )
    return out


def correction_charges(
    now: Mapping[ExportKey, int], delivered: Mapping[ExportKey, int], catalog: GpuCatalog
) -> list[Charge]:
    """Corrections for hours already delivered: the difference between the rounded current
    value of each key and the rounded value delivered so far (delivered rows of a key always
    sum to the rounded value of the usage they state)."""
    out = []
    for key in sorted(set(now) | set(delivered)):
        n, d = now.get(key, 0), delivered.get(key, 0)
        if n == d:
            continue
        f = catalog.fraction(key.gpu_model, key.mig_profile)
        out.append(
            Charge(
                key,
                n - d,
                round_places(instance_hours(n)) - round_places(instance_hours(d)),
                round_places(gpu_hours(n, f)) - round_places(gpu_hours(d, f)),
                correction=True,
            )
        )
    return out


def _times(a: Decimal, b: Decimal) -> Decimal:
    """The exact product (a wider context than Decimal's 28 digits; inexact raises)."""
    with localcontext() as ctx:
        ctx.prec = 80
        ctx.traps[Inexact] = True
        return a * b


@dataclass(frozen=True, slots=True)
class ExportParty:
    """Who the rows name: the partner (provider, publisher, invoice issuer) and its card."""

    partner_id: str
    partner_name: str
    card: WholesaleCard


def _sku(key: ExportKey) -> str:
    return f"gpu:{key.gpu_model}" + (f":mig:{key.mig_profile}" if key.mig_profile else "")


def describe(key: ExportKey, catalog: GpuCatalog) -> str:
    if key.mig_profile:
        f = catalog.fraction(key.gpu_model, key.mig_profile)
        what = f"{key.gpu_model} MIG {key.mig_profile} instance ({f.numerator}/{f.denominator} GPU)"
    else:
        what = f"{key.gpu_model} GPU"
    return f"{what} allocated on cluster {key.cluster} in {key.region}"


def focus_row(
    charge: Charge,
    party: ExportParty,
    period: Period,
    catalog: GpuCatalog,
    consumer: str,
) -> dict[str, Any]:
    """The FOCUS row (column -> value, in :data:`COLUMNS` order) of one charge.

    Raises :class:`ExportError` ``exports.no_wholesale_price`` when the partner's card has no
    price for the row's GPU model and region at its hour."""
    key, card = charge.key, party.card
    hour = key.hour
    price = card.price_at(key.gpu_model, key.region, hour)
    if price is None:
        raise ExportError(
            ExportErrorCode.NO_WHOLESALE_PRICE,
            f"partner {party.partner_id!r}: its wholesale card has no price for "
            f"{key.gpu_model} in {key.region} at {hour.isoformat()} "
            "(config/wholesale.yaml)",
        )
    f = catalog.fraction(key.gpu_model, key.mig_profile)
    sku = _sku(key)
    list_cost = _times(price.list_price, charge.quantity)
    contracted_cost = _times(price.contracted, charge.quantity)
    description = describe(key, catalog)
    if charge.correction:
        description = f"Correction (usage metered after delivery): {description}"
    tags = {f"{TAG_PREFIX}cluster": key.cluster, f"{TAG_PREFIX}gpu-model": key.gpu_model}
    if key.mig_profile:
        tags[f"{TAG_PREFIX}mig-profile"] = key.mig_profile
    resource = f"{party.partner_id}/{key.region}/{key.cluster}"
    sku_details = {"x_GpuModel": key.gpu_model, "x_GpuFraction": f"{f.numerator}/{f.denominator}"}
    if key.mig_profile:
        sku_details["x_MigProfile"] = key.mig_profile
    row: dict[str, Any] = {
        "BilledCost": contracted_cost,
        "BillingAccountId": card.billing_account_id,
        "BillingAccountName": card.billing_account_name,
        "BillingCurrency": card.currency,
        "BillingPeriodEnd": period.end,
        "BillingPeriodStart": period.start,
        "ChargeCategory": "Usage",
        "ChargeClass": "Correction" if charge.correction else None,
        "ChargeDescription": description,
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": datetime.fromtimestamp(key.hour_s + HOUR_US // 10**6, UTC),
        "ChargePeriodStart": hour,
        "CommitmentDiscountStatus": None,  # no commitment discounts
        "ConsumedQuantity": charge.consumed,
        "ConsumedUnit": CONSUMED_UNIT,
        "ContractedCost": contracted_cost,
        "ContractedUnitPrice": price.contracted,
        "EffectiveCost": contracted_cost,
        "InvoiceId": statement_id(party.partner_id, period),
        "InvoiceIssuerName": party.partner_name,
        "ListCost": list_cost,
        "ListUnitPrice": price.list_price,
        "PricingCategory": "Standard",
        "PricingCurrency": card.currency,  # we are priced in the currency we are billed in
        "PricingCurrencyContractedUnitPrice": price.contracted,
        "PricingCurrencyEffectiveCost": contracted_cost,
        "PricingCurrencyListUnitPrice": price.list_price,
        "PricingQuantity": charge.quantity,
        "PricingUnit": PRICING_UNIT,
        "ProviderName": party.partner_name,
        "PublisherName": party.partner_name,
        "RegionId": key.region,
        "RegionName": key.region,
        "ResourceId": resource,
        "ResourceName": key.cluster,
        "ResourceType": "GPU Cluster",
        "ServiceCategory": "Compute",
        "ServiceName": card.service_name,
        "ServiceSubcategory": "Other (Compute)",
        "SkuId": sku,
        "SkuMeter": "GPU Allocation",
        "SkuPriceDetails": _json(sku_details),
        "SkuPriceId": f"{party.partner_id}/{sku}/{price.key}",
        "SubAccountId": consumer,
        "SubAccountName": f"Consumer {consumer}",
        "Tags": _json(tags),
        "x_Cluster": key.cluster,
        "x_GpuModel": key.gpu_model,
        "x_MigProfile": key.mig_profile,
        "x_MigFraction": f"{f.numerator}/{f.denominator}",
        "x_GpuHours": charge.quantity,
        "x_UsageMicroseconds": charge.usage_us,
    }
    assert tuple(row) == COLUMN_NAMES
    return row


def _json(value: Mapping[str, str]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def statement_id(partner_id: str, period: Period) -> str:
    """The export's statement id (``InvoiceId``): in FOCUS terms a pre-generated provisional
    invoice, the amount we expect the partner's invoice for the period to carry."""
    return f"GMX-{period}-{partner_id}"


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["ChargeClass"] or "",
        row["ChargePeriodStart"],
        row["RegionId"],
        row["x_Cluster"],
        row["x_GpuModel"],
        row["x_MigProfile"],
        row["SubAccountId"],
    )


def export_rows(
    charges: Iterable[Charge],
    party: ExportParty,
    period: Period,
    catalog: GpuCatalog,
    consumer: Callable[[str], str],
) -> list[dict[str, Any]]:
    """Every row of one partner's export, in a stable order: the period's usage by hour,
    then corrections by original hour (never by tenant id: rows sort by pseudonym)."""
    rows = [focus_row(c, party, period, catalog, consumer(c.key.tenant_id)) for c in charges]
    return sorted(rows, key=_sort_key)


def exact_gpu_hours(row: Mapping[str, Any]) -> Fraction:
    """The exact GPU-hours a row states, from its ``x_`` columns."""
    num, _, den = str(row["x_MigFraction"]).partition("/")
    return Fraction(int(row["x_UsageMicroseconds"]), HOUR_US) * Fraction(int(num), int(den))
