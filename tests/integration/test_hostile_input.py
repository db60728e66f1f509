"""Hostile strings through the real path: the decoder, the batch processor, the worker's table
tables (``in_memory_tables``, as the worker holds them), the sink's row
builder and ClickHouse (Debian's 18.16 server and chdb), read back byte for byte.

The oracle here is written from the documented rules (README "What each string accepts"),
independently of the patterns in the code: a generated event either satisfies every rule and
must come back exactly as sent, or breaks one and must be dead-lettered with a reason; either
way the ordinary event behind it in the same batch is counted to the micro-second.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor
from pipeline.config import Config
from pipeline.domain.events import DecodeLimits
from pipeline.worker.processor import BatchProcessor, Message
from pipeline.worker.sink import ClickHouseSink
from pipeline.worker.tables import in_memory_tables

pytestmark = [pytest.mark.clickhouse, pytest.mark.chdb]
Ex = DriverExecutor | ChdbExecutor

NOW = datetime(2026, 11, 5, tzinfo=UTC)
BASE = datetime(2026, 10, 1, tzinfo=UTC)
_counter = itertools.count(1)

# --- the documented rules, restated ---------------------------------------------------------
TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=\-]*")
CONTROL = {chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}


def token_ok(v: str, max_len: int = 128) -> bool:
    return 1 <= len(v) <= max_len and TOKEN_RE.fullmatch(v) is not None


def text_ok(v: str, min_len: int, max_len: int) -> bool:
    return min_len <= len(v) <= max_len and not (set(v) & CONTROL)


TOKENS = ("cluster", "node", "gpu_uuid")
TEXTS = {"project_id": (0, 128), "job_id": (0, 128)}
ENVELOPE = {"id": (1, 256), "source": (1, 512)}

# --- generators: separators, quotes, backslashes, controls, unicode, limits ------------------
HOSTILE = "|\x1e\x1f'\"\\\n\t\r\x00\x07\x7f\x85 ,;%=_:/@+.-é项🚀\u2028\ufeff"
ANY_CHAR = st.characters(exclude_categories=("Cs",))  # every code point JSON can carry as UTF-8


def strings(max_len: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(st.sampled_from(HOSTILE + "aZ9"), max_size=10),
        st.text(ANY_CHAR, max_size=24),
        st.text(
            st.sampled_from("aZ9.-_:/@+=" + HOSTILE), min_size=max_len - 1, max_size=max_len + 1
        ),
        st.text(st.sampled_from("abc123-._"), min_size=1, max_size=12),
        st.just("a" * max_len),
    )


TOKEN_CHARS = "abcxyzABCXYZ0189._:/@+=-"
TEXT_ALLOWED = st.one_of(
    st.sampled_from("|'\"\\ ,;%=_:/@+.-é项🚀\u2028\ufeff\x1e\x1f"[:-2] + "a"),
    ANY_CHAR.filter(lambda c: c not in CONTROL),
)


def valid_token(max_len: int) -> st.SearchStrategy[str]:
    head = st.sampled_from("aZ9")
    tail = st.one_of(
        st.text(st.sampled_from(TOKEN_CHARS), max_size=20),
        st.text(st.sampled_from(TOKEN_CHARS), min_size=max_len - 1, max_size=max_len - 1),
    )
    return st.builds(lambda h, t: h + t, head, tail)


def valid_text(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(TEXT_ALLOWED, min_size=max(lo, 0), max_size=24),
        st.text(TEXT_ALLOWED, min_size=hi, max_size=hi),
    )


@st.composite
def event_fields(draw: st.DrawFn) -> dict[str, str]:
    """Every field valid (with every separator, quote and script the rules allow), then
    mostly one field replaced by an arbitrary hostile string."""
    f = {k: draw(valid_token(128)) for k in TOKENS}
    f |= {k: draw(valid_text(lo, hi)) for k, (lo, hi) in {**TEXTS, **ENVELOPE}.items()}
    for name in draw(st.lists(st.sampled_from(sorted(f)), max_size=2, unique=True)):
        hi = {**TEXTS, **ENVELOPE}.get(name, (1, 128))[1]
        f[name] = draw(st.one_of(strings(hi), one_bad_char(f[name]), st.just(f[name] + "x" * hi)))
    return f


def one_bad_char(value: str) -> st.SearchStrategy[str]:
    """``value`` with one character inserted that some rule refuses (a control character of
    either range, or for tokens a space, separator or non-ASCII letter)."""
    bad = sorted(CONTROL) + list(" |'\"\\,;%\u2028é🚀")
    return st.builds(
        lambda i, c: value[:i] + c + value[i:],
        st.integers(0, len(value)),
        st.sampled_from(bad),
    )


def plain_event(n: int, start: datetime) -> dict[str, Any]:
    return make_event(
        n,
        start,
        {
            "id": f"plain-{n}",
            "source": "//ok",
            "cluster": "c1",
            "node": "n1",
            "gpu_uuid": "GPU-1",
            "project_id": "",
            "job_id": "",
        },
    )


def make_event(n: int, start: datetime, f: dict[str, str]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f["id"],
        "source": f["source"],
        "type": "gpu.usage.v1",
        "data": {
            "tenant_id": "acme-ai",
            "project_id": f["project_id"],
            "job_id": f["job_id"],
            "cluster": f["cluster"],
            "region": "us-east-1",
            "provider": "northwind-cloud",
            "node": f["node"],
            "gpu_uuid": f["gpu_uuid"],
            "gpu_model": "H100",
            "mig_profile": "1g.10gb",
            "gpu_count": 2,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=10)).isoformat(),
        },
    }


def valid(f: dict[str, str]) -> bool:
    return (
        all(token_ok(f[k]) for k in TOKENS)
        and all(text_ok(f[k], lo, hi) for k, (lo, hi) in TEXTS.items())
        and all(text_ok(f[k], lo, hi) for k, (lo, hi) in ENVELOPE.items())
    )


RAW_READ = (
    "SELECT event_source, event_id, project_id, job_id, cluster, node, gpu_uuid, mig_profile, "
    "start_us, end_us, gpu_count FROM usage_raw FINAL WHERE kafka_offset = %(o)s"
)
HOURLY_READ = (
    "SELECT project_id, cluster, region, provider, gpu_model, mig_profile, usage_us "
    "FROM usage_hourly FINAL WHERE tenant_id = 'acme-ai' AND hour = toDateTime(%(h)s, 'UTC') "
    "ORDER BY cluster, project_id"
)


def processor(engine: Ex, config: Config, dead: list[dict[str, Any]]) -> BatchProcessor:
    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        dead.append(json.loads(value))

    tables, _ = in_memory_tables()
    return BatchProcessor(
        config.reference, tables, ClickHouseSink(engine), send_dead_letter, lambda: NOW
    )


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=event_fields())
def test_every_string_round_trips_or_is_dead_lettered(
    engine: Ex, config: Config, fields: dict[str, str]
) -> None:
    n = next(_counter)
    offset = n * 10
    hour = BASE + timedelta(hours=n % 700)
    start = hour + timedelta(minutes=5)
    dead: list[dict[str, Any]] = []
    proc = processor(engine, config, dead)
    hostile = json.dumps(make_event(n, start, fields)).encode()
    batch = [
        Message("usage", 0, offset, b"acme-ai", hostile, NOW),
        Message(
            "usage", 0, offset + 1, b"acme-ai", json.dumps(plain_event(n, start)).encode(), NOW
        ),
    ]
    asyncio.run(proc.process(batch))

    plain_rows = engine.execute(RAW_READ, {"o": offset + 1})
    assert [(r[0], r[1], r[8], r[9]) for r in plain_rows] == [
        ("//ok", f"plain-{n}", int(start.timestamp() * 1e6), int(start.timestamp() * 1e6) + 6e8)
    ]
    rows = engine.execute(RAW_READ, {"o": offset})
    hourly = engine.execute(HOURLY_READ, {"h": hour.strftime("%Y-%m-%d %H:%M:%S")})
    if valid(fields):
        assert dead == []
        assert rows == [
            (
                fields["source"],
                fields["id"],
                fields["project_id"],
                fields["job_id"],
                fields["cluster"],
                fields["node"],
                fields["gpu_uuid"],
                "1g.10gb",
                int(start.timestamp()) * 1_000_000,
                int(start.timestamp()) * 1_000_000 + 600_000_000,
                2,
            )
        ]
        expected = {
            (fields["project_id"], fields["cluster"]): 2 * 600_000_000,
            ("", "c1"): 2 * 600_000_000,
        }
        got: dict[tuple[str, str], int] = {}
        for project, cluster, region, provider, model, mig, usage in hourly:
            assert (region, provider, model, mig) == (
                "us-east-1",
                "northwind-cloud",
                "H100",
                "1g.10gb",
            )
            got[(project, cluster)] = got.get((project, cluster), 0) + int(usage)
        assert got == expected
    else:
        assert rows == []
        assert [(d["reason"], d["offset"]) for d in dead] == [(dead[0]["reason"], offset)] and dead[
            0
        ]["reason"] in ("invalid_data", "invalid_envelope")
        assert base64.b64decode(dead[0]["value_b64"]) == hostile
        assert [(h[0], h[1], int(h[6])) for h in hourly] == [("", "c1", 2 * 600_000_000)]


def test_a_sample_whose_row_cannot_be_built_fails_alone(engine: Ex, config: Config) -> None:
    """Validation lets a 1969 sample through when the past limit allows it, but no ClickHouse
    DateTime holds its hour: that sample is dead-lettered as ``processing_error`` with the
    exception text, and the other sample of the same message and the next message count."""
    dead: list[dict[str, Any]] = []
    proc = processor(engine, config, dead)
    proc.limits = DecodeLimits(max_past_age_days=30_000)
    t = datetime(2026, 10, 3, 4, 0, tzinfo=UTC)
    old = plain_event(1, datetime(1969, 12, 31, 23, 0, tzinfo=UTC))
    batch = [
        Message(
            "usage", 0, 900_000, b"acme-ai", json.dumps([plain_event(2, t), old]).encode(), NOW
        ),
        Message("usage", 0, 900_001, b"acme-ai", json.dumps(plain_event(3, t)).encode(), NOW),
    ]
    asyncio.run(proc.process(batch))
    assert [(d["reason"], d["index"], d["offset"]) for d in dead] == [
        ("processing_error", 1, 900_000)
    ]
    assert "DateTime" in dead[0]["detail"]
    ids = engine.execute(
        "SELECT event_id FROM usage_raw FINAL WHERE kafka_offset >= 900000 ORDER BY event_id"
    )
    assert ids == [("plain-2",), ("plain-3",)]
    hourly = engine.execute(
        "SELECT sum(usage_us) FROM usage_hourly FINAL "
        "WHERE hour = toDateTime('2026-10-03 04:00:00', 'UTC')"
    )
    assert hourly == [(2 * 2 * 600_000_000,)]


@pytest.mark.parametrize("field", sorted([*TOKENS, *TEXTS, *ENVELOPE]))
def test_each_rules_edges_on_each_field(engine: Ex, config: Config, field: str) -> None:
    """The edges of each rule, on every field: the first and last control character of both
    ranges are refused; the longest value is kept and one more character is refused."""
    lo_hi = {**TEXTS, **ENVELOPE}.get(field, (1, 128))
    ok = {"id": "i", "source": "s", "cluster": "c", "node": "n", "gpu_uuid": "g"}
    ok |= {"project_id": "p", "job_id": "j"}
    cases = [(f"a{c}b", False) for c in "\x00\x1f\x7f\x80\x85\x9f"]
    cases += [("a" * lo_hi[1], True), ("a" * (lo_hi[1] + 1), False)]
    for value, accepted in cases:
        n = next(_counter)
        hour = BASE + timedelta(hours=n % 700)
        dead: list[dict[str, Any]] = []
        raw = json.dumps(make_event(n, hour, {**ok, field: value})).encode()
        asyncio.run(
            processor(engine, config, dead).process(
                [Message("usage", 0, n * 10, b"acme-ai", raw, NOW)]
            )
        )
        stored = engine.execute(RAW_READ, {"o": n * 10})
        assert (len(stored), len(dead)) == ((1, 0) if accepted else (0, 1)), (field, value)
        if accepted:
            assert value in stored[0]
