"""Does a rate card price everything the GPU catalogue lets the fleet report?

A usage row is priced by the most specific price of its GPU model valid at its hour (see
:meth:`~pipeline.domain.rating.RateCard.price_for`); a MIG profile pays its fraction of the
model's price. A card therefore covers a model, with the full GPU and every MIG profile, when at
every instant and for every tier some price of the model applies whatever the region and
provider. What is left uncovered is a :class:`CoverageGap`: usage that falls in it cannot be
rated, and its tenant's billing fails alone with ``billing.no_price_for_usage``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.domain.rating import Price, RateCard
from pipeline.domain.reference import GpuCatalog

TIERS = ("on-demand", "reserved", "spot")


@dataclass(frozen=True)
class CoverageGap:
    card: str
    gpu_model: str
    mig_profiles: tuple[str, ...]  # of the model in the catalogue (all share its price)
    problems: tuple[str, ...]  # where the card has no price ("" = none at all)

    def message(self) -> str:
        what = "full GPU" + (
            f" and MIG profiles {', '.join(self.mig_profiles)}" if self.mig_profiles else ""
        )
        where = " " + "; ".join(self.problems) if self.problems else ""
        return (
            f"rate card {self.card!r} has no price for GPU model {self.gpu_model} ({what})"
            f"{where}: such usage is not billed (billing.no_price_for_usage, its tenant fails "
            "alone)"
        )


_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)
Span = tuple[datetime, datetime]  # [from, until), _MIN / _MAX when unbounded


def _holes(prices: list[Price]) -> list[Span]:
    """The stretches of time none of ``prices`` is valid in."""
    spans = sorted((p.effective_from or _MIN, p.effective_until or _MAX) for p in prices)
    holes, reached = [], _MIN
    for start, until in spans:
        if start > reached:
            holes.append((reached, start))
        reached = max(reached, until)
    if reached < _MAX:
        holes.append((reached, _MAX))
    return holes


def _hole_text(hole: Span) -> str:
    start, until = (t.strftime("%Y-%m-%dT%H:%MZ") for t in hole)
    if hole == (_MIN, _MAX):
        return "at any time"
    if hole[0] == _MIN:
        return f"until {until}"
    if hole[1] == _MAX:
        return f"from {start}"
    return f"from {start} until {until}"


def coverage_gaps(card: RateCard, catalog: GpuCatalog) -> list[CoverageGap]:
    """Where ``card`` leaves usage of the catalogue's models without a price."""
    gaps = []
    for name, gpu in catalog.gpus.items():
        profiles = tuple(gpu.mig_profiles)
        prices = [p for p in card.prices if p.gpu_model == name]
        general = [p for p in prices if p.region is None and p.provider is None]
        problems: list[str] = []
        if prices and not general:
            narrowed = sorted(
                " ".join(
                    f"{dim} {value}"
                    for dim, value in (("region", p.region), ("provider", p.provider))
                    if value
                )
                for p in prices
            )
            problems.append(f"outside {', '.join(dict.fromkeys(narrowed))}")
        elif general:
            missing = [t for t in TIERS if not any(p.tier in (None, t) for p in general)]
            if missing:
                problems.append(f"for tier{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
            holes: dict[str, tuple[str, ...]] = {}
            for tier in TIERS:
                valid = [p for p in general if p.tier in (None, tier)]
                if valid and (found := tuple(_hole_text(h) for h in _holes(valid))):
                    holes[tier] = found
            if len(holes) == len(TIERS) and len(set(holes.values())) == 1:
                problems.append(", ".join(holes["on-demand"]))  # the same for every tier
            else:
                problems += [f"for tier {t} {', '.join(h)}" for t, h in holes.items()]
        if not prices or problems:
            gaps.append(CoverageGap(card.id, name, profiles, tuple(problems)))
    return gaps
