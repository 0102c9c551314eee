"""Report-row retention at scale and around the ACK floor (review of 8350955): the cascade to ``alarms``
uses an index, each row batch is its own job on the store's thread (ingest is not held for the whole
row part), a row-count hold holds only the rows (field values are still removed), and no row above its
device's ACK floor is removed (its seq is never retired). Real SQLite files and the real gateway service."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import make_env
from helpers import until

from gateway.config import load_config
from gateway.resources import load_policy
from gateway.retention_clock import LargeRemovalHold
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore, row_retention

DAY = 86400
T0 = 1_700_000_100 - (1_700_000_100 % 3600)
POLICY_DAYS = {(k, f): int(spec["retention_days"]) for k, kspec in load_policy()["kinds"].items()
               for f, spec in kspec["fields"].items()}


def rec(device: str, seq: int, w: int, *, m: dict[str, int] | None = None, a: list[str] | None = None,
        received: float | None = None) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="alarm" if a else "win", w=w,
                        l=60 if a else 900, m={} if m is None else m, e={}, a=a or [], fw="1.0",
                        received_at=w + 65.0 if received is None else received, link="serial:/dev/x",
                        digest="%064x" % (seq + 1000 * len(device)))


def seqs(db: Path, device: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [int(s) for (s,) in conn.execute("SELECT seq FROM reports WHERE device = ? ORDER BY seq", (device,))]
    finally:
        conn.close()


def test_the_alarm_cascade_of_a_removed_row_uses_an_index_also_in_a_version_4_store_made_without_it(
        tmp_path: Path) -> None:
    """Fails before: ON DELETE CASCADE scanned every alarms row per removed report (16 s for 2400 rows
    beside 50k alarms)."""
    db = tmp_path / "r.sqlite"
    ReportStore(db, gateway_id="gw").close()
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX alarms_report")  # a version 4 store from before the index
    conn.commit()
    conn.close()
    ReportStore(db, gateway_id="gw").close()  # the open adds it (same schema version)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys=ON")
    plan = " | ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN DELETE FROM reports WHERE id = 1"))
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert "alarms USING COVERING INDEX alarms_report" in plan or "alarms USING INDEX alarms_report" in plan, plan
    assert "SCAN alarms" not in plan and version == ("4",)


def test_a_row_count_hold_holds_the_rows_only_the_field_values_are_removed(tmp_path: Path) -> None:
    """An upgraded store: most bin rows are past their report retention. Fails before: the row hold held the
    whole pass, and the temp values past their 90 days stayed until `retention --confirm`."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    records = [rec("b1", s, old + 900 * s) for s in range(1, 61)]                     # emptied long ago
    records += [rec("b2", s, T0 - 100 * DAY + 900 * s, m={"temp": 5}) for s in range(1, 11)]  # past 90 days
    records += [rec("b2", s, T0 - DAY + 60 * s, m={"temp": 6}) for s in range(11, 31)]        # recent
    store.insert_batch(records, {"b1": 60, "b2": 30})
    hold = LargeRemovalHold()
    assert store.apply_retention(POLICY_DAYS, float(T0), hold) == 10  # the temp values went
    assert len(hold.held) == 1 and "60 of 90 bin report row(s)" in hold.held[0]
    assert seqs(db, "b1") == list(range(1, 61))  # the rows are held
    conn = sqlite3.connect(db)
    left = conn.execute("SELECT COUNT(*) FROM reports WHERE json_type(m, '$.temp') IS NOT NULL").fetchone()[0]
    conn.close()
    assert left == 20
    store.close()


def test_a_field_hold_still_holds_the_whole_pass(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b2", s, T0 - 100 * DAY + 900 * s, m={"temp": 5}) for s in range(1, 61)],
                       {"b2": 60})
    hold = LargeRemovalHold()
    assert store.apply_retention(POLICY_DAYS, float(T0), hold) == 0
    assert len(hold.held) == 1 and "bin.temp value(s)" in hold.held[0]
    rows = store.remove_values(POLICY_DAYS, float(T0), LargeRemovalHold())
    assert rows is None
    store.close()


