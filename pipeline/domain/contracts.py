"""Customer contracts: the commercial terms that sit on top of a rate card.

A contract adds to the tenant's rate card (named in ``tenants.yaml``), optionally: the price
tier its usage is rated at (per project if projects differ), a percentage discount, a minimum
commitment per period, prepaid credits, payment terms, and whether a period without usage
still gets a (zero) invoice. A tenant without a contract is billed on its rate card alone.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.domain.charges.credits import Credit
from pipeline.domain.rating import PriceTier
from pipeline.domain.usage import HourlyKey


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    tier: PriceTier = "on-demand"
    project_tiers: dict[str, PriceTier] = Field(default_factory=dict)
    discount_pct: Decimal = Field(default=Decimal(0), ge=0, le=100)
    minimum_commitment: Decimal | None = Field(
        default=None, gt=0, description="per billing period, in the rate card's currency"
    )
    credits: list[Credit] = Field(default_factory=list)
    zero_invoice: bool = Field(
        default=False, description="issue an invoice for a period without usage (audit trail)"
    )
    payment_terms_days: int = Field(default=30, ge=0, le=365)

    @field_validator("discount_pct", "minimum_commitment", mode="before")
    @classmethod
    def _no_float(cls, v: object) -> object:
        if isinstance(v, float):
            raise ValueError(f"{v!r} is a binary float; write it as a quoted decimal string")
        return v

    @model_validator(mode="after")
    def _unique_credits(self) -> Contract:
        ids = [c.id for c in self.credits]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"credit ids must be unique, repeated: {dupes}")
        for c in self.credits:
            if c.expires_at <= c.granted_at:
                raise ValueError(f"credit {c.id!r} expires before it is granted")
        return self

    def tier_of(self, key: HourlyKey) -> str:
        return self.project_tiers.get(key.project_id, self.tier)
