"""Invoice lifecycle: draft -> finalized -> paid | payment_failed | void.

The ledger keeps every status change as an event; the current status is the result of
applying them in order. A transition the lifecycle does not allow (a payment for a void
invoice, a second finalization) is kept in the history but changes nothing.

    draft ──finalize──> finalized ──> paid
                            │  └────> payment_failed ──> paid | void
                            └───────> void  (a credit note is issued)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

ALLOWED: dict[str, set[str]] = {
    "": {"draft"},
    "draft": {"draft", "finalized"},
    "finalized": {"paid", "payment_failed", "void"},
    "payment_failed": {"paid", "payment_failed", "void"},
    "paid": set(),
    "void": set(),
}


@dataclass(frozen=True, slots=True)
class StatusEvent:
    key: str  # deterministic per event: "draft/r2", "finalized", "stripe/evt_..."
    status: str
    at: datetime
    seq: int  # orders events recorded in the same second
    source: str  # billing | stripe_webhook | cli
    source_ref: str  # e.g. the Stripe invoice id (finalized) or Stripe event id
    detail: str = ""


def allowed(current: str, new: str) -> bool:
    return new in ALLOWED.get(current, set())


def current_status(events: list[StatusEvent]) -> tuple[str, str]:
    """(status, Stripe invoice id) after applying ``events`` in order."""
    status, stripe_id = "", ""
    for e in sorted(events, key=lambda e: (e.seq, e.key)):
        if allowed(status, e.status):
            status = e.status
            if e.status == "finalized":
                stripe_id = e.source_ref
    return status or "draft", stripe_id


class HasStatus(Protocol):
    @property
    def status(self) -> str: ...


V = TypeVar("V", bound=HasStatus)


def current_of(invoices: Sequence[V]) -> V | None:
    """A tenant's invoice for a period, from its invoices of that period oldest first: the
    newest that is not void (a reissue), else the newest void one; None when it has none."""
    live = [v for v in invoices if v.status != "void"]
    found = live or list(invoices)
    return found[-1] if found else None
