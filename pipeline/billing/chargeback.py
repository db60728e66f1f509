"""Chargeback for internal teams (brief §6): each usage line debits the team's cost centre and
credits the GPU platform's; a journal CSV for finance and one CSV per cost centre for its team.

Lifecycle, like an invoice's (``schemas/clickhouse/0006_chargeback_lifecycle.sql``):

* until the period's end plus the draft grace (``draft_grace_h``) a tenant's chargeback is a
  **draft**: every run rates it again and keeps a new revision when its content changed, and
  the period's journal files are written again;
* the first run after that **closes** the period: its revisions, entries and journal files
  never change again (a file missing on disk is written again from the journal, an existing
  one is left alone);
* usage that arrives for a closed period is not lost: each later period's chargeback rates
  the closed periods again and carries the difference from what was charged for them as
  **adjustment** entries ``adj/<period>/<line>`` referencing the original period (column
  ``usage_period``), like a late invoice adjustment. A rerun of the closed period reports
  ``unchanged``, ``changed_after_close`` (pending on the next period billed) or ``adjusted``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.adapters.chargeback import ChargebackHead, ChargebackLedger
from pipeline.adapters.marks import RatingMarks
from pipeline.adapters.store import Store
from pipeline.billing.documents import fraction_text
from pipeline.billing.ledger_rows import content_hash
from pipeline.config import Config
from pipeline.domain.adjustments import Billed, adjustment_lines
from pipeline.domain.charged import ChargedLine, billed, carried_in, charging
from pipeline.domain.fingerprint import EMPTY, RatingMark, usage_fingerprint
from pipeline.domain.line_key import LineKey
from pipeline.domain.money import from_minor
from pipeline.domain.period import Period
from pipeline.domain.rating import Line, UsageRow, rate_usage
from pipeline.domain.reference import Tenant

CLOSED_AS = "charged back"
JOURNAL_HEADER = [
    "period",
    "usage_period",
    "entry",
    "cost_centre",
    "tenant_id",
    "line_key",
    "description",
    "gpu_hours",
    "unit_price",
    "debit",
    "credit",
    "currency",
]
CC_HEADER = [
    "period",
    "usage_period",
    "cost_centre",
    "line",
    "gpu_hours",
    "unit_price",
    "cost",
    "currency",
    "efficiency_pct",
]


@dataclass
class ChargebackResult:
    """What a run did for one internal tenant (the billing run turns it into a report row)."""

    tenant_id: str
    currency: str
    gpu_hours: Fraction
    amount: Decimal
    # draft | charged_back (closed by this run) | unchanged | changed_after_close |
    # adjusted (late usage carried by a later period)
    status: str


@dataclass
class Known:
    """What the journal holds for a run's period, read once for all tenants."""

    period: str
    closed: bool  # this period is closed already
    heads: dict[str, ChargebackHead]  # tenant -> its latest revision of this period
    # tenant -> its closed periods before this one whose usage changed since they were last
    # rated (the only ones rated again), oldest first
    stale: dict[str, list[str]]
    # (tenant, period charged in) -> entries of closed revisions that charge this period or a
    # stale one (their own entries and adjustments for them)
    entries: dict[tuple[str, str], list[dict[str, Any]]]
    marks: dict[tuple[str, str], RatingMark]
    usage: dict[str, dict[str, list[UsageRow]]] = field(default_factory=dict)  # by period


def entry_rows(
    tenant: Tenant,
    period: str,
    revision: int,
    lines: list[Line],
    platform_cost_centre: str,
    now: datetime,
) -> list[dict[str, Any]]:
    return [
        {
            "period": period,
            "cost_centre": tenant.cost_centre or "",
            "tenant_id": tenant.id,
            "line_key": ln.line_key,
            "revision": revision,
            "kind": ln.kind,
            "period_ref": ln.period_ref or period,
            "description": ln.description,
            "quantity": str(ln.quantity_display),
            "quantity_exact": fraction_text(ln.quantity),
            "unit_price": str(ln.unit_price),
            "amount_minor": ln.amount_minor,
            "currency": ln.currency,
            "credit_cost_centre": platform_cost_centre,
            "usage_us": ln.usage_us,
            "busy_us": ln.busy_us,
            "created_at": now,
        }
        for ln in lines
    ]


def _quantity(entry: dict[str, Any]) -> Fraction:
    """An entry's exact GPU-hours (entries written before 0006 only have the display form)."""
    return Fraction(entry["quantity_exact"] or entry["quantity"])


