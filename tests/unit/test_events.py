import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.config import Config
from pipeline.domain.errors import RejectReason
from pipeline.domain.events import DecodeLimits, decode_message

NOW = datetime(2026, 11, 5, tzinfo=UTC)


def event(**data: Any) -> dict[str, Any]:
    d = {
        "tenant_id": "acme-ai",
        "cluster": "c1",
        "region": "us-east-1",
        "provider": "northwind-cloud",
        "node": "n1",
        "gpu_uuid": "GPU-1",
        "gpu_model": "H100",
        "gpu_count": 1,
        "start": "2026-10-01T05:50:00Z",
        "end": "2026-10-01T06:05:00Z",
    }
    d.update(data)
    return {"specversion": "1.0", "id": "e1", "source": "//c/n1", "type": "gpu.usage.v1", "data": d}


def decode(obj: Any, config: Config, **kw: Any) -> tuple[list[Any], list[Any]]:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return decode_message(raw, config.reference, NOW, DecodeLimits(**kw))


def test_single_event_accepted(config: Config) -> None:
    samples, rejects = decode(event(mig_profile="3g.40gb", sm_activity_pct=55.5), config)
    assert rejects == []
    (s,) = samples
    assert (s.tenant_id, s.gpu_model, s.mig_profile, s.sm_activity_pct) == (
        "acme-ai",
        "H100",
        "3g.40gb",
        55.5,
    )
    assert s.end_us - s.start_us == 15 * 60 * 1_000_000
    assert s.identity == "//c/n1\x1fe1"


def test_batch_keeps_good_events_and_rejects_bad_ones_by_index(config: Config) -> None:
    bad = event(gpu_model="Z999")
    bad["id"] = "e2"
    samples, rejects = decode([event(), bad], config)
    assert [s.id for s in samples] == ["e1"]
    assert [(r.reason, r.index) for r in rejects] == [(RejectReason.UNKNOWN_GPU_MODEL, 1)]


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (b"{not json", RejectReason.MALFORMED_JSON),
        ([], RejectReason.EMPTY_BATCH),
        ({**event(), "specversion": "0.3"}, RejectReason.UNSUPPORTED_SPECVERSION),
        ({**event(), "type": "gpu.usage.v2"}, RejectReason.UNSUPPORTED_TYPE),
        ({k: v for k, v in event().items() if k != "id"}, RejectReason.INVALID_ENVELOPE),
        (event(gpu_count="many"), RejectReason.INVALID_DATA),
        (event(gpu_count=0), RejectReason.INVALID_DATA),
        (event(start="2026-10-01T05:50:00"), RejectReason.INVALID_DATA),  # naive time
        (event(surprise=1), RejectReason.INVALID_DATA),
        (event(gpu_model="Z999"), RejectReason.UNKNOWN_GPU_MODEL),
        (event(mig_profile="9g.99gb"), RejectReason.UNKNOWN_MIG_PROFILE),
        (event(gpu_model="L40S", mig_profile="1g.10gb"), RejectReason.UNKNOWN_MIG_PROFILE),
        (event(tenant_id="nobody"), RejectReason.UNKNOWN_TENANT),
        (event(end="2026-10-01T05:50:00Z"), RejectReason.NON_POSITIVE_INTERVAL),
        (event(end="2026-10-01T05:40:00Z"), RejectReason.NON_POSITIVE_INTERVAL),
        (event(end="2026-10-01T07:50:01Z"), RejectReason.INTERVAL_TOO_LONG),
        (
            event(start="2026-11-05T03:00:00Z", end="2026-11-05T03:10:00Z"),
            RejectReason.TIMESTAMP_IN_FUTURE,
        ),
        (
            event(start="2024-01-01T00:00:00Z", end="2024-01-01T00:10:00Z"),
            RejectReason.TIMESTAMP_TOO_OLD,
        ),
    ],
)
def test_each_reject_reason(config: Config, obj: Any, reason: RejectReason) -> None:
    if reason is RejectReason.TIMESTAMP_IN_FUTURE:
        samples, rejects = decode(obj, config, max_future_skew_s=60)
    else:
        samples, rejects = decode(obj, config)
    assert samples == []
    assert [r.reason for r in rejects] == [reason]
    assert rejects[0].detail


def test_oversized_message_rejected(config: Config) -> None:
    raw = json.dumps([event()] * 50).encode()
    samples, rejects = decode(raw, config, max_message_bytes=1000)
    assert samples == [] and rejects[0].reason is RejectReason.MESSAGE_TOO_LARGE
