"""Partner exports pulled through the API: a partner token reads its own delivered exports
only, another partner's id answers 404 like an unknown one, finance reads everything."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipeline.adapters.clickhouse import migrate
from pipeline.adapters.ledger import Ledger
from pipeline.adapters.store import Store
from pipeline.api import create_app
from pipeline.bootstrap import exporter
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse]
FINANCE = "fin_exports_5Tq8"
NORTHWIND = "nw_exports_2Lp9"
FJORD = "fj_exports_7Kd3"
TEAM = "team_exports_1Xz4"
NOW = datetime(2026, 12, 3, tzinfo=UTC)


@dataclass
class Api:
    client: TestClient

    def get(self, path: str, token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(path, headers=headers)


@pytest.fixture
def api(settings: Settings, config: Config) -> Iterator[Api]:
    ex = server_executor(settings)
    migrate(ex)
    rows = []
    for period, hour in (("2026-10", 5), ("2026-11", 9)):
        h = int(Period.parse(period).start.timestamp()) + 3600 * hour
        for partner in config.reference.partners.values():
            key = HourlyKey(
                "acme-ai", h, "p", "H100", "", partner.regions[0], partner.id, f"{partner.id}-c1"
            )
            rows.append(hourly_row(key, Agg(7_200_000_000, 0, 1, 1), NOW))
    ex.insert("usage_hourly", HOURLY_COLUMNS, rows)
    exports = exporter(settings, config, Store(ex), clock=lambda: NOW)
    exports.deliver(Period.parse("2026-10"))  # delivered: partners see it
    exports.build(Period.parse("2026-11"))  # a draft: finance only
    s = settings.model_copy(
        update={
            "api_tokens": SecretStr(
                f"{FINANCE}=finance, {NORTHWIND}=partner:northwind-cloud, "
                f"{FJORD}=partner:fjord-compute, {TEAM}=team:research/vision"
            )
        }
    )
    with TestClient(create_app(s, config, Ledger(ex), clock=lambda: NOW)) as client:
        yield Api(client)
    ex.close()
    drop_database(settings)


def test_a_partner_lists_and_downloads_its_delivered_exports(api: Api, settings: Settings) -> None:
    r = api.get("/partners/northwind-cloud/exports", NORTHWIND)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["partner_id"] == "northwind-cloud"
    (oct_,) = body["exports"]  # November is not delivered: not listed
    assert (oct_["period"], oct_["status"], oct_["focus_version"]) == (
        "2026-10",
        "delivered",
        "1.2",
    )
    assert oct_["delivered_at"].startswith("2026-12-03")
    assert [f["format"] for f in oct_["files"]] == ["csv", "parquet", "manifest"]
    for f in oct_["files"]:
        got = api.get(f["url"], NORTHWIND)
        assert got.status_code == 200, f
        assert len(got.content) == f["bytes"]
        assert hashlib.sha256(got.content).hexdigest() == f["sha256"]
    manifest = api.get(oct_["files"][2]["url"], NORTHWIND).json()
    assert {f["sha256"] for f in manifest["files"]} == {f["sha256"] for f in oct_["files"][:2]}
    csv_text = api.get(oct_["files"][0]["url"], NORTHWIND).text
    assert "Northwind Cloud" in csv_text and "acme" not in csv_text
    assert "Fjord" not in csv_text and "eu-north-1" not in csv_text


def test_another_partners_id_answers_404_like_an_unknown_one(api: Api) -> None:
    other = api.get("/partners/fjord-compute/exports", NORTHWIND)
    unknown = api.get("/partners/no-such-partner/exports", NORTHWIND)
    assert other.status_code == unknown.status_code == 404
    assert other.json()["code"] == unknown.json()["code"] == "exports.not_found"
    assert other.json()["message"].replace("fjord-compute", "X") == unknown.json()[
        "message"
    ].replace("no-such-partner", "X")
    listed = api.get("/partners/fjord-compute/exports", FJORD).json()["exports"]
    url = listed[0]["files"][0]["url"]
    assert api.get(url, FJORD).status_code == 200
    assert api.get(url, NORTHWIND).status_code == 404  # the file of another partner, too
    # a partner cannot reach a draft, nor anything its manifest does not list
    draft = "/partners/northwind-cloud/exports/2026-11/northwind-cloud-2026-11-focus-1.2.csv"
    assert api.get(draft, NORTHWIND).json()["code"] == "exports.not_found"
    for name in ("wholesale.yaml", ".manifest.json.tmp", "%2E%2E"):
        r = api.get(f"/partners/northwind-cloud/exports/2026-10/{name}", NORTHWIND)
        assert r.status_code == 404


def test_finance_reads_every_partner_with_drafts(api: Api) -> None:
    for partner in ("northwind-cloud", "fjord-compute", "sakura-gpu", "own-dc"):
        r = api.get(f"/partners/{partner}/exports", FINANCE)
        assert r.status_code == 200
        assert [(e["period"], e["status"]) for e in r.json()["exports"]] == [
            ("2026-11", "draft"),
            ("2026-10", "delivered"),
        ]
    draft = "/partners/northwind-cloud/exports/2026-11/northwind-cloud-2026-11-focus-1.2.csv"
    assert api.get(draft, FINANCE).status_code == 200
    assert api.get("/partners/no-such-partner/exports", FINANCE).status_code == 404


def test_other_callers_are_refused(api: Api) -> None:
    assert api.get("/partners/northwind-cloud/exports", None).status_code == 401
    assert api.get("/partners/northwind-cloud/exports", "wrong").status_code == 401
    team = api.get("/partners/northwind-cloud/exports", TEAM)
    assert (team.status_code, team.json()["code"]) == (403, "billing.forbidden")
    # partner tokens stay refused on the finance routes
    assert api.get("/invoices?period=2026-10", NORTHWIND).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/partners/northwind-cloud%00/exports",
        "/partners/north%0Awind/exports",
        "/partners/%E2%80%AEdc-nwo/exports",  # right-to-left override
        "/partners/" + "n" * 5000 + "/exports",
        "/partners/northwind-cloud' OR '1'='1/exports",
        "/partners/northwind-cloud/exports/2026-10%00/manifest.json",
        "/partners/northwind-cloud/exports/..%2F..%2Fconfig/wholesale.yaml",
        "/partners/northwind-cloud/exports/2026-10/..%5Cmanifest.json",
        "/partners/northwind-cloud/exports/2026-10/manifest.json%00.csv",
        "/partners/northwind-cloud/exports/2026-10/" + "x" * 5000,
        "/partners/northwind-cloud/exports/%2A/manifest.json",
    ],
)
def test_hostile_paths_find_nothing(api: Api, path: str) -> None:
    for token in (NORTHWIND, FINANCE):
        r = api.get(path, token)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert b"Northwind" not in r.content and b"GPUmeter" not in r.content
