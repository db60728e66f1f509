import json

import jsonschema
import pytest
from pydantic import ValidationError

from pipeline.domain.events import UsageEvent
from pipeline.schemas import SCHEMA_DIR, check_schemas


def test_checked_in_schemas_equal_what_the_models_generate() -> None:
    assert check_schemas() == [], "run: gpumeter schemas write"


def test_schema_names_every_required_field() -> None:
    doc = json.loads((SCHEMA_DIR / "gpu.usage.v1.rev2.json").read_text())
    assert set(doc["required"]) >= {"specversion", "id", "source", "type", "data"}
    data = doc["$defs"]["GpuUsageData"]
    assert set(data["required"]) >= {"tenant_id", "gpu_model", "start", "end", "provider"}


def test_models_refuse_what_the_schema_refuses() -> None:
    with pytest.raises(ValidationError):
        UsageEvent.model_validate(
            {"specversion": "1.0", "id": "x", "source": "s", "type": "gpu.usage.v1", "data": {}}
        )


def _validator(name: str) -> jsonschema.Draft202012Validator:
    from referencing import Registry, Resource

    docs = {
        f: Resource.from_contents(json.loads((SCHEMA_DIR / f).read_text()))
        for f in (name, name.replace(".json", ".batch.json"))
    }
    registry = Registry().with_resources(
        [(doc.contents["$id"], doc) for doc in docs.values()]  # type: ignore[index]
    )
    return jsonschema.Draft202012Validator(docs[name].contents, registry=registry)


def _old_event(**data: object) -> dict[str, object]:
    d = {
        "tenant_id": "acme-ai",
        "project_id": "a|b",
        "job_id": "1234_[1-3].batch",
        "cluster": "northwind-us-east-1-c1",
        "region": "us-east-1",
        "provider": "northwind-cloud",
        "node": "us-east-1-n0001",
        "gpu_uuid": "GPU-5c89852c-d268-c3f3-1b07-005d5ae455ee",
        "gpu_model": "H100",
        "mig_profile": "3g.40gb",
        "gpu_count": 2,
        "start": "2026-10-01T05:50:00Z",
        "end": "2026-10-01T06:05:00Z",
        "sm_activity_pct": 41.5,
        **data,
    }
    return {
        "specversion": "1.0",
        "id": "é|1",
        "source": "//c/n1",
        "type": "gpu.usage.v1",
        "data": d,
    }


def test_old_events_keep_validating_against_both_revisions() -> None:
    """Revision 2 narrows only the strings: an ordinary revision-1 event is valid in both."""
    old, new = _validator("gpu.usage.v1.json"), _validator("gpu.usage.v1.rev2.json")
    for ev in (
        _old_event(),
        _old_event(project_id="Ünïcødé 项目"),
        _old_event(mig_profile=None),
        _old_event(mig_profile=""),
    ):
        old.validate(ev)
        new.validate(ev)


@pytest.mark.parametrize(
    "data",
    [
        {"project_id": "a\u0000b"},
        {"node": "node 1"},
        {"cluster": "c|1"},
        {"mig_profile": "3g 40gb"},
    ],
)
def test_revision_2_refuses_what_the_decoder_refuses(data: dict[str, object]) -> None:
    ev = _old_event(**data)
    assert not _validator("gpu.usage.v1.rev2.json").is_valid(ev)
    with pytest.raises(ValidationError):
        UsageEvent.model_validate(ev)
