"""Field retention in bounded jobs (gateway/storage/field_retention.py): the values of a pass are counted and
removed a range of rows per job on the store's thread, each removal its own transaction moving the data
version; the hold is decided on the whole count before anything goes; a pass cut off part-way leaves a
consistent store that the next pass completes; ingest is not held for the whole field part; the last batch of a
device that fell silent goes once its retention is over. Real SQLite files and the real gateway service."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env
from helpers import until

from gateway.config import load_config
from gateway.resources import load_policy
from gateway.retention_clock import LargeRemovalHold
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore, field_retention
from gateway.storage.queries import DATA_VERSION_COUNTER

DAY = 86400
T0 = 1_700_000_100 - (1_700_000_100 % 3600)
POLICY_DAYS = {(k, f): int(spec["retention_days"]) for k, kspec in load_policy()["kinds"].items()
               for f, spec in kspec["fields"].items()}


def rec(device: str, seq: int, w: int, *, m: dict[str, int] | None = None, e: dict[str, int] | None = None,
        kind: str = "bin", received: float | None = None) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind=kind, zone="north", type="win", w=w, l=900,
                        m={"temp": 5, "fill": 30} if m is None else m, e={} if e is None else e, a=[], fw="1.0",
                        received_at=w + 965.0 if received is None else received, link="serial:/dev/x",
                        digest="%064x" % (seq + 1000 * len(device)))


def read(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def version(db: Path) -> int:
    got = read(db, "SELECT value FROM counters WHERE name = '%s'" % DATA_VERSION_COUNTER)
    return int(got[0][0]) if got else 0


def temps(db: Path) -> int:
    return int(read(db, "SELECT COUNT(*) FROM reports WHERE json_type(m, '$.temp') IS NOT NULL")[0][0])


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(field_retention, "FIELD_BATCH", 5)
    monkeypatch.setattr(field_retention, "COUNT_BATCH", 10)


def old_store(db: Path) -> ReportStore:
    """40 bin reports 100 days old (temp past its 90 days, fill kept), 5 recent ones, and 3 window duplicates
    of an old streetlight release (their e spend past mot's 365 days)."""
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 100 * DAY + 900 * s) for s in range(1, 41)]
                       + [rec("b2", s, T0 - 3600 + 60 * s) for s in range(1, 6)], {"b1": 40, "b2": 5})
    old = T0 - 400 * DAY
    store.insert_batch([rec("s1", s, old, kind="streetlight", m={"mot": 4}, e={"mot": 500}) for s in range(1, 5)],
                       {"s1": 1})
    return store


def test_values_go_a_batch_a_job_each_moving_the_data_version_with_it(tmp_path: Path, small_batches: None) -> None:
    """Fails before: the whole field part was one transaction (no begin_retention / retention_batch)."""
    db = tmp_path / "r.sqlite"
    store = old_store(db)
    rows = store.begin_retention(POLICY_DAYS, float(T0))
    assert rows.values is not None
    seen: list[tuple[str, int, int]] = []  # (stage the job ran in, temp values left, data version) after each job
    while True:
        stage = rows.values.stage
        more = store.retention_batch(rows)
        seen.append((stage, temps(db), version(db)))  # a reader on its own connection, between jobs
        if not more:
            break
    values = [(left, v) for stage, left, v in seen if stage == "values"]
    # 40 old rows (ids 1..40) in jobs of 5: each job removes its 5 values and moves the version with them
    assert [left for left, _v in values[:8]] == [45 - 5 * i for i in range(1, 9)], seen
    assert [v for _left, v in values[:8]] == list(range(1, 9)), seen
    assert temps(db) == 5 and rows.readings == 40 + 1  # 40 temp and 1 mot value (3 releases are duplicates); fill kept
    assert read(db, "SELECT COUNT(*) FROM reports WHERE json_type(m, '$.fill') IS NOT NULL")[0][0] == 45
    assert [e for (e,) in read(db, "SELECT e FROM window_duplicates")] == ["{}"] * 3  # their spend went too
    # the count ran in jobs too: 46 rows in 5 ranges, then the job that decides
    assert sum(stage == "count" for stage, _l, _v in seen) == 5 + 1
    store.close()


def test_a_field_hold_is_decided_on_the_whole_count_before_anything_goes(tmp_path: Path, small_batches: None) -> None:
    db = tmp_path / "r.sqlite"
    store = old_store(db)
    rows = store.begin_retention(POLICY_DAYS, float(T0), hold := LargeRemovalHold(min_values=10))
    assert rows.values is not None
    while store.retention_batch(rows):
        assert temps(db) == 45 and version(db) == 0  # nothing removed while it counts
    assert rows.values.stage == "held" and rows.readings == 0
    assert len(hold.held) == 1 and "40 of 45 bin.temp value(s)" in hold.held[0]
    assert store.remove_values(POLICY_DAYS, float(T0), LargeRemovalHold(min_values=10)) is None
    assert temps(db) == 45
    store.close()


