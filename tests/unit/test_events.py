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
    assert s.identity == ("//c/n1", "e1")


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
        (event(region="mars-1"), RejectReason.UNKNOWN_REGION),
        (event(region="eu-north-1"), RejectReason.REGION_PROVIDER_MISMATCH),
        (event(provider="nobody-cloud"), RejectReason.REGION_PROVIDER_MISMATCH),
        (event(project_id="a\x00b"), RejectReason.INVALID_DATA),
        (event(job_id="line\nbreak"), RejectReason.INVALID_DATA),
        (event(project_id="\x85"), RejectReason.INVALID_DATA),  # C1 control
        (event(project_id="p" * 129), RejectReason.INVALID_DATA),
        (event(node="node 1"), RejectReason.INVALID_DATA),  # tokens: no spaces
        (event(cluster="c|1"), RejectReason.INVALID_DATA),
        (event(cluster="-c1"), RejectReason.INVALID_DATA),
        (event(gpu_uuid="GPU-é"), RejectReason.INVALID_DATA),
        (event(cluster=""), RejectReason.INVALID_DATA),
        (event(mig_profile="3g 40gb"), RejectReason.INVALID_DATA),
        ({**event(), "id": "tab\tid"}, RejectReason.INVALID_ENVELOPE),
        ({**event(), "source": "s" * 513}, RejectReason.INVALID_ENVELOPE),
        ({**event(), "id": ""}, RejectReason.INVALID_ENVELOPE),
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


@pytest.mark.parametrize(
    "field,value",
    [
        ("project_id", "a|b"),
        ("project_id", "quote'\"back\\slash"),
        ("project_id", "Ünïcødé 项目 🚀"),
        ("project_id", "\u2028sep\u2029"),
        ("project_id", "p" * 128),
        ("job_id", "1234_[1-3].batch"),
        ("node", "Node_01.rack-7:gpu@az+1=x/y"),
        ("gpu_uuid", "MIG-GPU-5c89852c-d268-c3f3-1b07-005d5ae455ee/2/0"),
        ("cluster", "c" * 128),
    ],
)
def test_documented_characters_are_kept_byte_for_byte(
    config: Config, field: str, value: str
) -> None:
    samples, rejects = decode(event(**{field: value}), config)
    assert rejects == []
    assert getattr(samples[0], field) == value


def test_source_and_id_take_any_text_without_controls(config: Config) -> None:
    raw = {**event(), "id": "é|\u1f600\\'\"" + "i" * 200, "source": "urn:x|y/" + "s" * 500}
    samples, rejects = decode(raw, config)
    assert rejects == [] and samples[0].identity == (raw["source"], raw["id"])


def test_lone_surrogate_and_invalid_utf8_are_refused(config: Config) -> None:
    good = json.dumps(event()).encode()
    for bad in (
        good.replace(b'"n1"', b'"\\ud800"'),  # a JSON escape of a lone surrogate
        good.replace(b'"n1"', b'"n\xff1"'),  # not UTF-8
    ):
        samples, rejects = decode(bad, config)
        assert samples == [] and len(rejects) == 1
        assert rejects[0].reason in (RejectReason.INVALID_DATA, RejectReason.MALFORMED_JSON)
