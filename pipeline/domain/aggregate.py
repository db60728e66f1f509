"""Folding samples into hourly aggregates, exactly once, as a pure state machine.

Two kinds of repetition are told apart:

* a **duplicate**: the same ``(source, id)`` arriving again at another position (a producer
  resend, a replayed range, a copy inside one batch). The dedupe memory maps identity -> the
  version (position) it was first seen at, so the copy is recognised and skipped;
* a **replay of the same message** after a crash (Kafka redelivers from the last committed
  offset). Each hourly aggregate stores the version (``offset << 20 | sample index``) of the
  last contribution folded into it. A contribution whose version is not newer was already
  counted, so it is skipped, but its key is still marked dirty so the absolute value is
  written again. The aggregate and its own replay-guard change in ONE table value, so a crash
  can never leave one updated without the other.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field

from pipeline.domain.events import DedupeKey, UsageSample
from pipeline.domain.hours import HOUR_US, US_PER_SECOND
from pipeline.domain.usage import Contribution, HourlyKey, contributions

INDEX_BITS = 20
MAX_SAMPLES_PER_MESSAGE = 1 << INDEX_BITS


def version_of(offset: int, index: int) -> int:
    if not 0 <= index < MAX_SAMPLES_PER_MESSAGE:
        raise ValueError(f"sample index {index} out of range")
    return (offset << INDEX_BITS) | index


@dataclass(slots=True)
class Agg:
    usage_us: int = 0
    busy_us: int = 0
    samples: int = 0
    version: int = -1
    late_us: int = 0  # the part of usage_us that arrived after the hour's grace period

    def to_list(self) -> list[int]:
        return [self.usage_us, self.busy_us, self.samples, self.version, self.late_us]

    @classmethod
    def from_list(cls, v: list[int] | None) -> Agg:
        return cls(*v) if v else cls()


@dataclass(slots=True)
class FoldResult:
    accepted: list[UsageSample] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)  # per accepted sample: any part late
    duplicates: int = 0
    replayed_contributions: int = 0
    dirty: dict[HourlyKey, Agg] = field(default_factory=dict)
    new_keys: list[HourlyKey] = field(default_factory=list)  # keys in the order first loaded


def fold(
    samples_with_pos: Sequence[tuple[UsageSample, int, int]],
    seen: MutableMapping[DedupeKey, int],
    load: Callable[[HourlyKey], Agg],
    result: FoldResult | None = None,
    arrival_us: int | None = None,
    grace_us: int = HOUR_US,
    parts: Sequence[list[Contribution]] | None = None,
) -> FoldResult:
    """Fold ``(sample, offset, index)`` of one message into aggregates.

    ``seen`` is the dedupe memory (``sample.dedupe_key`` -> version first seen); ``load``
    reads a key's stored aggregate. ``arrival_us`` is when the message reached Kafka (its
    record time): a contribution to an hour that arrives more than ``grace_us`` after the hour
    ended is still counted, and also added to the key's ``late_us``. The changed aggregates
    are returned in ``result.dirty`` (key -> absolute value) for the caller to persist;
    nothing here does I/O. ``parts``, when given, holds each sample's contributions already
    computed (the processor computes them first, so that a sample that cannot be split fails
    alone before anything is folded).
    """
    res = result or FoldResult()
    for n, (sample, offset, index) in enumerate(samples_with_pos):
        ident = sample.dedupe_key
        version = version_of(offset, index)
        # remembered at this version unless seen before: at another version it is a copy; at
        # this one, this very message replayed (its parts are guarded by the versions below)
        first = seen.setdefault(ident, version)
        if first != version:
            res.duplicates += 1
            continue
        res.accepted.append(sample)
        any_late = False
        for c in contributions(sample) if parts is None else parts[n]:
            late = arrival_us is not None and arrival_us > (
                c.key.hour_s * US_PER_SECOND + HOUR_US + grace_us
            )
            any_late |= late
            k = c.key
            agg = res.dirty.get(k)
            if agg is None:
                agg = load(k)
                res.dirty[k] = agg
                res.new_keys.append(k)
            if version <= agg.version:
                res.replayed_contributions += 1
                continue
            agg.usage_us += c.usage_us
            agg.busy_us += c.busy_us
            agg.samples += 1
            agg.version = version
            if late:
                agg.late_us += c.usage_us
        res.late.append(any_late)
    return res
