"""Reference data: GPU catalogue (with MIG profiles), tenants and partners.

These are configuration kept in version control (``config/``) and validated on load; the
models here are pure, loading the YAML lives in :mod:`pipeline.config`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


def alias_key(name: str) -> str:
    """How GPU model names are compared: case-folded, spaces collapsed."""
    return " ".join(name.split()).casefold()


class GpuModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Z0-9][A-Za-z0-9_-]{0,31}$")
    memory_gb: int = Field(gt=0)
    compute_slices: int = Field(default=7, gt=0, description="MIG compute slices of the parent GPU")
    mig_profiles: dict[str, int] = Field(
        default_factory=dict, description="MIG profile -> compute slices it takes"
    )
    aliases: list[str] = Field(
        default_factory=list,
        description="names collectors observe for it (DCGM modelName, NVML name, Slurm gres "
        "type), matched ignoring case and repeated spaces",
    )

    @model_validator(mode="after")
    def _slices_fit(self) -> GpuModel:
        for profile, slices in self.mig_profiles.items():
            if not 0 < slices <= self.compute_slices:
                raise ValueError(
                    f"MIG profile {profile!r} takes {slices} slices; "
                    f"the GPU has {self.compute_slices}"
                )
        return self


class GpuCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: dict[str, GpuModel]

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("gpus"), dict):
            data = dict(data)
            data["gpus"] = {
                name: {"name": name, **spec} if isinstance(spec, dict) else spec
                for name, spec in data["gpus"].items()
            }
        return data

    @model_validator(mode="after")
    def _aliases_unique(self) -> GpuCatalog:
        seen: dict[str, str] = {}
        for name, gpu in self.gpus.items():
            for alias in [name, *gpu.aliases]:
                norm = alias_key(alias)
                if not norm:
                    raise ValueError(f"GPU {name!r}: empty alias")
                if seen.setdefault(norm, name) != name:
                    raise ValueError(f"alias {alias!r} names both {seen[norm]!r} and {name!r}")
        return self

    def resolve(self, observed: str) -> str | None:
        """The catalogue model a collector's observed name (``NVIDIA H100 80GB HBM3``,
        ``a100``) stands for: the model's own name or one of its aliases, ignoring case and
        repeated spaces; None when unknown."""
        norm = alias_key(observed)
        for name, gpu in self.gpus.items():
            if norm == alias_key(name) or norm in {alias_key(a) for a in gpu.aliases}:
                return name
        return None

    def fraction(self, gpu_model: str, mig_profile: str) -> Fraction:
        """Share of one parent GPU that an allocation counts for (1 without MIG)."""
        if not mig_profile:
            return Fraction(1)
        gpu = self.gpus[gpu_model]
        return Fraction(gpu.mig_profiles[mig_profile], gpu.compute_slices)

    def knows(self, gpu_model: str, mig_profile: str) -> tuple[bool, bool]:
        gpu = self.gpus.get(gpu_model)
        if gpu is None:
            return False, False
        return True, (not mig_profile) or mig_profile in gpu.mig_profiles


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    name: str
    kind: Literal["external", "internal"]
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    rate_card: str
    email: str | None = None
    active: bool = Field(
        default=True, description="false: no workloads running (the simulator schedules none)"
    )
    cost_centre: str | None = Field(
        default=None, description="internal tenants: org/team[/project] path"
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> Tenant:
        if self.kind == "internal" and not self.cost_centre:
            raise ValueError(f"internal tenant {self.id!r} needs a cost_centre")
        return self


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    name: str
    regions: list[str] = Field(min_length=1)


class ReferenceData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    catalog: GpuCatalog
    tenants: dict[str, Tenant]
    partners: dict[str, Partner]
    platform_cost_centre: str = "platform/gpu"

    def placement(self, region: str, provider: str) -> Literal["ok", "unknown_region", "mismatch"]:
        """Whether usage on ``region`` under ``provider`` matches the partners' reference data:
        ``unknown_region`` when no partner has the region, ``mismatch`` when the provider is
        not a partner owning it."""
        partner = self.partners.get(provider)
        if partner is not None and region in partner.regions:
            return "ok"
        if any(region in p.regions for p in self.partners.values()):
            return "mismatch"
        return "unknown_region"

    @field_validator("tenants", mode="before")
    @classmethod
    def _tenant_list(cls, v: object) -> object:
        if isinstance(v, list):
            ids = [t.get("id") if isinstance(t, dict) else None for t in v]
            dupes = sorted({i for i in ids if i is not None and ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate tenant ids: {dupes}")
            return {t["id"]: t for t in v if isinstance(t, dict)}
        return v

    @field_validator("partners", mode="before")
    @classmethod
    def _partner_list(cls, v: object) -> object:
        if isinstance(v, list):
            return {p["id"]: p for p in v if isinstance(p, dict)}
        return v
