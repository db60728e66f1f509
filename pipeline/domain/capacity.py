"""Capacity: what GPUs the platform has and what an hour of each costs it (brief §6).

``config/capacity.yaml``: per cluster (its provider and region, owned or leased from that
partner, an idle policy) and GPU model, a number of GPUs valid from ``effective_from``
(inclusive) to ``effective_until`` (exclusive, whole UTC hours) with a cost per GPU-hour in the
file's currency. ``on_demand`` prices, per GPU model, usage for which no capacity is listed (a
cluster or model not in the file, or more allocated than listed in an hour): capacity rented
for that hour only, so it has no idle. Prices are quoted decimal strings; a binary float is
refused, as in rate cards.

Idle policies, per cluster (the file's ``idle_policy`` unless the cluster names its own):

* ``separate``: idle stays the platform's, shown on its own node;
* ``proportional``: each GPU model's idle cost on the cluster is shared among the tenants that
  used that model there in the period, in proportion to their cost of use;
* ``even``: the same, in equal parts per tenant.

Idle nobody used a model for in the period stays the platform's whatever the policy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.domain.hours import check_window, on_whole_hour
from pipeline.domain.money import minor_digits

IdlePolicy = Literal["separate", "proportional", "even"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}$"  # as the events' cluster/region/provider


def _no_float(v: object) -> object:
    if isinstance(v, float):
        raise ValueError(
            f"a cost is a binary float ({v!r}); write it as a quoted decimal string, e.g. '{v}'"
        )
    return v


class CapacityEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_model: str
    gpus: int = Field(gt=0, le=1_000_000)
    cost_per_gpu_hour: Decimal
    effective_from: AwareDatetime | None = None
    effective_until: AwareDatetime | None = None

    @field_validator("cost_per_gpu_hour", mode="before")
    @classmethod
    def _cost_no_float(cls, v: object) -> object:
        return _no_float(v)

    @field_validator("cost_per_gpu_hour")
    @classmethod
    def _finite(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or v < 0:
            raise ValueError("cost_per_gpu_hour must be a finite amount >= 0")
        return v

    @field_validator("effective_from", "effective_until")
    @classmethod
    def _whole_hour(cls, v: datetime | None) -> datetime | None:
        return on_whole_hour(v)
        v = v.astimezone(UTC)
        if v.minute or v.second or v.microsecond:
            raise ValueError(f"{v.isoformat()} is not on a whole UTC hour")
        return v

    @model_validator(mode="after")
    def _window(self) -> CapacityEntry:
        check_window(self.effective_from, self.effective_until)
        return self

    def valid_at(self, hour_s: int) -> bool:
        f, u = self.effective_from, self.effective_until
        return (f is None or hour_s >= int(f.timestamp())) and (
            u is None or hour_s < int(u.timestamp())
        )


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(pattern=NAME)
    provider: str = Field(pattern=NAME)
    region: str = Field(pattern=NAME)
    ownership: Literal["owned", "leased"]
    idle_policy: IdlePolicy | None = None
    capacity: list[CapacityEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_overlap(self) -> Cluster:
        by_model: dict[str, list[CapacityEntry]] = {}
        for e in self.capacity:
            by_model.setdefault(e.gpu_model, []).append(e)
        far = datetime.max.replace(tzinfo=UTC)
        near = datetime.min.replace(tzinfo=UTC)
        for model, entries in by_model.items():
            spans = sorted((e.effective_from or near, e.effective_until or far) for e in entries)
            for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                if start < end:
                    raise ValueError(
                        f"cluster {self.cluster!r}: two {model} capacity entries overlap "
                        f"at {start.isoformat()}"
                    )
        return self

    def entry(self, gpu_model: str, hour_s: int) -> CapacityEntry | None:
        for e in self.capacity:
            if e.gpu_model == gpu_model and e.valid_at(hour_s):
                return e
        return None


class CapacityPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    idle_policy: IdlePolicy = "separate"
    on_demand: dict[str, Decimal] = Field(
        description="cost per GPU-hour of usage no listed capacity covers, per GPU model"
    )
    clusters: dict[str, Cluster] = Field(default_factory=dict)

    @field_validator("on_demand", mode="before")
    @classmethod
    def _on_demand_no_float(cls, v: object) -> object:
        if isinstance(v, dict):
            for cost in v.values():
                _no_float(cost)
        return v

    @field_validator("clusters", mode="before")
    @classmethod
    def _cluster_list(cls, v: object) -> object:
        if isinstance(v, list):
            names = [c.get("cluster") if isinstance(c, dict) else None for c in v]
            dupes = sorted({str(n) for n in names if n is not None and names.count(n) > 1})
            if dupes:
                raise ValueError(f"clusters listed twice: {dupes}")
            return {c["cluster"]: c for c in v if isinstance(c, dict) and "cluster" in c}
        return v

    @model_validator(mode="after")
    def _currency_known(self) -> CapacityPlan:
        minor_digits(self.currency)  # ValueError for a currency money cannot round
        for model, cost in self.on_demand.items():
            if not cost.is_finite() or cost < 0:
                raise ValueError(f"on_demand {model}: must be a finite amount >= 0")
        return self

    def policy(self, cluster: str) -> IdlePolicy:
        c = self.clusters.get(cluster)
        return c.idle_policy if c is not None and c.idle_policy else self.idle_policy

    def entry(self, cluster: str, gpu_model: str, hour_s: int) -> CapacityEntry | None:
        c = self.clusters.get(cluster)
        return c.entry(gpu_model, hour_s) if c is not None else None
