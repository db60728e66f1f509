"""Building the events a collector publishes (pure): ``gpu.usage.v1`` samples for attributed
usage, ``gpu.unattributed.v1`` records for usage no tenant can be billed for, their
deterministic identities, and the Kafka messages that carry them.

**Identity**: ``source`` = ``//gpumeter/<collector>/<cluster>/<node>`` and ``id`` =
``<gpu_uuid>@<start_us>-<end_us>`` (µs since the epoch of the half-open interval). Both come
from what was observed (node, GPU or MIG instance, interval), never from a counter or a
clock read at send time, so a resend, a restart that replays the spool, or a re-import makes
the same ``(source, id)`` and the worker's dedupe counts it once.

**Messages**: usage events are grouped per tenant (the message key: the worker dead-letters a
key that is not the tenant of its samples) into JSON arrays of at most
:data:`MAX_EVENTS_PER_MESSAGE`; unattributed records per cluster the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.collectors.reference import Site
from pipeline.domain.events import TEXT_PATTERN, Token, UsageEvent
from pipeline.domain.hours import from_us

USAGE = "usage"  # logical topics; the publisher maps them to the configured topic names
UNATTRIBUTED = "unattributed"
UNATTRIBUTED_TYPE = "gpu.unattributed.v1"
MAX_EVENTS_PER_MESSAGE = 200

Text = Annotated[str, Field(max_length=512, pattern=TEXT_PATTERN)]


class Reason:
    """Why usage is unattributed (``reason`` of a ``gpu.unattributed.v1`` record)."""

    IDLE = "idle"  # held by no pod, or an NVML host without --tenant (idle capacity)
    UNMAPPED_NAMESPACE = "unmapped_namespace"  # pod in a namespace that maps to no tenant
    UNKNOWN_ACCOUNT = "unknown_account"  # Slurm account that maps to no tenant
    UNKNOWN_GPU_MODEL = "unknown_gpu_model"  # no catalogue model or alias for the name seen
    UNKNOWN_MIG_PROFILE = "unknown_mig_profile"  # the model has no such MIG profile


class UnattributedData(BaseModel):
    """Usage observed but billed to nobody: idle capacity, unmapped namespaces, unknown
    accounts, GPU models the catalogue does not know. Published to the unattributed topic
    (keyed by cluster), so that it is counted and can be looked at, never dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Literal[
        "idle",
        "unmapped_namespace",
        "unknown_account",
        "unknown_gpu_model",
        "unknown_mig_profile",
    ]
    detail: Text = ""  # the namespace, account or model name seen
    cluster: Token
    region: Token
    provider: Token
    node: Token
    gpu_uuid: Token
    gpu_model: Text  # the catalogue model, or the name observed when unknown
    mig_profile: Text = ""
    gpu_count: Annotated[int, Field(ge=1, le=1024)] = 1
    start: str
    end: str
    usage_us: int  # gpu_count x micro-seconds of the interval
    project_id: Text = ""
    job_id: Text = ""
    sm_activity_pct: float | None = None
    mem_used_bytes: int | None = None
    power_w: float | None = None
    energy_j: float | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """What one sample says, before it is an event: a unit (GPU, MIG instance, or a Slurm
    job's GPUs of one type) over ``[start_us, end_us)``, attributed to ``tenant_id`` or not
    (``reason``)."""

    node: str  # token
    gpu_uuid: str  # token
    gpu_model: str  # catalogue name, or the observed name when ``reason`` is unknown_gpu_model
    mig_profile: str
    gpu_count: int
    start_us: int
    end_us: int
    tenant_id: str | None
    reason: str = ""  # when tenant_id is None
    detail: str = ""
    project_id: str = ""
    job_id: str = ""
    sm_activity_pct: float | None = None
    mem_used_bytes: int | None = None
    power_w: float | None = None
    energy_j: float | None = None

    @property
    def usage_us(self) -> int:
        return self.gpu_count * (self.end_us - self.start_us)


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message: logical topic (:data:`USAGE` or :data:`UNATTRIBUTED`), key, value."""

    topic: str
    key: str
    value: str


def event_id(gpu_uuid: str, start_us: int, end_us: int) -> str:
    return f"{gpu_uuid}@{start_us}-{end_us}"


def _telemetry(s: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.sm_activity_pct is not None:
        out["sm_activity_pct"] = round(min(100.0, max(0.0, s.sm_activity_pct)), 3)
    if s.mem_used_bytes is not None and s.mem_used_bytes >= 0:
        out["mem_used_bytes"] = int(s.mem_used_bytes)
    if s.power_w is not None and s.power_w >= 0:
        out["power_w"] = round(s.power_w, 3)
    if s.energy_j is not None and s.energy_j >= 0:
        out["energy_j"] = round(s.energy_j, 3)
    return out


def usage_event(site: Site, s: Span) -> dict[str, Any]:
    """The ``gpu.usage.v1`` CloudEvent of an attributed span, validated against the contract
    (a :class:`pydantic.ValidationError` here is a collector bug, never sent)."""
    assert s.tenant_id is not None
    start, end = from_us(s.start_us).isoformat(), from_us(s.end_us).isoformat()
    data: dict[str, Any] = {
        "tenant_id": s.tenant_id,
        "cluster": site.cluster,
        "region": site.region,
        "provider": site.provider,
        "node": s.node,
        "gpu_uuid": s.gpu_uuid,
        "gpu_model": s.gpu_model,
        "gpu_count": s.gpu_count,
        "start": start,
        "end": end,
        **_telemetry(s),
    }
    if s.project_id:
        data["project_id"] = s.project_id
    if s.job_id:
        data["job_id"] = s.job_id
    if s.mig_profile:
        data["mig_profile"] = s.mig_profile
    event = {
        "specversion": "1.0",
        "id": event_id(s.gpu_uuid, s.start_us, s.end_us),
        "source": site.source(s.node),
        "type": "gpu.usage.v1",
        "time": end,
        "subject": s.tenant_id,
        "datacontenttype": "application/json",
        "data": data,
    }
    UsageEvent.model_validate(event)
    return event


def unattributed_event(site: Site, s: Span) -> dict[str, Any]:
    start, end = from_us(s.start_us).isoformat(), from_us(s.end_us).isoformat()
    data = UnattributedData.model_validate(
        {
            "reason": s.reason,
            "detail": s.detail,
            "cluster": site.cluster,
            "region": site.region,
            "provider": site.provider,
            "node": s.node,
            "gpu_uuid": s.gpu_uuid,
            "gpu_model": s.gpu_model,
            "mig_profile": s.mig_profile,
            "gpu_count": s.gpu_count,
            "start": start,
            "end": end,
            "usage_us": s.usage_us,
            "project_id": s.project_id,
            "job_id": s.job_id,
            **_telemetry(s),
        }
    )
    return {
        "specversion": "1.0",
        "id": event_id(s.gpu_uuid, s.start_us, s.end_us),
        "source": site.source(s.node),
        "type": UNATTRIBUTED_TYPE,
        "time": end,
        "datacontenttype": "application/json",
        "data": data.model_dump(exclude_none=True),
    }


def messages(site: Site, spans: Iterable[Span]) -> tuple[list[Message], list[str]]:
    """The Kafka messages carrying ``spans``: usage per tenant, unattributed per cluster, in
    arrays of at most :data:`MAX_EVENTS_PER_MESSAGE` events, in a deterministic order; and
    the problems of spans that make no valid event (counted and reported by the caller; a
    collector bug if it ever happens, since every value was mapped into its character set)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    problems: list[str] = []
    for s in spans:
        try:
            if s.tenant_id is not None:
                groups.setdefault((USAGE, s.tenant_id), []).append(usage_event(site, s))
            else:
                ev = unattributed_event(site, s)
                groups.setdefault((UNATTRIBUTED, site.cluster), []).append(ev)
        except ValidationError as exc:
            problems.append(f"{s.node} {s.gpu_uuid} [{s.start_us}, {s.end_us}): {exc}"[:500])
    out = []
    for (topic, key), events in sorted(groups.items()):
        for i in range(0, len(events), MAX_EVENTS_PER_MESSAGE):
            chunk = events[i : i + MAX_EVENTS_PER_MESSAGE]
            out.append(
                Message(topic, key, json.dumps(chunk, separators=(",", ":"), ensure_ascii=False))
            )
    return out, problems
