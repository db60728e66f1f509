"""Loading reference data and rate cards from ``config/`` with errors that name the file,
the field and the problem."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.domain.contracts import Contract
from pipeline.domain.coverage import CoverageGap, coverage_gaps
from pipeline.domain.documents import Party
from pipeline.domain.errors import BillingError, BillingErrorCode
from pipeline.domain.rating import RateCard
from pipeline.domain.reference import GpuCatalog, ReferenceData

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class ConfigError(BillingError):
    def __init__(self, path: Path, problems: list[str], code: BillingErrorCode) -> None:
        super().__init__(code, f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


def _read_yaml(path: Path, code: BillingErrorCode) -> Any:
    try:
        with path.open() as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"], code) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"], code) from None


def _problems(err: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()]


def _validate(model: type[M], data: Any, path: Path, code: BillingErrorCode) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(path, _problems(err), code) from None


def load_reference(config_dir: Path) -> ReferenceData:
    code = BillingErrorCode.INVALID_REFERENCE_DATA
    catalog = _validate(
        GpuCatalog, _read_yaml(config_dir / "gpus.yaml", code), config_dir / "gpus.yaml", code
    )
    tenants_raw = _read_yaml(config_dir / "tenants.yaml", code) or {}
    partners_raw = _read_yaml(config_dir / "partners.yaml", code) or {}
    data = {
        "catalog": catalog,
        "tenants": tenants_raw.get("tenants", []),
        "partners": partners_raw.get("partners", []),
        "platform_cost_centre": partners_raw.get("platform_cost_centre", "platform/gpu"),
    }
    return _validate(ReferenceData, data, config_dir / "tenants.yaml", code)


def _load_list(
    path: Path, top: str, model: type[M], id_field: str, code: BillingErrorCode
) -> dict[str, M]:
    """A YAML file holding ``top: [...]``: each item validated, keyed by ``id_field``, unique."""
    raw = _read_yaml(path, code)
    if not isinstance(raw, dict) or not isinstance(raw.get(top), list):
        raise ConfigError(path, [f"expected a top-level '{top}:' list"], code)
    out: dict[str, M] = {}
    for i, item in enumerate(raw[top]):
        try:
            value = model.model_validate(item)
        except ValidationError as err:
            ident = item.get(id_field, i) if isinstance(item, dict) else i
            raise ConfigError(path, [f"{top}[{ident}].{p}" for p in _problems(err)], code) from None
        ident = getattr(value, id_field)
        if ident in out:
            raise ConfigError(path, [f"{top}: {id_field} {ident!r} appears twice"], code)
        out[ident] = value
    return out


def load_rate_cards(path: Path) -> dict[str, RateCard]:
    return _load_list(path, "rate_cards", RateCard, "id", BillingErrorCode.INVALID_RATE_CARD)


def load_contracts(path: Path) -> dict[str, Contract]:
    """``contracts.yaml`` is optional: without it every tenant is billed on its rate card."""
    if not path.exists():
        return {}
    return _load_list(path, "contracts", Contract, "tenant", BillingErrorCode.INVALID_CONTRACT)


DEFAULT_SELLER = Party(id="gpumeter", name="gpumeter")  # without config/seller.yaml


def load_seller(path: Path) -> Party:
    code = BillingErrorCode.INVALID_REFERENCE_DATA
    if not path.exists():
        return DEFAULT_SELLER
    raw = _read_yaml(path, code) or {}
    return _validate(Party, raw.get("seller") if isinstance(raw, dict) else raw, path, code)


@dataclass(frozen=True)
class Config:
    reference: ReferenceData
    rate_cards: dict[str, RateCard]
    contracts: dict[str, Contract] = field(default_factory=dict)
    seller: Party = DEFAULT_SELLER

    def contract(self, tenant_id: str) -> Contract:
        """The tenant's contract, or its rate card with no other terms."""
        found = self.contracts.get(tenant_id)
        if found is not None:
            return found
        return Contract(tenant=tenant_id)

    def card_for(self, tenant_id: str) -> RateCard:
        return self.rate_cards[self.reference.tenants[tenant_id].rate_card]

    def coverage_gaps(self) -> list[CoverageGap]:
        """Where a rate card has no price for a GPU model (and its MIG profiles) of the
        catalogue. A warning, not an error: a card need not sell every model, and usage that
        falls in a gap fails only its own tenant's billing (``billing.no_price_for_usage``,
        naming the usage key), while :meth:`load` logs each gap and ``gpumeter bill`` prints
        them before billing."""
        catalog = self.reference.catalog
        return [
            g for _, card in sorted(self.rate_cards.items()) for g in coverage_gaps(card, catalog)
        ]

    @classmethod
    def load(cls, config_dir: Path) -> Config:
        ref = load_reference(config_dir)
        cards = load_rate_cards(config_dir / "rate_cards.yaml")
        contracts = load_contracts(config_dir / "contracts.yaml")
        seller = load_seller(config_dir / "seller.yaml")
        for c in contracts.values():
            problems = []
            if c.tenant not in ref.tenants:
                problems.append(f"contract for unknown tenant {c.tenant!r}")
            if problems:
                raise ConfigError(
                    config_dir / "contracts.yaml", problems, BillingErrorCode.INVALID_CONTRACT
                )
        for tenant in ref.tenants.values():
            card = cards.get(tenant.rate_card)
            if card is None:
                raise ConfigError(
                    config_dir / "tenants.yaml",
                    [f"tenant {tenant.id!r}: unknown rate_card {tenant.rate_card!r}"],
                    BillingErrorCode.INVALID_REFERENCE_DATA,
                )
            if card.currency != tenant.currency:
                raise ConfigError(
                    config_dir / "tenants.yaml",
                    [
                        f"tenant {tenant.id!r} bills in {tenant.currency} but rate card "
                        f"{card.id!r} is in {card.currency}"
                    ],
                    BillingErrorCode.INVALID_REFERENCE_DATA,
                )
        config = cls(ref, cards, contracts, seller)
        for gap in config.coverage_gaps():
            log.warning("%s: %s", config_dir / "rate_cards.yaml", gap.message())
        return config
