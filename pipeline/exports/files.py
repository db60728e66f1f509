"""One partner export on disk: the rows as CSV and as Parquet, and ``manifest.json`` written
last, listing each data file's name, row count, byte size and SHA-256 with the columns, the
FOCUS version, the period, the partner, a run id and when it was generated.

Both data files are functions of the rows only (CSV: RFC 4180 with CRLF, UTF-8, decimals in
plain notation with at least one decimal place and no other trailing zeros, date/times
``YYYY-MM-DDTHH:MM:SSZ``, null = empty field; Parquet: written by pyarrow with fixed types and
options), so building the same rows again gives the same bytes. The run id is derived from
the files' hashes; a rebuild with the same files leaves the manifest as it is (its
``generated_at`` is when that content was first written), so the whole export is
byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from pipeline.domain.focus import COLUMNS, Column

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# FOCUS data type of each column kind (the manifest's column list)
FOCUS_TYPES = {
    "string": "String",
    "decimal": "Decimal",
    "datetime": "Date/Time",
    "integer": "Integer",
    "json": "JSON",
}


def data_file_names(partner_id: str, period: str) -> dict[str, str]:
    """format -> file name."""
    stem = f"{partner_id}-{period}-focus-1.2"
    return {"csv": f"{stem}.csv", "parquet": f"{stem}.parquet"}


# -- CSV ---------------------------------------------------------------------------------------
def csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):  # always with a decimal point: readers infer Decimal
        text = format(abs(value) if value == 0 else value, "f")
        if "." not in text:
            return f"{text}.0"
        text = text.rstrip("0")
        return f"{text}0" if text.endswith(".") else text
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def csv_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[Column] = COLUMNS) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.name for c in columns])
    for row in rows:
        w.writerow([csv_text(row[c.name]) for c in columns])
    return buf.getvalue().encode("utf-8")


# -- Parquet -----------------------------------------------------------------------------------
def arrow_type(column: Column) -> Any:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "json": pa.string(),
        "integer": pa.int64(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }.get(column.kind) or pa.decimal128(38, column.scale)


def arrow_schema(columns: Sequence[Column] = COLUMNS) -> Any:
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c), nullable=c.nullable) for c in columns])


def parquet_bytes(rows: Sequence[dict[str, Any]], columns: Sequence[Column] = COLUMNS) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data: dict[str, list[Any]] = {c.name: [] for c in columns}
    with localcontext() as ctx:
        ctx.prec = 38
        for row in rows:
            for c in columns:
                v = row[c.name]
                if c.kind == "decimal" and v is not None:
                    v = v.quantize(Decimal(1).scaleb(-c.scale))
                data[c.name].append(v)
    schema = arrow_schema(columns)
    table = pa.Table.from_pydict(data, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- files -------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _same_content(path: Path, content: bytes) -> bool:
    try:
        return path.stat().st_size == len(content) and path.read_bytes() == content
    except FileNotFoundError:
        return False


@dataclass(frozen=True, slots=True)
class Written:
    directory: Path
    manifest: dict[str, Any]
    changed: bool  # False: every file already held these bytes (nothing was written)


def manifest_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else None


def write_export(
    directory: Path,
    partner_id: str,
    period: str,
    rows: Sequence[dict[str, Any]],
    header: dict[str, Any],
    clock: Callable[[], datetime],
) -> Written:
    """Write the data files, then the manifest (``header`` + files, columns, run id,
    generated_at). Files that already hold the same bytes are not touched; an unchanged
    export keeps its manifest byte for byte."""
    directory.mkdir(parents=True, exist_ok=True)
    names = data_file_names(partner_id, period)
    contents = {"csv": csv_bytes(rows), "parquet": parquet_bytes(rows)}
    files = []
    changed = False
    for fmt in ("csv", "parquet"):
        path, content = directory / names[fmt], contents[fmt]
        if not _same_content(path, content):
            _write_atomic(path, content)
            changed = True
        files.append(
            {
                "name": names[fmt],
                "format": fmt,
                "rows": len(rows),
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    columns = [
        {
            "name": c.name,
            "type": FOCUS_TYPES[c.kind],
            "parquet_type": str(arrow_type(c)),
            "nullable": c.nullable,
            "focus": c.focus,
        }
        for c in COLUMNS
    ]
    body = {
        "manifest_version": MANIFEST_VERSION,
        **header,
        "columns": columns,
        "files": files,
    }
    run_id = hashlib.sha256(manifest_bytes(body)).hexdigest()[:16]
    existing = read_manifest(directory)
    if existing is not None and existing.get("run_id") == run_id:
        return Written(directory, existing, changed)
    doc = {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run_id,
        "generated_at": clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **header,
        "columns": columns,
        "files": files,
    }
    _write_atomic(directory / MANIFEST, manifest_bytes(doc))
    return Written(directory, doc, True)
