"""Loading the partners' wholesale rate cards (``config/wholesale.yaml``), validated on load
with errors that name the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError, _load_list
from pipeline.domain.errors import BillingErrorCode
from pipeline.domain.focus import WholesaleCard
from pipeline.domain.reference import ReferenceData

WHOLESALE_FILE = "wholesale.yaml"


def load_wholesale(config_dir: Path, reference: ReferenceData) -> dict[str, WholesaleCard]:
    """Partner id -> its card. Every partner of ``partners.yaml`` needs one; a card's GPU
    models must be in the catalogue and its regions the partner's."""
    path = config_dir / WHOLESALE_FILE
    code = BillingErrorCode.INVALID_REFERENCE_DATA
    cards = _load_list(path, "partners", WholesaleCard, "partner", code)
    problems = []
    for pid, card in cards.items():
        partner = reference.partners.get(pid)
        if partner is None:
            problems.append(f"partners[{pid}].partner: no partner {pid!r} in partners.yaml")
            continue
        for i, price in enumerate(card.prices):
            if price.gpu_model not in reference.catalog.gpus:
                problems.append(
                    f"partners[{pid}].prices.{i}.gpu_model: {price.gpu_model!r} is not in the "
                    "GPU catalogue (gpus.yaml)"
                )
            if price.region is not None and price.region not in partner.regions:
                problems.append(
                    f"partners[{pid}].prices.{i}.region: {price.region!r} is not one of the "
                    f"partner's regions {partner.regions}"
                )
    for pid in sorted(set(reference.partners) - set(cards)):
        problems.append(f"partners: partner {pid!r} has no wholesale card")
    if problems:
        raise ConfigError(path, problems, code)
    return cards
