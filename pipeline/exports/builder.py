"""Building and delivering partner exports (``gpumeter exports build|deliver``).

* **build** writes, per partner and period, the FOCUS rows of the usage on its capacity plus
  correction rows for hours of earlier *delivered* exports whose usage changed since, under
  ``<out>/<period>/exports/<partner>/``. An export already delivered is left alone.
* **deliver** (once the period has ended and its late grace passed) builds what is not yet
  delivered, records in ClickHouse what each row stated (the base for later corrections),
  then pushes the files to the partner's bucket when it has one: data files first, the
  manifest last; files the bucket already holds with the same SHA-256 are skipped. A
  delivered export is then what the partner pulls through the API; it is never rewritten.

One runner at a time: delivering builds again right before it records, so corrections are
counted once whichever export carries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.adapters.export_ledger import Delivery, ExportLedger
from pipeline.adapters.store import Store
from pipeline.config import Config
from pipeline.domain.errors import ExportError, ExportErrorCode
from pipeline.domain.focus import (
    APPLICABILITY,
    DATASET,
    FOCUS_VERSION,
    QUANTITY_PLACES,
    Charge,
    ExportParty,
    WholesaleCard,
    correction_charges,
    export_rows,
    pseudonym,
    statement_id,
    usage_charges,
)
from pipeline.domain.money import round_money
from pipeline.domain.period import Period
from pipeline.domain.reference import Partner
from pipeline.exports.files import MANIFEST, read_manifest, sha256_file, write_export

ROUNDING = (
    f"PricingQuantity and ConsumedQuantity: the exact value rounded half away from zero to "
    f"{QUANTITY_PLACES} decimal places; every cost: the exact product of its unit price and "
    "PricingQuantity (no further rounding); a correction's quantities: the rounded current "
    "value minus the rounded value delivered so far; totals.billed_cost_rounded: the sum "
    "rounded half up to the currency's minor unit"
)
PSEUDONYMS = (
    "SubAccountId: HMAC-SHA256 of (partner, consumer) under our key, truncated to 96 bits; "
    "stable per partner, not linkable across partners"
)


class Bucket(Protocol):
    url: str

    def put_file(self, key: str, path: Path, sha256: str, content_type: str) -> bool:
        """Upload unless the object holds these bytes already; True when uploaded."""
        ...


@dataclass
class Pushed:
    url: str
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


State = Literal["written", "unchanged", "delivered", "failed"]


@dataclass
class PartnerExport:
    """What a build or a delivery did for one partner."""

    partner_id: str
    period: str
    directory: Path
    state: State
    manifest: dict[str, Any] | None = None
    error: str = ""
    delivery: Delivery | None = None
    newly_delivered: bool = False
    pushed: Pushed | None = None

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"]) if self.manifest else 0

    def line(self) -> str:
        """One line saying what happened, for the CLI and the demo."""
        if self.state == "failed":
            return f"{self.partner_id}: FAILED {self.error}"
        m = self.manifest or {}
        totals = m.get("totals", {})
        what = {
            "written": "written",
            "unchanged": "unchanged (rebuilt byte for byte)",
            "delivered": "delivered" if self.newly_delivered else "already delivered, left as is",
        }[self.state]
        text = (
            f"{self.partner_id}: {what}: {m.get('rows', 0)} rows ({m.get('correction_rows', 0)} "
            f"corrections), {totals.get('pricing_quantity', '0')} GPU-hours, billed "
            f"{totals.get('billed_cost_rounded', '0')} {m.get('billing_currency', '')}, run "
            f"{m.get('run_id', '-')} -> {self.directory}"
        )
        if self.pushed is not None:
            text += (
                f"; pushed to {self.pushed.url}: {len(self.pushed.uploaded)} uploaded, "
                f"{len(self.pushed.unchanged)} already there"
            )
        return text


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Exporter:
    def __init__(
        self,
        config: Config,
        cards: dict[str, WholesaleCard],
        store: Store,
        ledger: ExportLedger,
        out_root: Path,
        pseudonym_key: bytes,
        clock: Callable[[], datetime],
        *,
        grace: timedelta,
        lookback: timedelta,
    ) -> None:
        self.config = config
        self.cards = cards
        self.store = store
        self.ledger = ledger
        self.out_root = out_root
        self._key = pseudonym_key
        self.clock = clock
        self.grace = grace
        self.lookback = lookback

    # -- where ------------------------------------------------------------------------------
    def partners(self, partner_id: str | None = None) -> list[Partner]:
        ref = self.config.reference.partners
        if partner_id is None:
            return [ref[p] for p in sorted(ref)]
        if partner_id not in ref:
            raise ExportError(ExportErrorCode.NOT_FOUND, f"no partner {partner_id!r}")
        return [ref[partner_id]]

    def directory(self, period: str, partner_id: str) -> Path:
        return self.out_root / period / "exports" / partner_id

    def consumer(self, partner_id: str, tenant_id: str) -> str:
        if not self._key:
            raise RuntimeError("this exporter was built without a pseudonym key (read only)")
        return pseudonym(self._key, partner_id, tenant_id)

    def consumers(self, partner_id: str) -> dict[str, str]:
        """Finance's map back: the partner's pseudonym of every tenant -> tenant id."""
        self.partners(partner_id)
        return {self.consumer(partner_id, t): t for t in sorted(self.config.reference.tenants)}

    # -- composing ---------------------------------------------------------------------------
    def charges(self, period: Period, partner: Partner) -> list[Charge]:
        """The period's usage on the partner's capacity, then corrections for hours of its
        delivered earlier exports (within the lookback: older samples are refused at ingest
        anyway)."""
        catalog = self.config.reference.catalog
        cells = self.store.partner_usage(partner.id, partner.regions, period.start, period.end)
        out = usage_charges(cells, catalog)
        horizon = period.start - self.lookback
        for _, earlier in sorted(self.ledger.deliveries(partner.id)):
            p = Period.parse(earlier)
            if p.start >= period.start or p.end <= horizon:
                continue
            now = self.store.partner_usage(partner.id, partner.regions, p.start, p.end)
            done = self.ledger.delivered_usage(partner.id, p.start, p.end)
            out += correction_charges(now, done, catalog)
        return out

    def _header(
        self, period: Period, partner: Partner, card: WholesaleCard, rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        corrections = [r for r in rows if r["ChargeClass"] == "Correction"]
        with localcontext() as ctx:
            ctx.prec = 80
            quantity = sum((r["PricingQuantity"] for r in rows), Decimal(0))
            billed = sum((r["BilledCost"] for r in rows), Decimal(0))
        return {
            "focus_version": FOCUS_VERSION,
            "dataset": DATASET,
            "partner": {"id": partner.id, "name": partner.name},
            "period": str(period),
            "billing_period": {"start": _iso(period.start), "end": _iso(period.end)},
            "statement_id": statement_id(partner.id, period),
            "billing_currency": card.currency,
            "rows": len(rows),
            "usage_rows": len(rows) - len(corrections),
            "correction_rows": len(corrections),
            "corrected_periods": sorted(
                {r["ChargePeriodStart"].strftime("%Y-%m") for r in corrections}
            ),
            "totals": {
                "pricing_quantity": str(quantity),
                "pricing_unit": "GPU-Hours",
                "billed_cost": str(billed),
                "billed_cost_rounded": str(round_money(billed, card.currency)),
            },
            "rounding": ROUNDING,
            "pseudonyms": PSEUDONYMS,
            "applicability_criteria": list(APPLICABILITY),
        }

    def _write(self, period: Period, partner: Partner) -> tuple[PartnerExport, list[Charge]]:
        card = self.cards[partner.id]
        charges = self.charges(period, partner)
        party = ExportParty(partner.id, partner.name, card)
        rows = export_rows(
            charges,
            party,
            period,
            self.config.reference.catalog,
            lambda tenant: self.consumer(partner.id, tenant),
        )
        written = write_export(
            self.directory(str(period), partner.id),
            partner.id,
            str(period),
            rows,
            self._header(period, partner, card, rows),
            self.clock,
        )
        state: State = "written" if written.changed else "unchanged"
        return PartnerExport(partner.id, str(period), written.directory, state, written.manifest), (
            charges
        )

    # -- build -------------------------------------------------------------------------------
    def build(self, period: Period, partner_id: str | None = None) -> list[PartnerExport]:
        """Write every partner's export of the period that is not delivered yet. A partner
        whose rows cannot be priced fails alone (``exports.no_wholesale_price``)."""
        out = []
        for partner in self.partners(partner_id):
            delivered = self.ledger.delivery(partner.id, str(period))
            directory = self.directory(str(period), partner.id)
            if delivered is not None:
                out.append(
                    PartnerExport(
                        partner.id,
                        str(period),
                        directory,
                        "delivered",
                        read_manifest(directory),
                        delivery=delivered,
                    )
                )
                continue
            try:
                out.append(self._write(period, partner)[0])
            except ExportError as exc:
                out.append(
                    PartnerExport(partner.id, str(period), directory, "failed", error=str(exc))
                )
        return out

    # -- deliver -----------------------------------------------------------------------------
    def deliver(
        self,
        period: Period,
        partner_id: str | None = None,
        bucket: Callable[[str], Bucket] | None = None,
    ) -> list[PartnerExport]:
        """Deliver the period's exports: build + record what is not delivered yet, then push
        to the partners that have a bucket (``bucket(url)`` opens one; None: no pushing)."""
        now = self.clock()
        if now < period.end + self.grace:
            raise ExportError(
                ExportErrorCode.PERIOD_NOT_CLOSED,
                f"period {period} can be delivered from {_iso(period.end + self.grace)} "
                f"(its end plus the late grace of {self.grace}); build it to look at it before",
            )
        out = []
        for partner in self.partners(partner_id):
            try:
                res = self._deliver_one(period, partner, now)
            except ExportError as exc:
                directory = self.directory(str(period), partner.id)
                res = PartnerExport(partner.id, str(period), directory, "failed", error=str(exc))
            out.append(res)
            card = self.cards[partner.id]
            if res.state != "failed" and card.bucket and bucket is not None:
                try:
                    res.pushed = self._push(res, bucket(card.bucket))
                except ExportError as exc:
                    res.state, res.error = "failed", str(exc)
        return out

    def _deliver_one(self, period: Period, partner: Partner, now: datetime) -> PartnerExport:
        directory = self.directory(str(period), partner.id)
        done = self.ledger.delivery(partner.id, str(period))
        if done is not None:
            manifest = directory / MANIFEST
            if not manifest.exists() or sha256_file(manifest) != done.manifest_sha256:
                raise ExportError(
                    ExportErrorCode.DELIVERED_EXPORT_CHANGED,
                    f"{manifest} is not the manifest delivered on {_iso(done.delivered_at)} "
                    f"(run {done.run_id}); a delivered export is never rewritten: restore it",
                )
            return PartnerExport(
                partner.id,
                str(period),
                directory,
                "delivered",
                read_manifest(directory),
                delivery=done,
            )
        res, charges = self._write(period, partner)
        assert res.manifest is not None
        delivery = Delivery(
            partner.id,
            str(period),
            str(res.manifest["run_id"]),
            sha256_file(directory / MANIFEST),
            res.rows,
            now,
        )
        self.ledger.record(delivery, ((c.key, c.usage_us) for c in charges))
        res.state, res.delivery, res.newly_delivered = "delivered", delivery, True
        return res

    def _push(self, res: PartnerExport, target: Bucket) -> Pushed:
        manifest = res.manifest
        assert manifest is not None
        pushed = Pushed(target.url)
        # data files first, the manifest last: a reader that sees the manifest finds its files
        entries = [(f["name"], f["sha256"]) for f in manifest["files"]]
        entries.append((MANIFEST, sha256_file(res.directory / MANIFEST)))
        for name, sha in entries:
            path = res.directory / name
            if sha256_file(path) != sha:
                raise ExportError(
                    ExportErrorCode.DELIVERED_EXPORT_CHANGED,
                    f"{path} does not match its manifest (SHA-256); not pushed",
                )
            key = f"{res.period}/{name}"
            if target.put_file(key, path, sha, content_type(name)):
                pushed.uploaded.append(key)
            else:
                pushed.unchanged.append(key)
        return pushed

    # -- reading (the API) -------------------------------------------------------------------
    def listing(
        self, partner_id: str, delivered_only: bool
    ) -> list[tuple[dict[str, Any], Delivery | None]]:
        """The partner's exports on disk, newest period first, with their delivery; with
        ``delivered_only`` only those delivered (whose manifest is the one delivered)."""
        self.partners(partner_id)
        deliveries = self.ledger.deliveries(partner_id)
        out = []
        for manifest_path in sorted(
            self.out_root.glob(f"*/exports/{partner_id}/{MANIFEST}"), reverse=True
        ):
            doc = read_manifest(manifest_path.parent)
            if doc is None:
                continue
            delivered = deliveries.get((partner_id, str(doc.get("period"))))
            if delivered is not None and delivered.manifest_sha256 != sha256_file(manifest_path):
                delivered = None  # the files on disk are not what was delivered
            if delivered_only and delivered is None:
                continue
            out.append((doc, delivered))
        return out

    def file(self, partner_id: str, period: str, name: str, delivered_only: bool) -> Path:
        """A file of an export (a data file its manifest lists, or the manifest), or
        ``exports.not_found``."""
        for doc, _ in self.listing(partner_id, delivered_only):
            if doc.get("period") != period:
                continue
            names = {f["name"] for f in doc.get("files", [])} | {MANIFEST}
            if name in names:
                return self.directory(period, partner_id) / name
        raise ExportError(
            ExportErrorCode.NOT_FOUND, f"no file {name!r} in an export of {period} for this partner"
        )


def content_type(name: str) -> str:
    if name.endswith(".csv"):
        return "text/csv; charset=utf-8"
    if name.endswith(".json"):
        return "application/json"
    return "application/vnd.apache.parquet"