def test_a_pass_cut_off_part_way_leaves_a_consistent_store_the_next_pass_completes(
        tmp_path: Path, small_batches: None) -> None:
    db = tmp_path / "r.sqlite"
    store = old_store(db)
    rows = store.begin_retention(POLICY_DAYS, float(T0))
    assert rows.values is not None
    while rows.values.stage != "values" or rows.readings < 15:
        store.retention_batch(rows)
    store.close()  # the gateway stopped (or was killed: every job before committed whole)
    assert temps(db) == 30 and version(db) == 3
    store = ReportStore(db, gateway_id="gw")
    assert store.apply_retention(POLICY_DAYS, float(T0)) == 25 + 1
    assert temps(db) == 5 and version(db) > 3
    store.close()


def test_the_last_batch_of_a_device_that_fell_silent_goes_once_its_retention_is_over(tmp_path: Path) -> None:
    """d1's floor is saved with the batch after the one it acknowledges: its last batch (seqs 4-6) was
    acknowledged, but no batch came after it to save its floor (the gateway was killed, or stays up with every
    device silent). Fails before: seqs 4-6 stayed for good. d2's seq 5 is missing (the device may hold it): 6
    stays, and 5 is stored when it comes."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    old = T0 - 800 * DAY
    store.insert_batch([rec(d, s, old + 900 * s, m={}) for d in ("d1", "d2") for s in range(1, 4)])
    store.insert_batch([rec("d1", s, old + 900 * s, m={}) for s in range(4, 7)]
                       + [rec("d2", s, old + 900 * s, m={}) for s in (4, 6)], {"d1": 3, "d2": 3})
    store.insert_batch([rec("zz", 1, T0 - 3600)])  # the newest row is kept whatever its age
    store.apply_retention(POLICY_DAYS, float(T0))
    assert read(db, "SELECT device, seq FROM reports ORDER BY device, seq") == [("d2", 6), ("zz", 1)]
    assert store.has("d1", 6) and not store.has("d1", 7) and not store.has("d2", 5)
    assert store.insert_batch([rec("d2", 5, old + 4500, m={}, received=float(T0))]).inserted == [("d2", 5)]
    store.close()
    store = ReportStore(db, gateway_id="gw")
    # zz had no floor saved: its seq 1 is stored, so its floor starts at 1 (its row is the newest: kept)
    assert store.max_seqs()["d1"] == 6 and store.ack_floors() == {"d1": 6, "d2": 4, "zz": 1}
    store.close()


async def test_ingest_is_not_held_for_a_whole_multi_batch_field_part(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's own retention loop over a real store whose values go in 6 jobs: an insert submitted to the
    store's thread while the second value job runs commits before the field part ends. Fails before: the whole
    field part was one job, and the insert waited for all of it."""
    monkeypatch.setattr(field_retention, "FIELD_BATCH", 5)
    monkeypatch.setattr(field_retention, "COUNT_BATCH", 10)  # the old values are in the first 3 ranges
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    now = time.time()
    gw = Gateway(load_config(cfg))
    old = int(now) - 100 * DAY
    gw.store.insert_batch([rec("bin-1", s, old + 900 * s, m={"temp": 5}, received=now - 120) for s in range(1, 29)]
                          + [rec("bin-2", s, int(now) - 3600 + s, m={"fill": 3}, received=now - 60)
                             for s in range(1, 40)], {"bin-1": 28, "bin-2": 39})
    events: list[str] = []
    queued = threading.Event()
    loop = asyncio.get_running_loop()
    inserted: list[asyncio.Future[object]] = []
    real = field_retention.remove_values

    def insert() -> None:
        gw.store.insert_batch([rec("bin-2", 40, int(now), m={"fill": 4}, received=now)])
        events.append("insert")

    def submit() -> None:  # on the event loop, as the ingest submits its batches
        inserted.append(loop.run_in_executor(gw.ingest.executor, insert))
        queued.set()

    def batch(*args: object) -> object:  # on the store's thread
        events.append("values")
        if events.count("values") == 2:
            loop.call_soon_threadsafe(submit)
            assert queued.wait(10)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(field_retention, "remove_values", batch)
    await gw.start()
    try:
        await until(lambda: gw.metrics.value("civicedge_retention_removed_total") == 28, "the values did not go")
        await inserted[0]
        assert events.count("values") == 6, events  # 28 rows in jobs of 5
        assert events.index("insert") == 2, events  # right after the job it was submitted during
        assert temps(gw.config.storage.path) == 0
    finally:
        await gw.stop()
