"""Chargeback lifecycle over whole periods with an injected clock (see
:mod:`tests.scenarios.world`): draft during the grace, closed for good after it, late usage
for a closed month carried as adjustment entries in the next month's journal."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.adapters.chargeback import ChargebackLedger
from tests.scenarios.world import NOV, NOV_FINAL, OCT, OCT_FINAL, H, World, at, result

pytestmark = [pytest.mark.chdb]

TRANSFER = {"id": "transfer", "currency": "USD", "prices": {"H100": "1.50", "A100": "0.70"}}


def internal(tenant_id: str, cost_centre: str) -> dict[str, Any]:
    return {
        "id": tenant_id,
        "name": tenant_id.title(),
        "kind": "internal",
        "currency": "USD",
        "rate_card": "transfer",
        "cost_centre": cost_centre,
    }


def journal(world: World, period: str) -> list[dict[str, str]]:
    with (world.out / period / "chargeback" / "journal.csv").open() as fh:
        return list(csv.DictReader(fh))


def debits(world: World, period: str) -> dict[str, tuple[str, str]]:
    """line key -> (usage period, debit) of a period's journal."""
    return {
        j["line_key"]: (j["usage_period"], j["debit"])
        for j in journal(world, period)
        if j["entry"] == "debit"
    }


def test_a_closed_month_is_immutable_and_late_usage_goes_to_the_next(world: World) -> None:
    world.configure([internal("team-a", "rnd/a"), internal("team-b", "rnd/b")], [TRANSFER])
    book = ChargebackLedger(world.ex)
    world.spread("team-a", at(10, 5), 10, 10 * H)  # 10 h x 1.50 = 15.00
    world.spread("team-b", at(10, 5), 2, 4 * H, gpu="A100")  # 4 h x 0.70 = 2.80

    # during the grace: a draft, recomputed when usage arrives
    r = result(world.bill(OCT, at(11, 2)), "team-a")
    assert (r.status, r.amount) == ("draft", Decimal("15.00"))
    world.usage("team-a", at(10, 31, 23), 2 * H)  # +2 h = +3.00, still in the grace
    r = result(world.bill(OCT, at(11, 3)), "team-a")
    assert (r.status, r.amount) == ("draft", Decimal("18.00"))
    assert debits(world, "2026-10") == {
        "H100/full": ("2026-10", "18.00"),
        "A100/full": ("2026-10", "2.80"),
    }
    assert book.closed() == set()

    # the first run after the grace closes October
    r = result(world.bill(OCT, OCT_FINAL), "team-a")
    assert (r.status, r.amount) == ("charged_back", Decimal("18.00"))
    assert book.closed() == {"2026-10"}
    folder = world.out / "2026-10" / "chargeback"
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert set(files) == {"journal.csv", "rnd__a.csv", "rnd__b.csv"}
    closed_entries = book.journal("2026-10")
    assert [(e["tenant_id"], e["line_key"], e["amount_minor"]) for e in closed_entries] == [
        ("team-a", "H100/full", 1800),
        ("team-b", "A100/full", 280),
    ]

    # late usage for the closed month: October is not rewritten, in the ledger or on disk
    world.usage("team-a", at(10, 5, 3), 4 * H, version=2)  # that row: 1 h -> 4 h, +4.50
    world.clock.advance(days=1)
    report = world.bill(OCT)
    r = result(report, "team-a")
    assert (r.status, r.amount) == ("changed_after_close", Decimal("18.00"))
    assert result(report, "team-b").status == "unchanged"
    assert book.journal("2026-10") == closed_entries
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == files

    # November's journal carries it, referencing October
    world.spread("team-a", at(11, 2), 2, 2 * H)  # 2 h = 3.00
    report = world.bill(NOV, NOV_FINAL)
    r = result(report, "team-a")
    assert (r.status, r.amount) == ("charged_back", Decimal("7.50"))
    assert debits(world, "2026-11") == {
        "H100/full": ("2026-11", "3.00"),
        "adj/2026-10/H100/full": ("2026-10", "4.50"),
    }
    (adj,) = [e for e in book.journal("2026-11") if e["kind"] == "adjustment"]
    assert (adj["period_ref"], adj["usage_us"], adj["cost_centre"]) == ("2026-10", 3 * H, "rnd/a")
    assert "after that period was charged back" in adj["description"]
    assert [j["entry"] for j in journal(world, "2026-11")] == ["debit", "credit"] * 2
    # October again: its late usage is now carried by November; still not rewritten
    world.clock.advance(days=1)
    assert result(world.bill(OCT), "team-a").status == "adjusted"
    assert book.journal("2026-10") == closed_entries
    # and a rerun of November adds nothing
    again = result(world.bill(NOV), "team-a")
    assert (again.status, again.amount) == ("unchanged", Decimal("7.50"))
    assert [e["line_key"] for e in book.journal("2026-11")] == [
        "H100/full",
        "adj/2026-10/H100/full",
    ]


