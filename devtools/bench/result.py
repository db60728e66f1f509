"""The bench's figures and ``bench/results/latest.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _ratio(a: float, b: float, digits: int = 4) -> float | None:
    return round(a / b, digits) if b else None


@dataclass
class BenchResult:
    samples: int = 0
    messages: int = 0
    raw_messages_per_s: float = 0.0
    raw_samples_per_s: float = 0.0
    samples_per_s: float = 0.0
    naive_samples_per_s: float = 0.0
    p50_freshness_s: float = 0.0
    p99_freshness_s: float = 0.0
    freshness_rate: float = 0.0
    peak_rss_mib: float = 0.0
    memory_keys: int = 0
    billing_s: float = 0.0
    billing_tenants: int = 0
    # one sample per Kafka message (a bare CloudEvent), one worker; its raw consume limit
    one_sample_samples_per_s: float = 0.0
    one_sample_raw_samples_per_s: float = 0.0
    # two workers in one group on a four-partition topic; its raw consume limit
    two_workers_samples_per_s: float = 0.0
    two_workers_raw_samples_per_s: float = 0.0
    # live stream: a worker's VmRSS once it committed simulated day 7, and at day 31
    rss_day7_mib: float = 0.0
    rss_day31_mib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "messages": self.messages,
            "raw_messages_per_s": round(self.raw_messages_per_s, 1),
            "raw_samples_per_s": round(self.raw_samples_per_s, 1),
            "samples_per_s": round(self.samples_per_s, 1),
            "ratio_raw": _ratio(self.samples_per_s, self.raw_samples_per_s),
            "naive_samples_per_s": round(self.naive_samples_per_s, 1),
            "ratio_naive": _ratio(self.samples_per_s, self.naive_samples_per_s, 2),
            "p50_freshness_s": round(self.p50_freshness_s, 3),
            "p99_freshness_s": round(self.p99_freshness_s, 3),
            "freshness_offered_samples_per_s": round(self.freshness_rate, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "memory_keys": self.memory_keys,
            "billing_s": round(self.billing_s, 2),
            "billing_tenants": self.billing_tenants,
            "one_sample_samples_per_s": round(self.one_sample_samples_per_s, 1),
            "one_sample_raw_samples_per_s": round(self.one_sample_raw_samples_per_s, 1),
            "one_sample_ratio_raw": _ratio(
                self.one_sample_samples_per_s, self.one_sample_raw_samples_per_s
            ),
            "two_workers_samples_per_s": round(self.two_workers_samples_per_s, 1),
            "two_workers_raw_samples_per_s": round(self.two_workers_raw_samples_per_s, 1),
            "two_workers_ratio_raw": _ratio(
                self.two_workers_samples_per_s, self.two_workers_raw_samples_per_s
            ),
            "two_workers_over_one": _ratio(self.two_workers_samples_per_s, self.samples_per_s, 2),
            "rss_day7_mib": round(self.rss_day7_mib, 1),
            "rss_day31_mib": round(self.rss_day31_mib, 1),
            "rss_day31_over_day7": _ratio(self.rss_day31_mib, self.rss_day7_mib, 3),
            **self.extra,
        }


def write_results(res: BenchResult, path: Path) -> dict[str, Any]:
    doc = {"measured_at": datetime.now(UTC).isoformat(), **res.as_json()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc
