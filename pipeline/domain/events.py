"""CloudEvents 1.0 envelope and the ``gpu.usage.v1`` data (brief §3), and the decoder.

A Kafka message holds either one event in structured JSON mode or a JSON array of them
(CloudEvents batch mode: a collector sends one message per node per interval with a sample per
GPU). Every event keeps its own identity: ``(source, id)``.

**What each string accepts** (enforced here, in the JSON Schemas and in ClickHouse round
trips; anything else is dead-lettered as ``invalid_data``/``invalid_envelope`` naming the field):

* ``tenant_id``: ``[a-z0-9][a-z0-9_.-]*``, 1-64 characters, and a configured tenant;
* **tokens** (``cluster``, ``region``, ``provider``, ``node``, ``gpu_uuid``, ``gpu_model``,
  ``mig_profile``): ASCII letters, digits and ``. _ : / @ + = -``, starting with a letter or
  digit, 1-128 characters (``mig_profile`` 0-32, empty meaning no MIG); ``gpu_model`` and
  ``mig_profile`` must be in the GPU catalogue, ``region`` and ``provider`` in the partners'
  reference data and match;
* **text** (``project_id``, ``job_id``: 0-128 characters; ``source``: 1-512; ``id``: 1-256):
  any Unicode except control characters (U+0000-U+001F, U+007F-U+009F); separators such as
  ``|``, quotes, backslashes and non-ASCII letters are kept byte for byte.

Lengths count Unicode code points. Lone surrogates and invalid UTF-8 are refused.

:func:`decode_message` never raises: it returns the accepted samples and, for everything else,
a :class:`Reject` with a stable :class:`~pipeline.domain.errors.RejectReason`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline.domain.errors import RejectReason
from pipeline.domain.hours import US_PER_SECOND, to_us
from pipeline.domain.reference import ReferenceData

EVENT_TYPE = "gpu.usage.v1"
SPECVERSION = "1.0"

TOKEN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$"
OPTIONAL_TOKEN_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._:/@+=-]*)?$"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"

Token = Annotated[str, Field(min_length=1, max_length=128, pattern=TOKEN_PATTERN)]


def _text(min_length: int, max_length: int) -> Any:
    return Field(min_length=min_length, max_length=max_length, pattern=TEXT_PATTERN)


class GpuUsageData(BaseModel):
    """One usage sample: ``gpu_count`` GPUs (or MIG instances) allocated to a tenant over
    the half-open interval ``[start, end)``. Telemetry fields are averages over the interval;
    they are reported as efficiency and never billed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    project_id: Annotated[str, _text(0, 128)] | None = None
    job_id: Annotated[str, _text(0, 128)] | None = None
    cluster: Token
    region: Token
    provider: Token
    node: Token
    gpu_uuid: Token
    gpu_model: Token
    # "" means no MIG, as absent does
    mig_profile: Annotated[str, Field(max_length=32, pattern=OPTIONAL_TOKEN_PATTERN)] | None = None
    gpu_count: Annotated[int, Field(ge=1, le=1024)] = 1
    start: AwareDatetime
    end: AwareDatetime
    sm_activity_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    mem_used_bytes: Annotated[int, Field(ge=0)] | None = None
    power_w: Annotated[float, Field(ge=0)] | None = None
    energy_j: Annotated[float, Field(ge=0)] | None = None


class UsageEvent(BaseModel):
    """CloudEvents 1.0 envelope, structured JSON mode, carrying :class:`GpuUsageData`."""

    model_config = ConfigDict(extra="allow", frozen=True)  # CloudEvents allows extensions

    specversion: Literal["1.0"]
    id: Annotated[str, _text(1, 256)]
    source: Annotated[str, _text(1, 512)]
    type: Literal["gpu.usage.v1"]
    time: AwareDatetime | None = None
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    data: GpuUsageData


class UsageSample(NamedTuple):
    """A validated sample, normalised for the stream processor (plain values, exact µs).

    This and the keys below are named tuples, not frozen dataclasses: immutable and typed the
    same, but built, hashed and compared in C; the worker makes several per sample
    (``make bench``, stages ``decode``/``rows``/``fold``)."""

    source: str
    id: str
    tenant_id: str
    project_id: str
    cluster: str
    region: str
    provider: str
    node: str
    gpu_model: str
    mig_profile: str
    gpu_count: int
    start_us: int
    end_us: int
    sm_activity_pct: float | None
    job_id: str
    gpu_uuid: str

    @property
    def identity(self) -> tuple[str, str]:
        return (self.source, self.id)

    @property
    def dedupe_key(self) -> DedupeKey:
        minute = self.start_us - self.start_us % 60_000_000
        return DedupeKey(DedupeBucket(self.tenant_id, self.source, minute), self.id)


class DedupeBucket(NamedTuple):
    """One bucket of the dedupe memory: a tenant, a source and a start minute. The memory is
    kept in buckets so that a batch writes one changelog record per bucket (a node's report:
    one per GPU) instead of one per sample, while a bucket stays small however long a
    collector runs. Copies of an event share its tenant, source and start, hence its bucket;
    the tenant keeps a bucket inside one Kafka partition."""

    tenant_id: str
    source: str
    minute_us: int


class DedupeKey(NamedTuple):
    """An event's place in the dedupe memory: its bucket and its ``id`` within it."""

    bucket: DedupeBucket
    event_id: str


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    detail: str
    index: int | None = None  # position in a batch message, None for the whole message


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_message_bytes: int = 1_000_000
    max_interval_s: int = 3600
    max_future_skew_s: int = 3600
    max_past_age_days: int = 400


