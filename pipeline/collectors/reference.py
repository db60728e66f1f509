"""Collectors' reference data (``config/collectors.yaml``) and where a collector runs.

Per cluster: default region, provider, GPU model (Slurm jobs naming no GPU type) and time zone
(sacct's zone-less timestamps); Kubernetes namespace -> tenant and Slurm account -> tenant
maps, global and per cluster. A namespace or account equal to a tenant id maps to it without
an entry. Validated on load against the tenants, partners and GPU catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import ConfigError
from pipeline.domain.errors import BillingErrorCode
from pipeline.domain.events import TOKEN_PATTERN
from pipeline.domain.reference import ReferenceData
from pipeline.settings import SettingsError

FILE = "collectors.yaml"
CODE = BillingErrorCode.INVALID_REFERENCE_DATA


class ClusterDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = None
    provider: str | None = None
    gpu_model: str | None = None
    timezone: str | None = None
    namespaces: dict[str, str] = Field(default_factory=dict)
    accounts: dict[str, str] = Field(default_factory=dict)


class CollectorReference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clusters: dict[str, ClusterDefaults] = Field(default_factory=dict)
    namespaces: dict[str, str] = Field(default_factory=dict)
    accounts: dict[str, str] = Field(default_factory=dict)

    def problems(self, ref: ReferenceData) -> list[str]:
        out = []
        for where, mapping in [("namespaces", self.namespaces), ("accounts", self.accounts)] + [
            (f"clusters.{c}.{k}", m)
            for c, d in self.clusters.items()
            for k, m in (("namespaces", d.namespaces), ("accounts", d.accounts))
        ]:
            out += [
                f"{where}.{k}: unknown tenant {t!r}"
                for k, t in mapping.items()
                if t not in ref.tenants
            ]
        for name, d in self.clusters.items():
            if (d.region is None) != (d.provider is None):
                out.append(f"clusters.{name}: give both region and provider, or neither")
            elif d.region and d.provider and ref.placement(d.region, d.provider) != "ok":
                out.append(f"clusters.{name}: region {d.region!r} is not provider {d.provider!r}'s")
            if d.gpu_model and d.gpu_model not in ref.catalog.gpus:
                out.append(f"clusters.{name}.gpu_model: {d.gpu_model!r} is not in gpus.yaml")
            if d.timezone:
                try:
                    ZoneInfo(d.timezone)
                except (ZoneInfoNotFoundError, ValueError):
                    out.append(f"clusters.{name}.timezone: unknown time zone {d.timezone!r}")
        return out

    def tenant_for_namespace(self, cluster: str, namespace: str) -> str | None:
        return self._tenant(cluster, namespace, "namespaces")

    def tenant_for_account(self, cluster: str, account: str) -> str | None:
        return self._tenant(cluster, account, "accounts")

    def _tenant(self, cluster: str, name: str, kind: str) -> str | None:
        d = self.clusters.get(cluster)
        if d is not None and name in getattr(d, kind):
            return str(getattr(d, kind)[name])
        mapped: str | None = getattr(self, kind).get(name)
        return mapped


def load_collector_reference(config_dir: Path, ref: ReferenceData) -> CollectorReference:
    """``config_dir/collectors.yaml`` validated against ``ref`` (absent: no maps, no defaults)."""
    path = config_dir / FILE
    if not path.exists():
        return CollectorReference()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"], CODE) from None
    try:
        cref = CollectorReference.model_validate(raw)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(path, problems, CODE) from None
    problems = cref.problems(ref)
    if problems:
        raise ConfigError(path, problems, CODE)
    return cref


@dataclass(frozen=True, slots=True)
class Site:
    """Where a collector runs: its kind (``dcgm``, ``nvml``, ``slurm``) and cluster, region,
    provider (tokens, checked against the partners), the cluster's default GPU model and
    time zone."""

    kind: str
    cluster: str
    region: str
    provider: str
    gpu_model: str | None = None
    timezone: str | None = None

    def source(self, node: str) -> str:
        """The CloudEvents ``source`` of what this collector observed on ``node``. Slurm
        accounting is one source per cluster (``//gpumeter/slurm/<cluster>``): a job's node
        list is not always in the import, and its identity must not depend on it."""
        if self.kind == "slurm":
            return f"//gpumeter/slurm/{self.cluster}"
        return f"//gpumeter/{self.kind}/{self.cluster}/{node}"


def resolve_site(
    kind: str,
    cluster: str,
    region: str | None,
    provider: str | None,
    ref: ReferenceData,
    cref: CollectorReference,
) -> Site:
    """The flags, completed from the cluster's defaults; :class:`SettingsError` naming what is
    wrong (a cluster that is no token, a region or provider the partners do not have)."""
    import re

    if not re.fullmatch(TOKEN_PATTERN, cluster) or len(cluster) > 128:
        raise SettingsError(
            f"--cluster {cluster!r}: a cluster is 1-128 ASCII letters, digits and . _ : / @ + = -"
            ", starting with a letter or digit"
        )
    d = cref.clusters.get(cluster, ClusterDefaults())
    region = region or d.region
    provider = provider or d.provider
    if not region or not provider:
        raise SettingsError(
            f"cluster {cluster!r} has no region/provider in config/{FILE}: "
            "give --region and --provider"
        )
    placement = ref.placement(region, provider)
    if placement != "ok":
        known = ", ".join(f"{p.id}: {'/'.join(p.regions)}" for p in ref.partners.values())
        raise SettingsError(
            f"--region {region!r} --provider {provider!r}: "
            + (
                "no partner has this region"
                if placement == "unknown_region"
                else "the region is not this provider's"
            )
            + f" (config/partners.yaml: {known})"
        )
    return Site(kind, cluster, region, provider, d.gpu_model, d.timezone)
