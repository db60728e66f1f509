"""A fingerprint of a tenant's usage in a period: what a rating of it depends on.

Two sets of hourly rows have the same fingerprint when they hold the same keys with the same
GPU-µs (and busy µs). It is computed here from the rows a rating read, and by ClickHouse over
``usage_hourly`` (:mod:`pipeline.adapters.marks`) with the same formula, so that a billing run
can tell, with one query, which closed periods changed since they were rated: the row count and
the sum, modulo 2**64, of the first 8 bytes (big-endian) of the MD5 of each row's fields joined
by U+001F (ClickHouse's ``halfMD5``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.domain.rating import UsageRow

SEP = "\x1f"
EMPTY = "0:0000000000000000"  # no usage at all


def row_text(row: UsageRow) -> str:
    """The key's values in :data:`~pipeline.domain.usage.KEY_COLUMNS` order, then the
    quantities. Injective: no stored value can hold U+001F (a control character)."""
    return SEP.join((*(str(v) for v in row.key.values()), str(row.usage_us), str(row.busy_us)))


def fingerprint_of(count: int, digest_sum: int) -> str:
    return f"{count}:{digest_sum % 2**64:016x}"


def usage_fingerprint(rows: Iterable[UsageRow]) -> str:
    count, total = 0, 0
    for r in rows:
        count += 1
        total += int.from_bytes(hashlib.md5(row_text(r).encode()).digest()[:8], "big")
    return fingerprint_of(count, total)


@dataclass(frozen=True)
class RatingMark:
    """A closed period of a tenant, settled as rated from usage with ``fingerprint``: what its
    final documents charge for it (its own and adjustments on later ones) is that usage's
    rating. ``settled_in`` is the period whose document last carried a change of it (the period
    itself when none did)."""

    tenant_id: str
    period: str
    fingerprint: str
    settled_in: str

    def current(self, fingerprint: str) -> bool:
        """Whether usage with ``fingerprint`` needs no new rating."""
        return bool(self.fingerprint) and self.fingerprint == fingerprint
