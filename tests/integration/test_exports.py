"""Partner exports on the real ClickHouse server: usage rows written by the sink's own row
builder, exports built and delivered by the exporter that ``bootstrap`` wires, files read back.

Isolation (a partner's files hold only its capacity), exact GPU-hours, pseudonyms, byte-for-
byte rebuilds, the correction flow across periods, the delivery rules, a partner without a
price failing alone, the CLI; and the FinOps Foundation's validator on an export holding
corrections.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from pipeline.adapters.clickhouse import ChdbExecutor, DriverExecutor, migrate
from pipeline.adapters.store import Store
from pipeline.bootstrap import exporter
from pipeline.config import Config
from pipeline.domain.aggregate import Agg
from pipeline.domain.errors import ExportError, ExportErrorCode
from pipeline.domain.focus import ExportKey, exact_gpu_hours, gpu_hours
from pipeline.domain.period import Period
from pipeline.domain.usage import HourlyKey
from pipeline.exports.builder import Exporter
from pipeline.exports.files import read_csv_rows, read_parquet_rows
from pipeline.exports.verify import verify
from pipeline.settings import Settings
from pipeline.worker.sink import HOURLY_COLUMNS, hourly_row
from tests.services import drop_database, server_executor

pytestmark = [pytest.mark.clickhouse]
OCT, NOV, DEC = (Period.parse(p) for p in ("2026-10", "2026-11", "2026-12"))
WRITTEN = datetime(2026, 12, 20, tzinfo=UTC)
HOUR_US = 3_600_000_000


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(settings: Settings) -> Iterator[DriverExecutor]:
    ex = server_executor(settings)
    migrate(ex)
    yield ex
    ex.close()
    drop_database(settings)


def write(ex: DriverExecutor | ChdbExecutor, usage: dict[HourlyKey, int], version: int = 1) -> None:
    ex.insert(
        "usage_hourly",
        HOURLY_COLUMNS,
        [hourly_row(k, Agg(u, u // 2, 1, version), WRITTEN) for k, u in sorted(usage.items())],
    )


def hourly(
    config: Config, period: Period, n: int, seed: int, models: tuple[str, ...] = ("H100", "A100")
) -> dict[HourlyKey, int]:
    """``n`` random hourly keys per partner (every region, MIG or not, several projects)."""
    rng = random.Random(seed)
    tenants = sorted(config.reference.tenants)
    hours = int((period.end - period.start).total_seconds()) // 3600
    out: dict[HourlyKey, int] = {}
    for partner in config.reference.partners.values():
        for i in range(n):
            model = rng.choice(models)
            mig = rng.choice(["", "", *sorted(config.reference.catalog.gpus[model].mig_profiles)])
            region = partner.regions[i % len(partner.regions)]
            key = HourlyKey(
                rng.choice(tenants),
                int(period.start.timestamp()) + 3600 * rng.randrange(hours),
                rng.choice(["p1", "p2", "Ünïcode 'quoted' project"]),
                model,
                mig,
                region,
                partner.id,
                f"{partner.id}-{region}-c{1 + i % 2}",
            )
            out[key] = rng.randrange(1, 8 * HOUR_US)
    return out


def expected_hours(config: Config, usage: dict[HourlyKey, int], partner: str) -> Fraction:
    catalog = config.reference.catalog
    return sum(
        (
            gpu_hours(u, catalog.fraction(k.gpu_model, k.mig_profile))
            for k, u in usage.items()
            if k.provider == partner
        ),
        Fraction(0),
    )


def make(settings: Settings, config: Config, ex: DriverExecutor, clock: Clock) -> Exporter:
    return exporter(settings, config, Store(ex), clock=clock)


def files_of(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_partner_usage_sums_projects_on_both_engines(engine: DriverExecutor | ChdbExecutor) -> None:
    h = int(OCT.start.timestamp())
    nw = "northwind-cloud"
    write(
        engine,
        {
            HourlyKey("acme-ai", h, "p1", "H100", "", "us-east-1", nw, "c1"): 10,
            HourlyKey("acme-ai", h, "p'2", "H100", "", "us-east-1", nw, "c1"): 5,
            HourlyKey("acme-ai", h, "p1", "H100", "3g.40gb", "us-west-2", nw, "c2"): 7,
            HourlyKey("acme-ai", h, "p1", "H100", "", "eu-north-1", "fjord-compute", "c9"): 100,
            HourlyKey("acme-ai", h - 3600, "p1", "H100", "", "us-east-1", nw, "c1"): 1000,
        },
    )
    got = Store(engine).partner_usage(nw, ["us-east-1", "us-west-2"], OCT.start, OCT.end)
    assert got == {
        ExportKey(h, "us-east-1", "c1", "H100", "", "acme-ai"): 15,
        ExportKey(h, "us-west-2", "c2", "H100", "3g.40gb", "acme-ai"): 7,
    }
    assert Store(engine).partner_usage(nw, ["us-west-2"], OCT.start, OCT.end) == {
        ExportKey(h, "us-west-2", "c2", "H100", "3g.40gb", "acme-ai"): 7
    }


def test_each_partner_gets_exactly_the_usage_on_its_capacity_under_pseudonyms(
    db: DriverExecutor, settings: Settings, config: Config
) -> None:
    usage = hourly(config, OCT, 60, seed=3)
    write(db, usage)
    ex = make(settings, config, db, Clock(datetime(2026, 11, 2, tzinfo=UTC)))
    results = ex.build(OCT)
    assert [r.state for r in results] == ["written"] * 4
    seen: dict[str, set[str]] = {}
    for partner in config.reference.partners.values():
        d = ex.directory("2026-10", partner.id)
        (parquet,) = d.glob("*.parquet")
        (csv_file,) = d.glob("*.csv")
        rows = read_parquet_rows(parquet)
        assert len(rows) == len(read_csv_rows(csv_file)) > 0
        assert {r["RegionId"] for r in rows} <= set(partner.regions)  # isolation
        assert {r["ProviderName"] for r in rows} == {partner.name}
        assert sum((exact_gpu_hours(r) for r in rows), Fraction(0)) == expected_hours(
            config, usage, partner.id
        )
        tenants = {k.tenant_id for k in usage if k.provider == partner.id}
        assert {r["SubAccountId"] for r in rows} == {ex.consumer(partner.id, t) for t in tenants}
        text = csv_file.read_text() + parquet.read_bytes().decode("latin-1")
        names = [t.name for t in config.reference.tenants.values()] + ["p1", "Ünïcode"]
        assert not [n for n in [*tenants, *names] if n in text]  # no consumer, team, project
        seen[partner.id] = {r["SubAccountId"] for r in rows}
    ids = [i for s in seen.values() for i in s]
    assert len(ids) == len(set(ids))  # a consumer is a different pseudonym at every partner
    v = verify(ex, OCT)
    assert v.clean, [p.line() for p in v.partners]
    assert v.summary_line().startswith(
        f"exports: period=2026-10 partners=4 rows={sum(r.rows for r in results)} "
    )
    assert v.summary_line().endswith(" mismatches=0")


def test_rebuilding_an_undelivered_export_is_byte_identical(
    db: DriverExecutor, settings: Settings, config: Config
) -> None:
    write(db, hourly(config, OCT, 20, seed=5))
    clock = Clock(datetime(2026, 11, 2, tzinfo=UTC))
    ex = make(settings, config, db, clock)
    ex.build(OCT)
    d = ex.directory("2026-10", "northwind-cloud")
    first = files_of(d)
    clock.now += timedelta(days=1)
    assert {r.state for r in ex.build(OCT)} == {"unchanged"}
    assert files_of(d) == first  # manifest included: same run id, same generated_at
    # new usage changes the export (and its run id); it is still a draft, so it is rewritten
    write(
        db,
        {
            HourlyKey(
                "acme-ai",
                int(OCT.start.timestamp()),
                "p",
                "H100",
                "",
                "us-east-1",
                "northwind-cloud",
                "c",
            ): 9
        },
    )
    (res,) = ex.build(OCT, "northwind-cloud")
    assert res.state == "written" and files_of(d) != first
    assert res.manifest is not None and res.manifest["generated_at"] == "2026-11-03T00:00:00Z"


def test_late_usage_after_delivery_becomes_corrections_in_the_next_exports(
    db: DriverExecutor, settings: Settings, config: Config
) -> None:
    nw = config.reference.partners["northwind-cloud"]
    oct_usage = hourly(config, OCT, 30, seed=7)
    write(db, oct_usage)
    clock = Clock(datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    ex = make(settings, config, db, clock)
    with pytest.raises(ExportError) as err:  # the period's late grace has not passed
        ex.deliver(OCT)
    assert err.value.code == ExportErrorCode.PERIOD_NOT_CLOSED
    clock.now = datetime(2026, 11, 2, tzinfo=UTC)
    assert {r.state for r in ex.deliver(OCT)} == {"delivered"}
    oct_dir = ex.directory("2026-10", nw.id)
    delivered_files = files_of(oct_dir)

    # late usage for October: more on a delivered key, and a key not delivered at all
    mine = sorted(k for k in oct_usage if k.provider == nw.id)
    grown = {mine[0]: oct_usage[mine[0]] + 1_234_567_891}
    fresh = HourlyKey(
        "flint-mining",
        int(OCT.start.timestamp()) + 7200,
        "p",
        "H100",
        "2g.20gb",
        nw.regions[0],
        nw.id,
        "late-c",
    )
    write(db, {**grown, fresh: 3 * HOUR_US}, version=2)
    nov_usage = hourly(config, NOV, 10, seed=8)
    write(db, nov_usage)
    clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    (oct_again,) = ex.build(OCT, nw.id)
    assert (
        oct_again.state == "delivered" and files_of(oct_dir) == delivered_files
    )  # never rewritten

    (nov,) = ex.build(NOV, nw.id)
    assert nov.manifest is not None
    assert (nov.manifest["correction_rows"], nov.manifest["corrected_periods"]) == (2, ["2026-10"])
    rows = read_parquet_rows(next(ex.directory("2026-11", nw.id).glob("*.parquet")))
    corrections = [r for r in rows if r["ChargeClass"] == "Correction"]
    assert sorted(r["x_UsageMicroseconds"] for r in corrections) == sorted(
        [1_234_567_891, 3 * HOUR_US]
    )
    assert all(OCT.start <= r["ChargePeriodStart"] < OCT.end for r in corrections)  # original hour
    assert all(r["BillingPeriodStart"] == NOV.start for r in rows)
    assert all(
        r["SubAccountId"] == ex.consumer(nw.id, fresh.tenant_id)
        for r in corrections
        if r["x_Cluster"] == "late-c"
    )
    for period in (OCT, NOV):  # October = its delivered rows + November's corrections
        v = verify(ex, period, nw.id)
        assert v.clean, [p.line() for p in v.partners]

    # November delivered with its corrections; more late October usage goes to December only
    ex.deliver(NOV, nw.id)
    write(db, {mine[0]: grown[mine[0]] + 10}, version=3)
    (dec,) = ex.build(DEC, nw.id)
    dec_rows = read_parquet_rows(next(ex.directory("2026-12", nw.id).glob("*.parquet")))
    assert [(r["ChargeClass"], r["x_UsageMicroseconds"]) for r in dec_rows] == [("Correction", 10)]
    assert verify(ex, OCT, nw.id).clean and verify(ex, NOV, nw.id).clean


def test_a_delivered_export_is_never_rewritten(
    db: DriverExecutor, settings: Settings, config: Config
) -> None:
    write(db, hourly(config, OCT, 5, seed=9))
    ex = make(settings, config, db, Clock(datetime(2026, 11, 5, tzinfo=UTC)))
    (res,) = ex.deliver(OCT, "fjord-compute")
    assert res.newly_delivered and res.delivery is not None
    (again,) = ex.deliver(OCT, "fjord-compute")  # idempotent
    assert again.state == "delivered" and not again.newly_delivered
    assert again.delivery == res.delivery
    manifest = ex.directory("2026-10", "fjord-compute") / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"rows"', '"rows" ', 1))
    (tampered,) = ex.deliver(OCT, "fjord-compute")
    assert tampered.state == "failed" and "exports.delivered_export_changed" in tampered.error
    v = verify(ex, OCT, "fjord-compute")
    assert v.mismatches == 1 and "not the one delivered" in v.partners[0].line()


def test_usage_without_a_wholesale_price_fails_only_its_partner(
    db: DriverExecutor, settings: Settings, tmp_config: Path
) -> None:
    path = tmp_config / "wholesale.yaml"
    path.write_text(
        path.read_text().replace(
            '      - {gpu_model: B200, list_price: "642", contracted_price: "588"}\n', ""
        )
    )
    config = Config.load(tmp_config)
    usage = hourly(config, OCT, 4, seed=11, models=("B200",))
    write(db, usage)
    ex = make(
        settings.model_copy(update={"config_dir": tmp_config}),
        config,
        db,
        Clock(datetime(2026, 11, 2, tzinfo=UTC)),
    )
    results = {r.partner_id: r for r in ex.build(OCT)}
    assert results["sakura-gpu"].state == "failed"
    assert (
        "exports.no_wholesale_price" in results["sakura-gpu"].error
        and "B200" in results["sakura-gpu"].error
    )
    assert {r.state for p, r in results.items() if p != "sakura-gpu"} == {"written"}


def test_the_cli_builds_and_verifies(
    db: DriverExecutor,
    settings: Settings,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    write(db, hourly(config, OCT, 8, seed=13))
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    monkeypatch.setenv("GPUMETER_OUT_DIR", str(settings.out_dir))
    assert main(["exports", "build", "--period", "2026-10"]) == 0
    out = capsys.readouterr().out
    assert out.count(": written: ") == 4 and str(settings.out_dir) in out
    assert main(["exports", "verify", "--period", "2026-10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("exports: period=2026-10 partners=4 rows=") and lines[-1].endswith(
        "mismatches=0"
    )
    assert main(["exports", "consumers", "--partner", "sakura-gpu", "--json"]) == 0
    assert "acme-ai" in capsys.readouterr().out
    assert main(["exports", "build", "--period", "2026-10", "--partner", "nobody"]) == 2
    assert "exports.not_found" in capsys.readouterr().err
    monkeypatch.delenv("GPUMETER_EXPORT_PSEUDONYM_KEY")
    assert main(["exports", "build", "--period", "2026-10"]) == 2
    assert "GPUMETER_EXPORT_PSEUDONYM_KEY" in capsys.readouterr().err


@pytest.mark.focus
@pytest.mark.slow
def test_an_export_with_corrections_passes_the_focus_validator(
    db: DriverExecutor,
    settings: Settings,
    config: Config,
    focus_validator: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main
    from pipeline.exports.validator import run_validator

    nw = "northwind-cloud"
    usage = hourly(config, OCT, 12, seed=17)
    write(db, usage)
    clock = Clock(datetime(2026, 11, 2, tzinfo=UTC))
    ex = make(settings, config, db, clock)
    ex.deliver(OCT, nw)
    late = {k: u + HOUR_US for k, u in sorted(usage.items()) if k.provider == nw}
    write(db, late, version=2)
    write(db, hourly(config, NOV, 12, seed=18))
    (nov,) = ex.build(NOV, nw)
    assert nov.manifest is not None and nov.manifest["correction_rows"] == len(late)
    (parquet,) = ex.directory("2026-11", nw).glob("*.parquet")
    report = run_validator(focus_validator, parquet)
    assert report.ok, report.line()
    assert report.total > 500 and report.passed > 250, report.summary
    assert set(report.excused) == {"InvoiceId-C-004-C"}  # the OR branch; every other rule counts
    # the CLI runs it the same way, here on the CSV file
    monkeypatch.setenv("GPUMETER_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    monkeypatch.setenv("GPUMETER_OUT_DIR", str(settings.out_dir))
    monkeypatch.setenv("GPUMETER_FOCUS_VALIDATOR_VENV", str(focus_validator))
    argv = ["exports", "validate", "--period", "2026-11", "--partner", nw, "--format", "csv"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Total: " in out and "| Fail: 1 |" in out and "; ok; excused: InvoiceId-C-004-C" in out
    assert out.strip().endswith("focus-validator: period=2026-11 files=1 failed=0")


def test_hostile_names_come_back_byte_for_byte_and_projects_never_appear(
    db: DriverExecutor, settings: Settings, config: Config
) -> None:
    h = int(OCT.start.timestamp())
    clusters = ["a:b/c@d+e=f.g_h-1", "Z" * 128, "c1"]
    projects = ['x",\r\n,y', "\u202eevil", "'; DROP TABLE usage_hourly; --", "日本語", ""]
    usage = {
        HourlyKey("acme-ai", h, p, "H100", "", "us-east-1", "northwind-cloud", c): 1000 + i
        for i, (p, c) in enumerate((p, c) for p in projects for c in clusters)
    }
    write(db, usage)
    ex = make(settings, config, db, Clock(datetime(2026, 11, 2, tzinfo=UTC)))
    (res,) = ex.build(OCT, "northwind-cloud")
    d = ex.directory("2026-10", "northwind-cloud")
    rows = read_parquet_rows(next(d.glob("*.parquet")))
    assert sorted(r["x_Cluster"] for r in rows) == sorted(clusters)  # projects summed up
    for r in rows:
        want = sum(u for k, u in usage.items() if k.cluster == r["x_Cluster"])
        assert r["x_UsageMicroseconds"] == want
        assert r["ResourceId"] == f"northwind-cloud/us-east-1/{r['x_Cluster']}"
    text = next(d.glob("*.csv")).read_text(encoding="utf-8")
    assert all(p not in text for p in projects if p)
    assert [r["x_Cluster"] for r in read_csv_rows(next(d.glob("*.csv")))] == [
        r["x_Cluster"] for r in rows
    ]
    assert verify(ex, OCT, "northwind-cloud").clean  # CSV and Parquet agree value for value