def test_a_closed_months_missing_file_is_written_again_from_the_journal(world: World) -> None:
    world.configure([internal("team-a", "rnd/a")], [TRANSFER])
    world.spread("team-a", at(10, 5), 2, 2 * H)
    world.bill(OCT, OCT_FINAL)
    folder = world.out / "2026-10" / "chargeback"
    before = (folder / "journal.csv").read_bytes()
    (folder / "journal.csv").unlink()
    cc = folder / "rnd__a.csv"
    cc.write_text("edited by hand\n")
    world.clock.advance(days=1)
    world.bill(OCT)
    assert (folder / "journal.csv").read_bytes() == before  # derived from the ledger
    assert cc.read_text() == "edited by hand\n"  # an existing file is left alone


def test_a_draft_revision_drops_entries_it_no_longer_has(world: World) -> None:
    """A price change during the grace renames the line: the draft's next revision must not
    keep the old entry beside the new one."""
    world.configure([internal("team-a", "rnd/a")], [TRANSFER])
    world.spread("team-a", at(10, 20), 2, 2 * H)  # 3.00
    world.bill(OCT, at(11, 2))
    dated = {
        "id": "transfer",
        "currency": "USD",
        "prices": [
            {"gpu_model": "H100", "price": "1.50", "effective_until": "2026-10-15T00:00Z"},
            {"gpu_model": "H100", "price": "1.20", "effective_from": "2026-10-15T00:00Z"},
        ],
    }
    world.configure([internal("team-a", "rnd/a")], [dated])
    r = result(world.bill(OCT, at(11, 3)), "team-a")
    assert r.amount == Decimal("2.40")
    assert debits(world, "2026-10") == {"H100/full@from=2026-10-15T00": ("2026-10", "2.40")}
    assert [e["line_key"] for e in ChargebackLedger(world.ex).journal("2026-10")] == [
        "H100/full@from=2026-10-15T00"
    ]


def test_a_month_does_not_close_while_a_tenant_of_it_cannot_be_rated(world: World) -> None:
    world.configure([internal("team-a", "rnd/a")], [TRANSFER])
    world.spread("team-a", at(10, 5), 2, 2 * H)
    world.usage("team-a", at(10, 6), H, gpu="H200")  # no transfer price for H200
    assert result(world.bill(OCT, OCT_FINAL), "team-a").status == "failed"
    assert ChargebackLedger(world.ex).closed() == set()
    fixed = {"id": "transfer", "currency": "USD", "prices": {"H100": "1.50", "H200": "2.00"}}
    world.configure([internal("team-a", "rnd/a")], [fixed])
    world.clock.advance(hours=1)
    r = result(world.bill(OCT), "team-a")
    assert (r.status, r.amount) == ("charged_back", Decimal("5.00"))
    assert Path(world.out / "2026-10" / "chargeback" / "journal.csv").exists()
