"""Push delivery to a real S3-compatible server (the local stack's SeaweedFS): data files
first, the manifest last, read back byte for byte; delivering again uploads nothing; an
object that no longer matches is uploaded again."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.adapters.clickhouse import DriverExecutor, migrate
from pipeline.adapters.s3 import S3Bucket
from pipeline.adapters.store import Store
from pipeline.bootstrap import bucket, exporter
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse, pytest.mark.s3]
OCT = Period.parse("2026-10")
NOW = datetime(2026, 11, 4, tzinfo=UTC)


class Recording:
    """The real bucket, recording the order of the uploads."""

    def __init__(self, inner: S3Bucket, log: list[str]) -> None:
        self.inner, self.log, self.url = inner, log, inner.url

    def put_file(self, key: str, path: Path, sha256: str, content_type: str) -> bool:
        uploaded = self.inner.put_file(key, path, sha256, content_type)
        if uploaded:
            self.log.append(f"{self.url}/{key}")
        return uploaded


@pytest.fixture
def db(settings: Settings) -> Iterator[DriverExecutor]:
    ex = server_executor(settings)
    migrate(ex)
    yield ex
    ex.close()
    drop_database(settings)


def test_deliver_pushes_each_export_to_its_partners_bucket(
    db: DriverExecutor, settings: Settings, tmp_config: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    wholesale = tmp_config / "wholesale.yaml"
    text = wholesale.read_text()
    wholesale.write_text(
        text.replace(
            "northwind-gpumeter-usage/focus", f"northwind-gpumeter-usage/{prefix}"
        ).replace("fjord-usage-inbox/gpumeter", f"fjord-usage-inbox/{prefix}")
    )
    config = Config.load(tmp_config)
    rows = []
    for partner in config.reference.partners.values():
        key = HourlyKey(
            "acme-ai",
            int(OCT.start.timestamp()),
            "p",
            "H100",
            "",
            partner.regions[0],
            partner.id,
            "c1",
        )
        rows.append(hourly_row(key, Agg(5_400_000_000, 0, 1, 1), NOW))
    db.insert("usage_hourly", HOURLY_COLUMNS, rows)
    s = settings.model_copy(update={"config_dir": tmp_config})
    ex = exporter(s, config, Store(db), clock=lambda: NOW)
    log: list[str] = []

    def opener(url: str) -> Any:
        target = bucket(s, url)
        target.create()  # the local stack plays the partner, who owns the bucket
        return Recording(target, log)

    results = {r.partner_id: r for r in ex.deliver(OCT, bucket=opener)}
    assert {r.state for r in results.values()} == {"delivered"}
    assert results["sakura-gpu"].pushed is None and results["own-dc"].pushed is None  # pull only
    for pid, url in (
        ("northwind-cloud", f"s3://northwind-gpumeter-usage/{prefix}"),
        ("fjord-compute", f"s3://fjord-usage-inbox/{prefix}"),
    ):
        res = results[pid]
        assert res.pushed is not None and res.manifest is not None
        names = [f["name"] for f in res.manifest["files"]]
        assert res.pushed.uploaded == [f"2026-10/{n}" for n in [*names, "manifest.json"]]
        assert [e for e in log if e.startswith(url)] == [
            f"{url}/2026-10/{n}" for n in [*names, "manifest.json"]
        ]
        remote = bucket(s, url)
        assert remote.names() == sorted(f"2026-10/{n}" for n in [*names, "manifest.json"])
        for name in [*names, "manifest.json"]:
            local = (res.directory / name).read_bytes()
            assert remote.get(f"2026-10/{name}") == local  # read back byte for byte
            head = remote.head(f"2026-10/{name}")
            assert (
                head is not None and head["Metadata"]["sha256"] == hashlib.sha256(local).hexdigest()
            )

    log.clear()
    again = {r.partner_id: r for r in ex.deliver(OCT, bucket=opener)}
    assert log == []  # re-delivery of unchanged files is a no-op
    assert again["northwind-cloud"].pushed is not None
    assert len(again["northwind-cloud"].pushed.unchanged) == 3

    # an object that was damaged in the bucket is uploaded again, and only that one
    nw = bucket(s, f"s3://northwind-gpumeter-usage/{prefix}")
    csv_name = next(
        f["name"] for f in results["northwind-cloud"].manifest["files"] if f["format"] == "csv"
    )  # type: ignore[index]
    nw._client.put_object(Bucket=nw.bucket, Key=nw.key(f"2026-10/{csv_name}"), Body=b"damaged")
    ex.deliver(OCT, "northwind-cloud", bucket=opener)
    assert log == [f"s3://northwind-gpumeter-usage/{prefix}/2026-10/{csv_name}"]
    assert (
        nw.get(f"2026-10/{csv_name}")
        == (results["northwind-cloud"].directory / csv_name).read_bytes()
    )


def test_a_missing_bucket_fails_the_delivery_of_its_partner_only(
    db: DriverExecutor, settings: Settings, tmp_config: Path
) -> None:
    wholesale = tmp_config / "wholesale.yaml"
    missing = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    wholesale.write_text(wholesale.read_text().replace("fjord-usage-inbox", missing))
    config = Config.load(tmp_config)
    s = settings.model_copy(update={"config_dir": tmp_config})
    ex = exporter(s, config, Store(db), clock=lambda: NOW)
    results = {r.partner_id: r for r in ex.deliver(OCT, bucket=lambda url: bucket(s, url))}
    assert results["fjord-compute"].state == "failed"
    assert "exports.delivery_failed" in results["fjord-compute"].error
    assert results["fjord-compute"].delivery is not None  # recorded: pushing again is safe
    assert {results[p].state for p in ("sakura-gpu", "own-dc")} == {"delivered"}


def test_the_demo_step_delivers_pushes_and_verifies(
    db: DriverExecutor, settings: Settings, config: Config
) -> None:
    import io

    from rich.console import Console

    from devtools.exports_demo import show_exports

    key = HourlyKey(
        "acme-ai", int(OCT.start.timestamp()), "p", "L40S", "", "us-east-1", "northwind-cloud", "c1"
    )
    db.insert("usage_hourly", HOURLY_COLUMNS, [hourly_row(key, Agg(3_600_000_000, 0, 1, 1), NOW)])
    out = io.StringIO()
    assert show_exports(settings, config, Store(db), OCT, Console(file=out, width=200))
    text = out.getvalue()
    assert "northwind-cloud: delivered: 1 rows" in text and "pushed to s3://" in text
    assert "exports: period=2026-10 partners=4 rows=1 gpu_hours=1.000000 mismatches=0" in text
