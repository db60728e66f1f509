"""JSON Schemas in ``schemas/``, generated from the pydantic models and checked in.

Each revision of the ``gpu.usage.v1`` contract keeps its own files; a new revision is new
files, and the old ones are frozen (never regenerated) so that whoever validates against
them keeps doing so:

* revision 1 (``gpu.usage.v1.json``): the first contract;
* revision 2 (``gpu.usage.v1.rev2.json``): the same fields with each string's character set
  and length stated (see :mod:`pipeline.domain.events`). Every event it accepts, revision 1
  accepts too; an event revision 1 accepted with a control character in a string, or a
  space or separator in an infrastructure name (cluster, region, node, ...), is now refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.domain.events import UsageEvent
from pipeline.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schemas"
BASE = "https://gpumeter.example/schemas/"
REVISION = 2
CURRENT = f"gpu.usage.v1.rev{REVISION}"
# older revisions: checked in, frozen
FROZEN = ("gpu.usage.v1.json", "gpu.usage.v1.batch.json")


def generated() -> dict[Path, str]:
    event: dict[str, Any] = UsageEvent.model_json_schema()
    event["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    event["$id"] = f"{BASE}{CURRENT}.json"
    event["title"] = f"gpu.usage.v1 CloudEvent (structured mode), revision {REVISION}"
    batch = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE}{CURRENT}.batch.json",
        "title": "gpu.usage.v1 CloudEvents batch (one Kafka message, one event per GPU), "
        f"revision {REVISION}",
        "type": "array",
        "minItems": 1,
        "items": {"$ref": f"{CURRENT}.json"},
    }
    return {
        SCHEMA_DIR / f"{CURRENT}.json": json.dumps(event, indent=2, sort_keys=True) + "\n",
        SCHEMA_DIR / f"{CURRENT}.batch.json": json.dumps(batch, indent=2, sort_keys=True) + "\n",
    }


def write_schemas() -> list[Path]:
    out = []
    for path, text in generated().items():
        path.write_text(text)
        out.append(path)
    return out


def check_schemas() -> list[Path]:
    """Paths whose checked-in text differs from what the models generate, or frozen
    revisions that are missing."""
    stale = [p for p, text in generated().items() if not p.exists() or p.read_text() != text]
    return stale + [SCHEMA_DIR / f for f in FROZEN if not (SCHEMA_DIR / f).exists()]