_EVENT_ADAPTER: TypeAdapter[UsageEvent] = TypeAdapter(UsageEvent)
_BATCH_ADAPTER: TypeAdapter[list[UsageEvent]] = TypeAdapter(list[UsageEvent])


def _envelope_reason(raw: Any, err: ValidationError) -> tuple[RejectReason, str]:
    if isinstance(raw, dict):
        if "specversion" in raw and raw.get("specversion") != SPECVERSION:
            return RejectReason.UNSUPPORTED_SPECVERSION, f"specversion {raw.get('specversion')!r}"
        if "type" in raw and raw.get("type") != EVENT_TYPE:
            return RejectReason.UNSUPPORTED_TYPE, f"type {raw.get('type')!r}"
    locs = {str(e["loc"][0]) if e["loc"] else "" for e in err.errors()}
    reason = RejectReason.INVALID_DATA if locs == {"data"} else RejectReason.INVALID_ENVELOPE
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return reason, f"{where}: {first['msg']}"[:500]


def _check(
    ev: UsageEvent, ref: ReferenceData, limits: DecodeLimits, now_us: int
) -> tuple[RejectReason, str] | UsageSample:
    d = ev.data
    model_known, profile_known = ref.catalog.knows(d.gpu_model, d.mig_profile or "")
    if not model_known:
        return RejectReason.UNKNOWN_GPU_MODEL, f"gpu_model {d.gpu_model!r}"
    if not profile_known:
        return RejectReason.UNKNOWN_MIG_PROFILE, f"mig_profile {d.mig_profile!r} on {d.gpu_model}"
    if d.tenant_id not in ref.tenants:
        return RejectReason.UNKNOWN_TENANT, f"tenant_id {d.tenant_id!r}"
    placement = ref.placement(d.region, d.provider)
    if placement == "unknown_region":
        return RejectReason.UNKNOWN_REGION, f"region {d.region!r} is no partner's region"
    if placement == "mismatch":
        return RejectReason.REGION_PROVIDER_MISMATCH, (
            f"region {d.region!r} is not a region of provider {d.provider!r}"
        )
    start_us, end_us = to_us(d.start), to_us(d.end)
    if end_us <= start_us:
        return RejectReason.NON_POSITIVE_INTERVAL, f"end {d.end.isoformat()} <= start"
    if end_us - start_us > limits.max_interval_s * US_PER_SECOND:
        return RejectReason.INTERVAL_TOO_LONG, (
            f"{(end_us - start_us) / US_PER_SECOND:.0f}s > {limits.max_interval_s}s"
        )
    if end_us > now_us + limits.max_future_skew_s * US_PER_SECOND:
        return RejectReason.TIMESTAMP_IN_FUTURE, f"end {d.end.isoformat()}"
    if start_us < now_us - limits.max_past_age_days * 86_400 * US_PER_SECOND:
        return RejectReason.TIMESTAMP_TOO_OLD, f"start {d.start.isoformat()}"
    return UsageSample(
        source=ev.source,
        id=ev.id,
        tenant_id=d.tenant_id,
        project_id=d.project_id or "",
        cluster=d.cluster,
        region=d.region,
        provider=d.provider,
        node=d.node,
        gpu_model=d.gpu_model,
        mig_profile=d.mig_profile or "",
        gpu_count=d.gpu_count,
        start_us=start_us,
        end_us=end_us,
        sm_activity_pct=d.sm_activity_pct,
        job_id=d.job_id or "",
        gpu_uuid=d.gpu_uuid,
    )


def decode_message(
    raw: bytes, ref: ReferenceData, now: datetime, limits: DecodeLimits | None = None
) -> tuple[list[UsageSample], list[Reject]]:
    """Decode one Kafka message value into accepted samples and rejects. Never raises."""
    limits = limits or DecodeLimits()
    if raw is None or len(raw) > limits.max_message_bytes:
        size = 0 if raw is None else len(raw)
        return [], [Reject(RejectReason.MESSAGE_TOO_LARGE, f"{size} bytes")]
    now_us = to_us(now)
    events: list[UsageEvent | tuple[RejectReason, str]]
    # Fast path: the whole message validates in one pass (pydantic-core, no Python per field).
    try:
        if raw.lstrip()[:1] == b"[":
            events = list(_BATCH_ADAPTER.validate_json(raw))
            if not events:
                return [], [Reject(RejectReason.EMPTY_BATCH, "batch holds no events")]
        else:
            events = [_EVENT_ADAPTER.validate_json(raw)]
        batch = raw.lstrip()[:1] == b"["
    except ValidationError:
        # Slow path: find which events are bad and why.
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return [], [Reject(RejectReason.MALFORMED_JSON, str(exc)[:500])]
        batch = isinstance(parsed, list)
        items = parsed if batch else [parsed]
        if not items:
            return [], [Reject(RejectReason.EMPTY_BATCH, "batch holds no events")]
        events = []
        for item in items:
            try:
                events.append(_EVENT_ADAPTER.validate_python(item))
            except ValidationError as err:
                events.append(_envelope_reason(item, err))
    samples: list[UsageSample] = []
    rejects: list[Reject] = []
    for i, ev in enumerate(events):
        result = ev if isinstance(ev, tuple) else _check(ev, ref, limits, now_us)
        if isinstance(result, UsageSample):
            samples.append(result)
        else:
            rejects.append(Reject(result[0], result[1], i if batch else None))
    return samples, rejects
