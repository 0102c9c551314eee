"""Retention of whole report rows (QA MEDIUM, privacy transparency): a report row (device, period, time
received, link, alarm codes) used to be kept for good after retention removed its values. Now a row
whose values are gone goes once it is older than its kind's longest field retention, in batches, with
the replay protection, report ids and provenance chain intact. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import pytest
from conftest import KEYS
from helpers import WINDOW_T0, report_frame

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.retention_clock import LargeRemovalHold
from gateway.storage import ReportQueries, ReportRecord, ReportStore, row_retention
from gateway.storage.provenance import export_chain, verify_export

DAY = 86400
T0 = 1_700_000_100 - (1_700_000_100 % 3600)
# the bin's fields as the service passes them (every field of every kind): rows live 730 days (fill)
POLICY_DAYS = {(k, f): int(spec["retention_days"]) for k, kspec in load_policy()["kinds"].items()
               for f, spec in kspec["fields"].items()}


def rec(device: str, seq: int, w: int, *, m: dict[str, int] | None = None, a: list[str] | None = None,
        received: float | None = None) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="alarm" if a else "win", w=w,
                        l=60 if a else 900, m={"temp": 12} if m is None else m, e={}, a=a or [], fw="1.0",
                        received_at=w + 65.0 if received is None else received, link="serial:/dev/x",
                        digest="%064x" % (seq + 1000 * len(device)))


def acked(store: ReportStore, records: list[ReportRecord]) -> None:
    """Store ``records`` and their devices' ACK floors (every seq up to the highest acknowledged), as the
    ingest saves them with a batch: only rows at or below the floor are removed."""
    floors: dict[str, int] = {}
    for r in records:
        floors[r.device] = max(floors.get(r.device, 0), r.seq)
    store.insert_batch(records, floors)


def rows(db: Path, table: str = "reports") -> list[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return [(str(d), int(s)) for d, s in conn.execute("SELECT device, seq FROM %s ORDER BY device, seq" % table)]
    finally:
        conn.close()


def test_row_retention_is_the_longest_field_retention_of_the_kind() -> None:
    assert row_retention.row_retention_days(POLICY_DAYS) == {"bin": 730, "streetlight": 1825}


def test_rows_past_the_report_retention_go_with_their_alarms_and_nothing_else(tmp_path: Path) -> None:
    """Fails before: every row stayed (with its alarm codes, reception time and link) for good."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old, recent = T0 - 800 * DAY, T0 - 100 * DAY
    acked(store, [
        rec("b1", 1, old),                                  # past 730 days, emptied by the field pass: goes
        rec("b1", 2, old + 120, m={}, a=["tip"]),           # an alarm past 730 days: goes, with its alarms row
        rec("b1", 3, old + 900, m={"fill": 40}, received=recent),  # received late: its value goes, its row stays
        rec("b2", 1, recent, m={}, a=["fire"]),             # recent alarm: stays
        rec("b2", 2, T0 - 10 * DAY),                        # recent, with its value: stays
        rec("b3", 9, old + 1800),                           # old, but the newest row (highest id): stays
    ])
    chain_before = rows(db, "chain")
    now = float(T0)
    assert store.apply_retention(POLICY_DAYS, now) == 3  # temp of b1/1 and b3/9, fill of b1/3
    assert rows(db) == [("b1", 3), ("b2", 1), ("b2", 2), ("b3", 9)]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT device, seq, code FROM alarms").fetchall() == [("b2", 1, "fire")]
    conn.close()
    assert rows(db, "chain") == chain_before  # the provenance chain is untouched
    q = ReportQueries(db)
    try:
        assert {r.seq: r.m for r in q.reports(device="b1")} == {3: {}}
        assert {r.seq: r.m for r in q.reports(device="b2")} == {1: {}, 2: {"temp": 12}}  # values not touched
    finally:
        q.close()
    assert store.apply_retention(POLICY_DAYS, now) == 0 and rows(db) == [("b1", 3), ("b2", 1), ("b2", 2), ("b3", 9)]
    store.close()