class Chargebacks:
    def __init__(
        self,
        config: Config,
        store: Store,
        ledger: ChargebackLedger,
        out_root: Path,
        clock: Callable[[], datetime],
        grace: timedelta,
    ) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.out_root = out_root
        self.clock = clock
        self.grace = grace
        self.marks = RatingMarks(ledger.ex)
        self._heads: list[dict[str, Any]] = []
        self._entries: list[dict[str, Any]] = []
        self._settled: list[RatingMark] = []  # found settled: written by :meth:`finish`
        self._closing: list[RatingMark] = []  # settled if this run closes the period

    def prefetch(self, period: Period) -> Known:
        """One read of the journal for the run: the period's revisions and, among the closed
        periods before it, those whose usage changed since they were last rated (a usage
        fingerprint per tenant and period against its mark) with what was charged for them."""
        p = str(period)
        closed = self.ledger.closed()
        before = sorted(c for c in closed if c < p)
        heads = self.ledger.heads(periods=sorted(closed | {p}))
        marks = self.marks.marks()
        stale: dict[str, list[str]] = {}
        if before:
            prints = self.marks.fingerprints(Period.parse(before[0]), period)
            candidates = {k for k in (*prints, *heads, *marks) if k[1] in before}
            for t, q in sorted(candidates, key=lambda k: (k[1], k[0])):
                mark = marks.get((t, q))
                if mark is None or not mark.current(prints.get((t, q), EMPTY)):
                    stale.setdefault(t, []).append(q)
        closed_heads = [h for (_, q), h in heads.items() if q in closed]
        charged = {q for qs in stale.values() for q in qs} | ({p} if p in closed else set())
        tenants = set(stale) | ({t for t, q in heads if q == p} if p in closed else set())
        return Known(
            p,
            p in closed,
            {t: h for (t, q), h in heads.items() if q == p},
            stale,
            self.ledger.charging(sorted(tenants), sorted(charged), closed_heads),
            marks,
        )

    def tenants(self, known: Known) -> set[str]:
        """Tenants this run may have something to charge for besides those with usage in
        its period: a revision of the period, or a closed period whose usage changed (the
        billing run keeps the internal ones)."""
        return set(known.heads) | (set() if known.closed else set(known.stale))

    # -- one tenant ------------------------------------------------------------------------
    def charge(
        self, tenant: Tenant, period: Period, rows: list[UsageRow], known: Known
    ) -> ChargebackResult | None:
        """Rate one internal tenant's period (see the module doc); None when it has nothing
        to charge and never had."""
        card = self.config.card_for(tenant.id)
        if known.closed:
            return self._closed(tenant, rows, known)
        own = self._rate(tenant, rows)
        adjustments, settles = self._adjustments(tenant, known)
        lines = own + adjustments
        self._closing += [
            RatingMark(tenant.id, known.period, usage_fingerprint(rows), known.period)
        ]
        self._closing += settles
        head = known.heads.get(tenant.id)
        if not lines and head is None:
            return None
        chash = content_hash(lines)
        if head is None or head.content_hash != chash:
            revision = 1 if head is None else head.revision + 1
            now = self.clock()
            self._entries += entry_rows(
                tenant,
                known.period,
                revision,
                lines,
                self.config.reference.platform_cost_centre,
                now,
            )
            self._heads.append(
                {
                    "tenant_id": tenant.id,
                    "period": known.period,
                    "revision": revision,
                    "cost_centre": tenant.cost_centre or "",
                    "currency": card.currency,
                    "total_minor": sum(ln.amount_minor for ln in lines),
                    "line_count": len(lines),
                    "content_hash": chash,
                    "created_at": now,
                }
            )
        status = "draft" if self.clock() < period.end + self.grace else "charged_back"
        return ChargebackResult(
            tenant.id,
            card.currency,
            sum((ln.quantity for ln in own), Fraction(0)),
            sum((ln.amount for ln in lines), Decimal(0)),
            status,
        )

    def _rate(self, tenant: Tenant, rows: list[UsageRow]) -> list[Line]:
        card = self.config.card_for(tenant.id)
        tier_of = self.config.contract(tenant.id).tier_of
        return rate_usage(rows, card, self.config.reference.catalog, tier_of).lines

    def _usage(self, period: str, known: Known) -> dict[str, list[UsageRow]]:
        if period not in known.usage:
            known.usage[period] = self.store.hourly_rows(Period.parse(period))
        return known.usage[period]

    def _charged(self, tenant_id: str, known: Known) -> list[ChargedLine]:
        """The tenant's entries on closed periods that the run read, as charged lines."""
        return [
            ChargedLine(
                tenant_id,
                f"{tenant_id}/{period}",
                period,
                LineKey.parse(e["line_key"]),
                e["kind"],
                from_minor(int(e["amount_minor"]), e["currency"]),
                int(e["amount_minor"]),
                int(e["usage_us"]),
                _quantity(e),
            )
            for (t, period), entries in known.entries.items()
            if t == tenant_id
            for e in entries
        ]

    def _billed(
        self, tenant_id: str, period: str, known: Known, excluding: str = ""
    ) -> dict[str, Billed]:
        """Line key -> what closed periods (other than ``excluding``) charged for
        ``period``: its own entries and adjustments for it on later ones."""
        return billed(charging(period, self._charged(tenant_id, known), excluding))

    def _adjustments(self, tenant: Tenant, known: Known) -> tuple[list[Line], list[RatingMark]]:
        """Late usage of the tenant's closed periods whose usage changed since they were last
        rated, as entries for this one, and the marks those entries settle once this period
        closes (a period rated again to no difference is settled at once)."""
        currency = self.config.card_for(tenant.id).currency
        out: list[Line] = []
        settles: list[RatingMark] = []
        for closed in known.stale.get(tenant.id, []):
            rows = self._usage(closed, known).get(tenant.id, [])
            was_charged = self._billed(tenant.id, closed, known, excluding=known.period)
            now = self._rate(tenant, rows)
            lines = adjustment_lines(closed, now, was_charged, currency, CLOSED_AS)
            mark = RatingMark(tenant.id, closed, usage_fingerprint(rows), known.period)
            if lines:
                settles.append(mark)
            else:
                was = known.marks.get((tenant.id, closed))
                self._settled.append(replace(mark, settled_in=was.settled_in if was else closed))
            out += lines
        return out, settles

    def _closed(
        self, tenant: Tenant, rows: list[UsageRow], known: Known
    ) -> ChargebackResult | None:
        """A rerun of a closed period: nothing is written; how it stands."""
        head = known.heads.get(tenant.id)
        if head is None and not rows:
            return None
        own = known.entries.get((tenant.id, known.period), [])
        currency = self.config.card_for(tenant.id).currency
        fingerprint = usage_fingerprint(rows)
        mark = known.marks.get((tenant.id, known.period))
        if mark is not None and mark.current(fingerprint):
            status = "unchanged" if mark.settled_in == known.period else "adjusted"
        else:
            now = self._rate(tenant, rows)
            charged = self._billed(tenant.id, known.period, known)
            carried = carried_in(known.period, self._charged(tenant.id, known))
            if adjustment_lines(known.period, now, charged, currency):
                status = "changed_after_close"
            else:
                status = "adjusted" if carried else "unchanged"
                settled_in = carried[-1] if carried else known.period
                self._settled.append(RatingMark(tenant.id, known.period, fingerprint, settled_in))
        return ChargebackResult(
            tenant.id,
            currency,
            sum((_quantity(e) for e in own if e["kind"] == "usage"), Fraction(0)),
            from_minor(head.total_minor, currency) if head is not None else Decimal(0),
            status,
        )

    # -- the period ------------------------------------------------------------------------
    def finish(self, period: Period, known: Known, failed: bool = False) -> None:
        """Write the revisions of this run, close the period once its grace is over (not
        while a tenant of it ``failed`` to be rated: it is charged in its own period once its
        rate card is fixed), and write its journal files (only missing ones once closed)."""
        self.ledger.save(self._heads, self._entries)
        now = self.clock()
        settled = self._settled
        if not known.closed and not failed and now >= period.end + self.grace:
            self.ledger.close(known.period, now, len(self.ledger.heads(periods=[known.period])))
            settled = settled + self._closing  # after the close they describe
        self.marks.save(settled, now)
        self._heads, self._entries, self._settled, self._closing = [], [], [], []
        folder = self.out_root / known.period / "chargeback"
        write_journal(folder, self.ledger.journal(known.period), overwrite=not known.closed)


