"""Property: whatever bytes arrive, the decoder accepts them or dead-letters them with a
reason code, and never raises (so it can never crash the worker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import Config
from pipeline.domain.errors import RejectReason
from pipeline.domain.events import decode_message
from pipeline.settings import REPO_ROOT

CONFIG = Config.load(REPO_ROOT / "config")
NOW = datetime(2026, 11, 5, tzinfo=UTC)
GOOD = {
    "specversion": "1.0",
    "id": "e1",
    "source": "//c/n1",
    "type": "gpu.usage.v1",
    "data": {
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
        "mig_profile": "3g.40gb",
    },
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = sorted(GOOD) + [f"data.{k}" for k in sorted(GOOD["data"])]  # type: ignore[attr-defined]


@st.composite
def mutated_event(draw: Any) -> dict[str, Any]:
    ev = json.loads(json.dumps(GOOD))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(FIELDS)).split(".")
        target = ev if len(path) == 1 else ev.get("data")
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()):
            target.pop(path[-1], None)
        else:
            target[path[-1]] = draw(
                json_values
                | st.sampled_from(
                    [
                        "2026-10-01T06:00:00Z",
                        "2026-10-01T05:00:00+02:00",
                        "Z999",
                        "7g.80gb",
                        "",
                        "L40S",
                    ]
                )
            )
    return ev


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_event().map(lambda e: json.dumps(e).encode()),
    st.lists(mutated_event(), max_size=5).map(lambda es: json.dumps(es).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(payloads)
def test_every_input_is_accepted_or_dead_lettered_with_a_reason(raw: bytes) -> None:
    samples, rejects = decode_message(raw, CONFIG.reference, NOW)
    assert samples or rejects
    for r in rejects:
        assert isinstance(r.reason, RejectReason) and r.detail is not None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(doc, list) and doc and all(r.index is not None for r in rejects):
        assert len(samples) + len(rejects) == len(doc)
