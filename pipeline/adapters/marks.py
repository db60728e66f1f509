"""Rating marks (``schemas/clickhouse/0007_rating_marks.sql``) and the usage fingerprints they
are compared with, computed by ClickHouse over ``usage_hourly`` with the formula of
:mod:`pipeline.domain.fingerprint`. Every query takes parameters."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from pipeline.adapters.clickhouse import Executor
from pipeline.domain.fingerprint import SEP, RatingMark, fingerprint_of
from pipeline.domain.period import Period
from pipeline.domain.usage import KEY_COLUMNS

# the same fields in the same order as pipeline.domain.fingerprint.row_text
_ROW = ", %(sep)s, ".join(
    (
        *("toString(toUInt32(hour))" if c == "hour" else c for c in KEY_COLUMNS),
        "toString(usage_us)",
        "toString(busy_us)",
    )
)


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


class RatingMarks:
    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self._seq = 0

    def fingerprints(
        self, first: Period, before: Period, tenant_ids: Iterable[str] | None = None
    ) -> dict[tuple[str, str], str]:
        """(tenant, period) -> the fingerprint of its usage, for the periods from ``first``
        up to (not including) ``before``; a period without usage is absent."""
        sql = (
            f"SELECT tenant_id, toYYYYMM(hour), count(), sum(halfMD5(concat({_ROW}))) "
            "FROM usage_hourly FINAL WHERE hour >= toDateTime(%(a)s, 'UTC') "
            "AND hour < toDateTime(%(b)s, 'UTC')"
        )
        params: dict[str, object] = {"a": _ts(first.start), "b": _ts(before.start), "sep": SEP}
        if tenant_ids is not None:
            sql += " AND tenant_id IN %(t)s"
            params["t"] = tuple(tenant_ids) or ("",)
        rows = self.ex.execute(sql + " GROUP BY tenant_id, toYYYYMM(hour)", params)
        return {
            (str(t), f"{int(ym) // 100:04d}-{int(ym) % 100:02d}"): fingerprint_of(int(n), int(s))
            for t, ym, n, s in rows
        }

    def marks(self, tenant_ids: Iterable[str] | None = None) -> dict[tuple[str, str], RatingMark]:
        sql = "SELECT tenant_id, period, fingerprint, settled_in FROM rating_marks FINAL"
        params: dict[str, object] = {}
        if tenant_ids is not None:
            sql += " WHERE tenant_id IN %(t)s"
            params["t"] = tuple(tenant_ids) or ("",)
        return {
            (str(t), str(p)): RatingMark(str(t), str(p), str(f), str(s))
            for t, p, f, s in self.ex.execute(sql, params)
        }

    def save(self, marks: Iterable[RatingMark], at: datetime) -> None:
        """Record marks; a later one for the same tenant and period replaces it."""
        rows = []
        for m in marks:  # seq: the order of writing (not the injected clock), strictly growing
            self._seq = max(self._seq + 1, time.time_ns() // 1000)
            rows.append((m.tenant_id, m.period, m.fingerprint, m.settled_in, at, self._seq))
        if rows:
            self.ex.insert(
                "rating_marks",
                ["tenant_id", "period", "fingerprint", "settled_in", "at", "seq"],
                rows,
            )
