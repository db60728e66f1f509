"""JSON Schemas in ``schemas/``, generated from the pydantic models and checked in.

Each version keeps its own file; a new version is a new file, and old ones keep validating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.domain.events import UsageEvent
from pipeline.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schemas"


def generated() -> dict[Path, str]:
    event: dict[str, Any] = UsageEvent.model_json_schema()
    event["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    event["$id"] = "https://gpumeter.example/schemas/gpu.usage.v1.json"
    event["title"] = "gpu.usage.v1 CloudEvent (structured mode)"
    batch = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gpumeter.example/schemas/gpu.usage.v1.batch.json",
        "title": "gpu.usage.v1 CloudEvents batch (one Kafka message, one event per GPU)",
        "type": "array",
        "minItems": 1,
        "items": {"$ref": "gpu.usage.v1.json"},
    }
    return {
        SCHEMA_DIR / "gpu.usage.v1.json": json.dumps(event, indent=2, sort_keys=True) + "\n",
        SCHEMA_DIR / "gpu.usage.v1.batch.json": json.dumps(batch, indent=2, sort_keys=True) + "\n",
    }


def write_schemas() -> list[Path]:
    out = []
    for path, text in generated().items():
        path.write_text(text)
        out.append(path)
    return out


def check_schemas() -> list[Path]:
    """Paths whose checked-in text differs from what the models generate."""
    return [p for p, text in generated().items() if not p.exists() or p.read_text() != text]
