"""``gpumeter exports verify --period P``: every partner's export of the period, re-read.

Per partner: the manifest's files exist with their byte size and SHA-256; the CSV and the
Parquet file hold the manifest's row count, its columns and the same values; every row is on
the partner's capacity (its regions, the partner as provider); every usage row's quantity is
its exact GPU-hours rounded as stated and every cost its unit price times that quantity; a
delivered export's manifest is the one delivered; and the exported GPU-hours of the period
(the export's usage rows plus correction rows for the period's hours in later exports)
equal the usage metered on the partner's capacity, exactly (fractions of integer
GPU-micro-seconds; printed rounded half up to 6 decimals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction

from pipeline.domain.focus import COLUMN_NAMES, exact_gpu_hours, gpu_hours, round_places
from pipeline.domain.period import Period
from pipeline.domain.reference import Partner
from pipeline.exports.builder import Exporter
from pipeline.exports.files import (
    MANIFEST,
    csv_text,
    read_csv_rows,
    read_manifest,
    read_parquet_rows,
    sha256_file,
)

SHOWN_PLACES = 6


@dataclass
class PartnerCheck:
    partner_id: str
    rows: int = 0
    correction_rows: int = 0
    exported: Fraction = Fraction(0)  # GPU-hours of the period's usage, wherever exported
    metered: Fraction = Fraction(0)
    delivered: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        head = (
            f"{self.partner_id}: rows={self.rows} corrections={self.correction_rows} "
            f"gpu_hours={hours_text(self.exported)} metered={hours_text(self.metered)} "
            f"{'delivered' if self.delivered else 'not delivered'}"
        )
        return f"{head} ok" if self.ok else f"{head} MISMATCH: " + "; ".join(self.problems)


@dataclass
class Verification:
    period: str
    partners: list[PartnerCheck]

    @property
    def mismatches(self) -> int:
        return sum(not p.ok for p in self.partners)

    @property
    def clean(self) -> bool:
        return self.mismatches == 0

    def summary_line(self) -> str:
        rows = sum(p.rows for p in self.partners)
        hours = sum((p.exported for p in self.partners), Fraction(0))
        return (
            f"exports: period={self.period} partners={len(self.partners)} rows={rows} "
            f"gpu_hours={hours_text(hours)} mismatches={self.mismatches}"
        )


def hours_text(value: Fraction) -> str:
    return format(round_places(value, SHOWN_PLACES), "f")


def verify(exporter: Exporter, period: Period, partner_id: str | None = None) -> Verification:
    return Verification(
        str(period), [_check(exporter, period, p) for p in exporter.partners(partner_id)]
    )


def _check(exporter: Exporter, period: Period, partner: Partner) -> PartnerCheck:
    check = PartnerCheck(partner.id)
    problems = check.problems
    catalog = exporter.config.reference.catalog
    cells = exporter.store.partner_usage(partner.id, partner.regions, period.start, period.end)
    check.metered = sum(
        (gpu_hours(u, catalog.fraction(k.gpu_model, k.mig_profile)) for k, u in cells.items()),
        Fraction(0),
    )
    directory = exporter.directory(str(period), partner.id)
    manifest = read_manifest(directory)
    if manifest is None:
        problems.append(f"no export in {directory} (gpumeter exports build --period {period})")
        return check
    delivery = exporter.ledger.delivery(partner.id, str(period))
    check.delivered = delivery is not None
    if delivery is not None and sha256_file(directory / MANIFEST) != delivery.manifest_sha256:
        problems.append("manifest.json is not the one delivered")
    check.rows = int(manifest.get("rows", -1))
    if [c["name"] for c in manifest.get("columns", [])] != list(COLUMN_NAMES):
        problems.append("the manifest's columns are not the FOCUS columns of this version")
    tables: dict[str, list[dict[str, str]]] = {}
    for entry in manifest.get("files", []):
        path = directory / entry["name"]
        if not path.exists():
            problems.append(f"{entry['name']}: missing")
            continue
        if path.stat().st_size != entry["bytes"]:
            problems.append(
                f"{entry['name']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}"
            )
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: SHA-256 differs from the manifest")
        if entry["format"] == "csv":
            tables["csv"] = read_csv_rows(path)
        elif entry["format"] == "parquet":
            tables["parquet"] = [
                {k: csv_text(v) for k, v in row.items()} for row in read_parquet_rows(path)
            ]
        if len(tables.get(entry["format"], [])) != entry["rows"]:
            problems.append(f"{entry['name']}: row count differs from the manifest")
    if set(tables) != {"csv", "parquet"}:
        problems.append("the manifest does not list one CSV and one Parquet file")
        return check
    if tables["csv"] != tables["parquet"]:
        problems.append("the CSV and the Parquet file hold different values")
    rows = tables["parquet"]
    check.correction_rows = sum(r["ChargeClass"] == "Correction" for r in rows)
    _rows_consistent(rows, partner, problems)
    exported = sum(
        (exact_gpu_hours(r) for r in rows if r["ChargeClass"] != "Correction"), Fraction(0)
    )
    exported += _later_corrections(exporter, period, partner)
    check.exported = exported
    if exported != check.metered:
        problems.append(
            f"exported {hours_text(exported)} GPU-hours, metered {hours_text(check.metered)} "
            f"(difference {hours_text(check.metered - exported)}: usage changed after the export "
            "was built; rebuild it, or if delivered, build the next period's export)"
        )
    return check


def _rows_consistent(rows: list[dict[str, str]], partner: Partner, problems: list[str]) -> None:
    foreign = sorted({r["RegionId"] for r in rows} - set(partner.regions))
    if foreign:
        problems.append(f"rows in regions that are not the partner's: {foreign}")
    if any(r["ProviderName"] != partner.name for r in rows):
        problems.append("rows whose ProviderName is not the partner")
    bad = 0
    with localcontext() as ctx:
        ctx.prec = 80
        for r in rows:
            q = Decimal(r["PricingQuantity"])
            if r["ChargeClass"] != "Correction" and q != round_places(exact_gpu_hours(r)):
                bad += 1
            elif (
                Decimal(r["ListCost"]) != Decimal(r["ListUnitPrice"]) * q
                or Decimal(r["ContractedCost"]) != Decimal(r["ContractedUnitPrice"]) * q
            ):
                bad += 1
            elif not r["BilledCost"] == r["EffectiveCost"] == r["ContractedCost"]:
                bad += 1
    if bad:
        problems.append(f"{bad} rows whose quantity or cost does not follow the stated rounding")


def _later_corrections(exporter: Exporter, period: Period, partner: Partner) -> Fraction:
    """GPU-hours that correction rows of later exports (on disk) state for the period."""
    total = Fraction(0)
    prefix = str(period)
    for manifest_path in sorted(exporter.out_root.glob(f"*/exports/{partner.id}/{MANIFEST}")):
        later = manifest_path.parent.parent.parent.name
        if later <= prefix:
            continue
        doc = read_manifest(manifest_path.parent)
        if doc is None or prefix not in doc.get("corrected_periods", []):
            continue
        parquet = next((f for f in doc["files"] if f["format"] == "parquet"), None)
        if parquet is None:
            continue
        for row in read_parquet_rows(manifest_path.parent / parquet["name"]):
            start = row["ChargePeriodStart"]
            if row["ChargeClass"] == "Correction" and period.start <= start < period.end:
                total += exact_gpu_hours(row)
    return total
