"""Hourly usage keys and the contribution of one sample to them (brief §4).

:class:`HourlyKey` is the one typed composite key from the fold to ClickHouse and back: its
dimensions are declared once (:data:`KEY_COLUMNS`, in the order of the named tuple's fields) and
the fold, the sink's columns, the store's SELECTs, lineage rows and verification all use
them. It is never joined into a string and split again; where a byte key is needed (a
state-store key) it is serialised with :func:`hourly_key_bytes`, which is injective for any
string values and is never parsed back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from pipeline.domain.events import UsageSample
from pipeline.domain.hours import US_PER_SECOND, split_by_hour

# ClickHouse column of each HourlyKey field, in field order (``hour_s`` is stored as ``hour``).
KEY_COLUMNS: tuple[str, ...] = (
    "tenant_id",
    "hour",
    "project_id",
    "gpu_model",
    "mig_profile",
    "region",
    "provider",
    "cluster",
)


class HourlyKey(NamedTuple):
    """What usage is summed by: event-time hour (UTC), tenant, project, GPU model, MIG
    profile, region, provider and cluster."""

    tenant_id: str
    hour_s: int  # epoch seconds of the hour's start
    project_id: str
    gpu_model: str
    mig_profile: str
    region: str
    provider: str
    cluster: str

    def values(self) -> tuple[Any, ...]:
        """The field values in :data:`KEY_COLUMNS` order (hour as epoch seconds)."""
        return tuple(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HourlyKey:
        """The key of a row read by column name (``hour`` as epoch seconds or a datetime)."""
        hour = row["hour"]
        hour_s = int(hour.timestamp()) if isinstance(hour, datetime) else int(hour)
        return cls(
            str(row["tenant_id"]),
            hour_s,
            str(row["project_id"]),
            str(row["gpu_model"]),
            str(row["mig_profile"]),
            str(row["region"]),
            str(row["provider"]),
            str(row["cluster"]),
        )


def hourly_key_bytes(key: HourlyKey) -> bytes:
    """A byte form of the key for a key-value store: a JSON array, so every value (with any
    separator, quote or unicode in it) stays distinct. Only ever used as an opaque key."""
    return json.dumps(key.values(), ensure_ascii=False, separators=(",", ":")).encode()


class Contribution(NamedTuple):
    key: HourlyKey
    usage_us: int  # allocated instances x micro-seconds inside the hour
    busy_us: int  # usage_us weighted by SM activity (0..usage_us); 0 when not reported


def contributions(sample: UsageSample) -> list[Contribution]:
    """Split a sample across the hours it covers. Parts sum exactly to the whole."""
    out = []
    for hour_us, overlap in split_by_hour(sample.start_us, sample.end_us):
        usage = overlap * sample.gpu_count
        busy = 0 if sample.sm_activity_pct is None else round(usage * sample.sm_activity_pct / 100)
        key = HourlyKey(
            sample.tenant_id,
            hour_us // US_PER_SECOND,
            sample.project_id,
            sample.gpu_model,
            sample.mig_profile,
            sample.region,
            sample.provider,
            sample.cluster,
        )
        out.append(Contribution(key, usage, busy))
    return out