def test_rows_are_not_counted_when_no_hold_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count scans every row of a kind inside the write transaction: a pass without a hold skips it.
    Fails before (counted every pass)."""
    calls: list[str] = []
    real = row_retention.count_old_rows
    monkeypatch.setattr(row_retention, "count_old_rows", lambda conn, kind, *a: calls.append(kind) or real(conn, kind, *a))
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 800 * DAY + 900 * s) for s in range(1, 4)] + [rec("b2", 1, T0)],
                       {"b1": 3, "b2": 1})
    store.apply_retention(POLICY_DAYS, float(T0))
    assert calls == [] and seqs(tmp_path / "r.sqlite", "b1") == []
    store.apply_retention(POLICY_DAYS, float(T0), LargeRemovalHold())
    assert sorted(calls) == ["bin", "streetlight"]
    store.close()


def test_a_large_row_removal_warns_naming_rows_of_a_kind(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 800 * DAY + 900 * s) for s in range(1, 6)] + [rec("b2", 1, T0)],
                       {"b1": 5, "b2": 1})
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        store.apply_retention(POLICY_DAYS, float(T0), LargeRemovalHold(exempt=frozenset({("streetlight", "mot")})))
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "5 of 6 bin report row(s)" in text and "of what was stored of the rows of that kind" in text, text
    assert "that field" not in text
    store.close()


def test_no_row_above_the_ack_floor_is_removed_nor_its_seq_retired(tmp_path: Path) -> None:
    """d3: seq 5 never stored (the device still holds it: ACK floor 4), 6 and 7 past their retention.
    Fails before: 6 and 7 were removed and 7 retired, so the held seq 5 (a fire alarm) arriving later was
    answered as a duplicate and the device deleted it."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    store.insert_batch([rec("d3", 4, old - 1800), rec("d3", 6, old), rec("d3", 7, old + 900),
                        rec("d3", 8, T0 - DAY), rec("d4", 2, old), rec("zz", 1, T0 - 3600)], {"d3": 4})
    store.apply_retention(POLICY_DAYS, float(T0))
    assert seqs(db, "d3") == [6, 7, 8]  # 4 went (at the floor); 6, 7 above it stay
    assert seqs(db, "d4") == [2]        # no floor saved and seq 1 never stored (a gap): kept
    assert not store.has("d3", 5)
    assert store.insert_batch([rec("d3", 5, old + 450, a=["fire"], received=float(T0))]).inserted == [("d3", 5)]
    store.close()
    store = ReportStore(db, gateway_id="gw")
    assert store.max_seqs()["d3"] == 8 and store.has("d3", 4) and not store.has("d3", 9)
    store.close()


def test_window_duplicates_above_the_ack_floor_stay(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY

    def release(seq: int, received: float) -> ReportRecord:
        return ReportRecord("d1", seq, "bin", "north", "win", old, 900, {}, {"temp": 5}, [], "1.0", received,
                            "serial:/dev/x", "%064x" % seq)
    # seq 3 never arrived (the device may hold it): the floor stays at 2, and the release 4 above it stays
    store.insert_batch([release(1, old + 65), release(2, old + 70), release(4, old + 75), rec("zz", 1, T0)],
                       {"d1": 2})
    store.apply_retention(POLICY_DAYS, float(T0))
    conn = sqlite3.connect(db)
    left = [int(s) for (s,) in conn.execute("SELECT seq FROM window_duplicates ORDER BY seq")]
    retired = conn.execute("SELECT seq FROM retired_seqs WHERE device = 'd1'").fetchone()
    conn.close()
    assert seqs(db, "d1") == [] and left == [4] and retired == (2,)
    store.close()


async def test_ingest_is_not_held_for_a_whole_multi_batch_row_part(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's own retention loop over a real store with 6 row batches: an insert submitted to the
    store's thread while the second batch runs commits before the row part ends. Fails before: the whole
    pass was one job, and the insert waited for every batch.

    The rows are checked once the row part's last job returned (its transaction committed), not once the
    seventh batch began: that batch's job commits later, and a loaded machine (a -n 2 run) once read the
    store between the two and found rows 26-28 not removed yet."""
    monkeypatch.setattr(row_retention, "ROW_BATCH", 5)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    now = time.time()
    gw = Gateway(load_config(cfg))
    old = int(now) - 800 * DAY
    gw.store.insert_batch([rec("bin-1", s, old + 900 * s) for s in range(1, 29)]
                          + [rec("bin-2", s, int(now) - 3600 + s, m={"fill": 3}, received=now - 60)
                             for s in range(1, 40)], {"bin-1": 28, "bin-2": 39})
    events: list[str] = []
    queued = threading.Event()
    loop = asyncio.get_running_loop()
    inserted: list[asyncio.Future[object]] = []
    real = row_retention.remove_row_batch

    def insert() -> None:
        gw.store.insert_batch([rec("bin-2", 40, int(now), m={"fill": 4}, received=now)])
        events.append("insert")

    def submit() -> None:  # on the event loop, as the ingest submits its batches
        inserted.append(loop.run_in_executor(gw.ingest.executor, insert))
        queued.set()

    def batch(*args: object) -> object:  # on the store's thread
        events.append("batch")
        if events.count("batch") == 2:
            loop.call_soon_threadsafe(submit)
            assert queued.wait(10)
        return real(*args)  # type: ignore[arg-type]

    real_rows = gw.store.remove_rows_batch

    def rows_job(rows: row_retention.RowPass) -> bool:  # on the store's thread: one job of the row part
        more = real_rows(rows)
        if not more:
            events.append("end")  # every batch job before it committed (one store thread, in order)
        return more

    monkeypatch.setattr(row_retention, "remove_row_batch", batch)
    monkeypatch.setattr(gw.store, "remove_rows_batch", rows_job)
    await gw.start()
    try:
        await until(lambda: "end" in events and "insert" in events, "the row part did not end")
        await inserted[0]
        assert events.count("batch") == 7 and events[-1] == "end"  # 28 rows in batches of 5 (the 7th finds none)
        assert events.index("insert") < len(events) - 1 - events[::-1].index("batch"), events
        assert events.index("insert") == 2, events  # right after the batch it was submitted during
        assert seqs(gw.config.storage.path, "bin-1") == [] and len(seqs(gw.config.storage.path, "bin-2")) == 40
    finally:
        await gw.stop()
