"""Hourly usage keys and the contribution of one sample to them (brief §4)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.domain.events import UsageSample
from pipeline.domain.hours import US_PER_SECOND, split_by_hour

SEP = "|"


@dataclass(frozen=True, slots=True, order=True)
class HourlyKey:
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

    def encode(self) -> str:
        return SEP.join(
            (
                self.tenant_id,
                str(self.hour_s),
                self.project_id,
                self.gpu_model,
                self.mig_profile,
                self.region,
                self.provider,
                self.cluster,
            )
        )

    @classmethod
    def decode(cls, text: str) -> HourlyKey:
        t, h, p, g, m, r, pr, c = text.split(SEP)
        return cls(t, int(h), p, g, m, r, pr, c)


@dataclass(frozen=True, slots=True)
class Contribution:
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
