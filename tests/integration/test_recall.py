"""The dedupe memory's recall (identities below the floor looked up in ``usage_raw``) on the
Debian 18.16 server and on chdb: rows written by the real row builder are found at their Kafka
position, byte for byte for hostile identities, across hours, in more than one chunk; other
tenants, sources and start minutes are not confused with them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor
from pipeline.domain.events import DedupeBucket, DedupeKey, UsageSample
from pipeline.domain.hours import to_us
from pipeline.worker.sink import RECALL_CHUNK, ClickHouseSink, raw_row

pytestmark = [pytest.mark.clickhouse, pytest.mark.chdb]
NOW = datetime(2026, 11, 5, tzinfo=UTC)
T0 = to_us(datetime(2026, 10, 3, 7, 59, 30, tzinfo=UTC))


def sample(tenant: str, source: str, ident: str, start_us: int) -> UsageSample:
    return UsageSample(
        source, ident, tenant, "p", "c1", "us-east-1", "northwind-cloud", "n1", "H100", "",
        1, start_us, start_us + 60_000_000, None, "", "GPU-1",
    )  # fmt: skip


def test_recall_finds_identities_at_their_positions(
    engine: DriverExecutor | ChdbExecutor,
) -> None:
    hostile = ["it's", 'a"b', "back\\slash", "ünï-côdé", "x" * 128, "%(t)s", "a|b", "?"]
    written = [
        (sample("acme-ai", "//n/1", ident, T0 + i * 45_000_000), 0, 100 + i)
        for i, ident in enumerate(hostile)
    ]
    many = [
        (sample("team-asr", "//n/2", f"e{i}", T0 + 3_600_000_000), 3, 5000 + i)
        for i in range(RECALL_CHUNK + 10)
    ]
    sink = ClickHouseSink(engine)
    raw = [raw_row(s, p, o, NOW) for s, p, o in written + many]
    asyncio.run(sink.flush(raw, {}, NOW))

    wanted = [s.dedupe_key for s, _, _ in written + many]
    minute = wanted[0].bucket.minute_us
    absent = [
        DedupeKey(DedupeBucket("other-tenant", "//n/1", minute), "it's"),
        DedupeKey(DedupeBucket("acme-ai", "//n/9", minute), "it's"),
        DedupeKey(DedupeBucket("acme-ai", "//n/1", minute + 60_000_000), "it's"),
        DedupeKey(DedupeBucket("acme-ai", "//n/1", wanted[1].bucket.minute_us), "never"),
    ]
    found = asyncio.run(sink.recall(wanted + absent))
    expected = {s.dedupe_key: frozenset({(p, o)}) for s, p, o in written + many}
    assert found == expected
    assert sink.recalled == len(wanted) + len(absent)
    assert asyncio.run(sink.recall([])) == {}


def test_recall_of_many_longest_identities_stays_within_the_query_size(
    engine: DriverExecutor | ChdbExecutor,
) -> None:
    """300 identities at the longest the schema accepts, made of characters that escaping
    doubles: one query would exceed ClickHouse's max_query_size (a permanent error that would
    stop the worker); the recall splits them and finds every one."""
    tenant = "t" * 64
    source = "/" + "\\'" * 255 + "é"  # 512 characters
    written = [
        (sample(tenant, source, f"{i:03d}" + "'\\" * 126 + "x", T0 + i * 1_000_000), 1, i)
        for i in range(300)
    ]
    sink = ClickHouseSink(engine)
    asyncio.run(sink.flush([raw_row(s, p, o, NOW) for s, p, o in written], {}, NOW))
    found = asyncio.run(sink.recall([s.dedupe_key for s, _, _ in written]))
    assert found == {s.dedupe_key: frozenset({(p, o)}) for s, p, o in written}


def test_recall_hourly_reads_back_the_latest_version_of_each_key(
    engine: DriverExecutor | ChdbExecutor,
) -> None:
    """Aggregates of hours below the floor, read back from ``usage_hourly FINAL``: the newest
    version of each key (an older one written after it does not win), hostile project names
    byte for byte, one hour alone and more hours than a chunk; keys with no row are left out."""
    from pipeline.domain.aggregate import Agg
    from pipeline.domain.usage import HourlyKey

    hour0 = to_us(datetime(2026, 10, 3, 7, tzinfo=UTC)) // 1_000_000

    def key(tenant: str, h: int, project: str = "p") -> HourlyKey:
        return HourlyKey(tenant, hour0 + 3600 * h, project, "H100", "", "us-east-1",
                         "northwind-cloud", "c1")  # fmt: skip

    keys = [key("acme-ai", 0, p) for p in ("it's", 'a"b', "a|b", "ünï")] + [
        key("team-asr", h) for h in range(RECALL_CHUNK + 5)
    ]
    sink = ClickHouseSink(engine)
    newest = {k: Agg(1000 + i, 10 + i, 2, 7 << 20 | i, i) for i, k in enumerate(keys)}
    asyncio.run(sink.flush([], newest, NOW))
    older = {k: Agg(1, 1, 1, 3 << 20, 0) for k in keys[:3]}
    asyncio.run(sink.flush([], older, NOW))  # an older version, written later
    absent = [key("acme-ai", 1), key("acme-ai", 0, "q"), key("other", 0)]
    assert asyncio.run(sink.recall_hourly(keys + absent)) == newest
    assert asyncio.run(sink.recall_hourly(keys[:1])) == {keys[0]: newest[keys[0]]}
    assert sink.recalled_hourly == len(keys) + len(absent) + 1