def test_a_row_still_holding_a_value_is_never_removed_by_a_partial_retention(tmp_path: Path) -> None:
    """A retention map naming only some fields sets a short report retention; rows holding another
    field's value stay, as the field pass leaves that value."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", 1, T0 - 100 * DAY, m={"temp": 1, "fill": 3}), rec("b1", 2, T0)])
    assert store.apply_retention({("bin", "temp"): 90}, float(T0)) == 1
    assert rows(db) == [("b1", 1), ("b1", 2)]
    store.close()


def test_a_removed_report_is_never_stored_again_also_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    acked(store, [rec("b1", s, old + 900 * s) for s in range(1, 5)] + [rec("b2", 1, T0)])
    store.apply_retention(POLICY_DAYS, float(T0))
    assert rows(db) == [("b2", 1)]  # every row of b1 gone
    assert store.has("b1", 4) and store.has("b1", 1) and not store.has("b1", 5)
    assert store.max_seqs() == {"b1": 4, "b2": 1}
    res = store.insert_batch([rec("b1", 2, old + 1800), rec("b1", 5, T0 + 900)])
    assert res.inserted == [("b1", 5)] and res.duplicates == [("b1", 2)]
    store.close()
    store = ReportStore(db, gateway_id="gw")  # restart: the replay window comes back from the store
    assert store.max_seqs() == {"b1": 5, "b2": 1}
    assert store.has("b1", 3)
    assert store.insert_batch([rec("b1", 3, old + 2700)]).duplicates == [("b1", 3)]
    assert rows(db) == [("b1", 5), ("b2", 1)]
    store.close()


def test_rows_go_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_retention, "ROW_BATCH", 7)
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    acked(store, [rec("b1", s, old + 900 * s) for s in range(1, 31)] + [rec("b2", 1, T0)])
    before = store.counter("data_version")
    store.apply_retention(POLICY_DAYS, float(T0))
    assert rows(db) == [("b2", 1)] and store.max_seqs()["b1"] == 30
    assert store.counter("data_version") - before == 1 + 5  # the field pass, and 5 row batches (7+7+7+7+2)
    store.close()


def test_the_exported_chain_still_verifies_after_rows_are_removed(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    acked(store, [rec("b1", s, old + 900 * s) for s in range(1, 6)])
    acked(store, [rec("b2", 1, T0)])
    store.apply_retention(POLICY_DAYS, float(T0))
    store.insert_batch([rec("b2", 2, T0 + 900)])  # the chain goes on from its head
    store.close()
    assert rows(db) == [("b2", 1), ("b2", 2)]
    out = io.StringIO()
    assert export_chain(db, out) == 7
    assert verify_export(out.getvalue().splitlines()) == 7


def test_a_large_row_removal_holds_the_pass_unless_the_retention_changed(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    acked(store, [rec("b1", s, old + 900 * s, m={}) for s in range(1, 61)] + [rec("b2", 1, T0, m={})])
    hold = LargeRemovalHold()
    assert store.apply_retention(POLICY_DAYS, float(T0), hold) == 0
    assert len(hold.held) == 1 and "60 of 61 bin report row(s)" in hold.held[0]
    assert len(rows(db)) == 61  # held: nothing removed
    exempt = LargeRemovalHold(exempt=frozenset({("bin", "fill")}))
    store.apply_retention(POLICY_DAYS, float(T0), exempt)
    assert exempt.held == [] and rows(db) == [("b2", 1)]
    store.close()


async def test_ingest_refuses_a_replayed_frame_whose_row_was_removed_also_after_a_restart(tmp_path: Path) -> None:
    """End to end through the real ingest and verifier: frames 1..3 stored, all but the newest row removed
    by retention, the same frames sent again (before and after a restart): none is stored again."""
    reg = Registry(tmp_path / "reg")
    reg.add("bin-1", kind="bin", zone="z", lat="1", lon="2", key=KEYS["bin-1"])
    db = tmp_path / "r.sqlite"
    link = Link(name="serial:t", kind="serial", send=lambda frame: asyncio.sleep(0))
    frames = {s: report_frame("bin-1", s, KEYS["bin-1"]) for s in (1, 2, 3)}
    now = [float(WINDOW_T0 + 4 * 900)]

    def make() -> IngestService:
        return IngestService(store=ReportStore(db, gateway_id="gw"), verifier=Verifier(reg, load_policy()),
                             metrics=GatewayMetrics("gw"), batch_ms=5, clock=lambda: now[0])

    async def feed(ingest: IngestService, seqs: tuple[int, ...]) -> None:
        for s in seqs:
            ingest.feed(frames[s], link)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if ingest.backlog == 0:
                break

    ingest = make()
    await ingest.start()
    await feed(ingest, (1, 2))
    await feed(ingest, (3,))  # the ACK floor of 1, 2 is saved with this batch
    assert rows(db) == [("bin-1", 1), ("bin-1", 2), ("bin-1", 3)]
    now[0] += 731 * DAY
    await ingest.run_in_store(ingest.store.apply_retention, POLICY_DAYS, now[0])
    assert rows(db) == [("bin-1", 3)]  # the newest row stays (report ids)
    await feed(ingest, (1, 2))
    assert rows(db) == [("bin-1", 3)]
    await ingest.stop()
    ingest.close()
    ingest.store.close()

    ingest = make()
    await ingest.start()
    await feed(ingest, (1, 2, 3))
    assert rows(db) == [("bin-1", 3)]
    await ingest.stop()
    ingest.close()
    ingest.store.close()


def test_a_version_3_store_is_migrated_to_4_with_its_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """retired_seqs has its own schema version: a version 3 gateway (which does not read the table and
    would store a replayed frame of a removed report) refuses a store that may hold it."""
    from gateway.storage.schema import SCHEMA_VERSION

    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", 1, T0), rec("b1", 2, T0 + 900)])
    store.close()
    conn = sqlite3.connect(db)  # as a version 3 gateway left it
    conn.execute("DROP TABLE retired_seqs")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with caplog.at_level("WARNING", logger="gateway.storage"):
        store = ReportStore(db, gateway_id="gw")
    assert SCHEMA_VERSION == 4
    assert any("upgraded from schema version 3 to 4" in r.getMessage() for r in caplog.records)
    assert store.max_seqs() == {"b1": 2}
    store.close()
    assert rows(db) == [("b1", 1), ("b1", 2)] and rows(db, "retired_seqs") == []
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    conn.close()
