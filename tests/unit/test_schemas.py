import json

import pytest
from pydantic import ValidationError

from pipeline.domain.events import UsageEvent
from pipeline.schemas import SCHEMA_DIR, check_schemas


def test_checked_in_schemas_equal_what_the_models_generate() -> None:
    assert check_schemas() == [], "run: gpumeter schemas write"


def test_schema_names_every_required_field() -> None:
    doc = json.loads((SCHEMA_DIR / "gpu.usage.v1.json").read_text())
    assert set(doc["required"]) >= {"specversion", "id", "source", "type", "data"}
    data = doc["$defs"]["GpuUsageData"]
    assert set(data["required"]) >= {"tenant_id", "gpu_model", "start", "end", "provider"}


def test_models_refuse_what_the_schema_refuses() -> None:
    with pytest.raises(ValidationError):
        UsageEvent.model_validate(
            {"specversion": "1.0", "id": "x", "source": "s", "type": "gpu.usage.v1", "data": {}}
        )
