"""Usage fingerprints: ClickHouse (18.16 server and chdb) computes over ``usage_hourly`` exactly
what :func:`usage_fingerprint` computes from the rows a rating read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor
from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.store import Store
from pipeline.domain.fingerprint import EMPTY, RatingMark, usage_fingerprint
from pipeline.domain.period import Period

pytestmark = [pytest.mark.clickhouse, pytest.mark.chdb]
COLUMNS = ["tenant_id", "hour", "project_id", "gpu_model", "mig_profile", "region", "provider"]
COLUMNS += ["cluster", "usage_us", "busy_us", "samples", "version", "updated_at"]
NOW = datetime(2026, 12, 1, tzinfo=UTC)
OCT, NOV, DEC = Period.parse("2026-10"), Period.parse("2026-11"), Period.parse("2026-12")


def row(tenant: str, month: int, day: int, usage: int, project: str = "p", version: int = 1):
    hour = datetime(2026, month, day, 5, tzinfo=UTC)
    return (
        tenant,
        hour,
        project,
        "H100",
        "",
        "us-east-1",
        "fjord",
        "c",
        usage,
        usage // 3,
        1,
        version,
        NOW,
    )


def test_sql_and_python_fingerprints_agree(engine: DriverExecutor | ChdbExecutor) -> None:
    odd = 'a|b "q" \\ \x1f é ✓'
    engine.insert(
        "usage_hourly",
        COLUMNS,
        [
            row("t1", 10, 1, 100),
            row("t1", 10, 31, 7, project=odd),
            row("t1", 11, 1, 5),
            row("t2", 10, 2, 9),
            row("t2", 10, 2, 12, version=2),  # replaces the row above
        ],
    )
    marks = RatingMarks(engine)
    found = marks.fingerprints(OCT, DEC)
    store = Store(engine)
    expected = {
        (t, str(p)): usage_fingerprint(rows)
        for p in (OCT, NOV)
        for t, rows in store.hourly_rows(p).items()
    }
    assert found == expected
    assert set(found) == {("t1", "2026-10"), ("t1", "2026-11"), ("t2", "2026-10")}
    assert marks.fingerprints(OCT, NOV, ["t2"]) == {("t2", "2026-10"): expected[("t2", "2026-10")]}
    assert usage_fingerprint([]) == EMPTY

    # the fingerprint moves with any change of the period's usage
    engine.insert("usage_hourly", COLUMNS, [row("t1", 10, 1, 101, version=2)])
    assert marks.fingerprints(OCT, NOV)[("t1", "2026-10")] != found[("t1", "2026-10")]

    # the latest mark of a tenant and period wins
    at = datetime(2027, 1, 4, tzinfo=UTC)
    marks.save([RatingMark("t1", "2026-10", "x", "2026-10")], at)
    marks.save([RatingMark("t1", "2026-10", "", "2026-11")], at)
    assert marks.marks(["t1"]) == {("t1", "2026-10"): RatingMark("t1", "2026-10", "", "2026-11")}