def write_journal(folder: Path, entries: list[dict[str, Any]], overwrite: bool = True) -> None:
    """``journal.csv`` (a debit and a credit row per entry) and one report per cost centre;
    with ``overwrite=False`` only the files that are missing."""
    folder.mkdir(parents=True, exist_ok=True)
    journal = folder / "journal.csv"
    if overwrite or not journal.exists():
        with journal.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(JOURNAL_HEADER)
            for e in entries:
                amount = str(from_minor(e["amount_minor"], e["currency"]))
                common = [
                    e["tenant_id"],
                    e["line_key"],
                    e["description"],
                    e["quantity"],
                    e["unit_price"],
                ]
                ref, cur = e["period_ref"] or e["period"], e["currency"]
                w.writerow([e["period"], ref, "debit", e["cost_centre"], *common, amount, "", cur])
                w.writerow(
                    [
                        e["period"],
                        ref,
                        "credit",
                        e["credit_cost_centre"],
                        *common,
                        "",
                        amount,
                        e["currency"],
                    ]
                )
    by_cc: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_cc.setdefault(e["cost_centre"], []).append(e)
    for cc, cc_entries in by_cc.items():
        path = folder / f"{cc.replace('/', '__')}.csv"
        if not overwrite and path.exists():
            continue
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CC_HEADER)
            for e in cc_entries:
                eff = (
                    (Decimal(e["busy_us"]) * 100 / Decimal(e["usage_us"])).quantize(Decimal("0.1"))
                    if e["usage_us"] > 0 and e["kind"] == "usage"
                    else ""
                )
                w.writerow(
                    [
                        e["period"],
                        e["period_ref"] or e["period"],
                        cc,
                        e["description"],
                        e["quantity"],
                        e["unit_price"],
                        str(from_minor(e["amount_minor"], e["currency"])),
                        e["currency"],
                        eff,
                    ]
                )
