"""A retention pass cut off part-way is finished only under a checked clock, and by no later a removal time
than that clock gives (review rev-ret2 H1, L1, L2).

Real SQLite files, the real store, the real retention clock and the real gateway service.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import make_env
from helpers import until, write_clock

from gateway.config import load_config
from gateway.retention_clock import RetentionClock
from gateway.service import Gateway
from gateway.storage import ReportStore, field_retention
from tests.gateway.test_retention_cut_pass import (  # noqa: F401 (small_batches: a fixture used by name)
    DAY, POLICY_DAYS, pending, read, rec, small_batches, temps)

pytestmark = pytest.mark.timeout(120)


def _cut_pass_under_a_clock_ahead(db: Path, now: float) -> float:
    """The last run's clock was 40 days ahead (reports were stamped by it); a pass by it (confirmed, or a later
    one of a run) is cut off after 10 removals. b1's 100 temps are 60..85 days old by the real clock ``now``
    (bin.temp: 90 days). Returns the wrong clock's removal time."""
    wrong = now + 40 * DAY
    t = int(now) - int(now) % 900
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, t - 85 * DAY + 900 * 20 * s, received=wrong - 120) for s in range(1, 101)],
                       {"b1": 100})
    rows = store.begin_retention(POLICY_DAYS, wrong, None)
    assert rows.values is not None
    while rows.values.stage != "values" or rows.readings < 10:
        store.retention_batch(rows)
    store.close()  # the operator sees the clock is wrong, stops the gateway, puts the clock right
    assert temps(db) == 90
    return wrong


async def _run_until_checked(cfg: Path) -> Gateway:
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw.metrics.value("civicedge_retention_skipped_total", {"reason": "clock_behind"}) >= 1
                    or gw.retention_clock.state() != RetentionClock(1).state(), "no retention pass")
    finally:
        await gw.stop()
    return gw


async def test_a_pass_cut_under_a_clock_ahead_is_not_finished_by_the_clock_put_right(
        tmp_path: Path, small_batches: None, caplog: pytest.LogCaptureFixture) -> None:
    """The reviewer's probe: the saved pass was finished first, by its removal time 40 days ahead, and removed
    90 of 90 values still inside their retention, while the same start's check found the clock 40 days behind
    the stored reports. Now the clock is checked first: behind, nothing is finished (the pass stays saved); once
    a report stamped by the right clock makes the check pass, the saved pass (later than the checked removal
    time) is dropped with a WARNING and a new pass decides afresh. Fails before."""
    caplog.set_level(logging.INFO)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    db = load_config(cfg).storage.path
    now = time.time()
    _cut_pass_under_a_clock_ahead(db, now)

    gw = await _run_until_checked(cfg)
    assert gw.retention_clock.reason == "clock_behind"
    assert temps(db) == 90 and pending(db) != []  # kept for a start whose clock is checked
    assert "finishing the pass cut off before" not in caplog.text

    store = ReportStore(db, gateway_id="gw")  # a report stamped by the right clock arrives
    store.insert_batch([rec("b2", 1, int(now) - int(now) % 900 - 900, received=time.time())], {"b2": 1})
    store.close()
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: pending(db) == [], "the saved pass was not dropped")
        await until(lambda: gw.retention_clock.state() != RetentionClock(1).state(), "no pass after it")
    finally:
        await gw.stop()
    assert temps(db) == 91  # every value is inside its retention by the right clock
    assert "is later than this start's checked one" in caplog.text
    ran_at = json.loads(read(db, "SELECT value FROM meta WHERE key = 'retention_clock'")[0][0])["ran_at"]
    assert ran_at <= time.time()


async def test_under_sim_clock_too(tmp_path: Path, small_batches: None) -> None:
    """The same under [sim_clock] (no elapsed-time check: the data check alone). Fails before."""
    clock_file = tmp_path / "sim-clock.json"
    now = 1_790_000_000.0
    write_clock(clock_file, now)
    cfg = make_env(tmp_path, extra='[sim_clock]\nfollow_file = "sim-clock.json"\n[retention]\ninterval_s = 3600\n')
    db = load_config(cfg).storage.path
    _cut_pass_under_a_clock_ahead(db, now)
    gw = await _run_until_checked(cfg)
    assert gw.retention_clock.reason == "clock_behind"
    assert temps(db) == 90 and pending(db) != []


async def test_a_saved_pass_is_finished_by_the_checked_removal_time_when_that_is_earlier(
        tmp_path: Path, small_batches: None) -> None:
    """A saved removal time within the clock-back tolerance after the checked one: the pass is finished, by the
    checked time (never later than the clock of this start). b1's temps 90 days old by the saved time go,
    those 90 days old only by it (within 120 s of it) stay."""
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    db = load_config(cfg).storage.path
    now = time.time()
    saved = now + 200  # within CLOCK_BACK_TOLERANCE_S (300 s) of this start's clock
    store = ReportStore(db, gateway_id="gw")
    # l = 900: a value goes once w + 900 <= removal time - 90 days; the last 5 only by the saved time
    old = int(saved) - 90 * DAY - 900
    store.insert_batch([rec("b1", s, old - 1000 + s, received=now - 60) for s in range(1, 21)]
                       + [rec("b1", 20 + s, old - 100 + 20 * s, received=now - 60) for s in range(1, 6)], {"b1": 25})
    rows = store.begin_retention(POLICY_DAYS, saved, None)
    assert rows.values is not None
    while rows.values.stage != "values" or rows.readings < 10:
        store.retention_batch(rows)
    store.close()
    assert temps(db) == 15
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: pending(db) == [], "the saved pass was not finished")
    finally:
        await gw.stop()
    assert temps(db) == 5  # the 10 left of the first 20; the 5 past retention only by the saved time stay


def test_resumed_never_raises_the_last_pass_time_above_the_checked_clock() -> None:
    """A finished pass with a removal time later than the checked clock was remembered as the last pass that ran:
    saved, it hid a later clock-ahead fault (the check measures from it). Fails before."""
    clock = RetentionClock(3600, monotonic=None)
    now = 1_790_000_000.0
    assert clock.removal_time(now, now - 60) == now
    clock.resumed(now, now + 40 * DAY, POLICY_DAYS, [])
    assert json.loads(clock.state())["ran_at"] <= now
    # the clock jumps 10 days: ahead of the last report and of the last pass by more than interval + a day
    assert clock.removal_time(now + 10 * DAY, now - 60) is None and clock.reason == "clock_ahead"


@pytest.mark.parametrize("bad", [
    '{"now": NaN, "days": {"bin.temp": 90}, "top": 1, "rows_held": []}',
    '{"now": Infinity, "days": {"bin.temp": 90}, "top": 1, "rows_held": []}',
    '{"now": 1e400, "days": {"bin.temp": 90}, "top": 1, "rows_held": []}',
    '{"now": 1e30, "days": {"bin.temp": 90}, "top": 1, "rows_held": []}',
    '{"now": -5, "days": {"bin.temp": 90}, "top": 1, "rows_held": []}',
    '{"now": 1790000000, "days": {"bin.temp": 100000000000000000000000}, "top": 1, "rows_held": []}',
    '{"now": 1790000000, "days": {"bin.temp": 90}, "top": 100000000000000000000000, "rows_held": []}',
])
def test_a_saved_pass_with_numbers_out_of_range_is_dropped_with_a_warning(
        tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture) -> None:
    """Python's json reads NaN, Infinity and 1e400: the plan (or the log line's strftime) raised, outside the
    check, at every pass, and no new pass ever ran. Fails before."""
    db = tmp_path / "r.sqlite"
    ReportStore(db, gateway_id="gw").close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (field_retention.PASS_META_KEY, bad))
    conn.commit()
    conn.close()
    store = ReportStore(db, gateway_id="gw")
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.storage"):
            assert store.resume_retention() is None
        assert "cannot be read" in caplog.text and pending(db) == []
        assert store.resume_retention() is None
    finally:
        store.close()


async def test_the_gateway_runs_new_passes_after_an_unreadable_saved_pass(tmp_path: Path) -> None:
    """The service: a NaN removal time saved is dropped and the next pass removes what is past retention."""
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    db = load_config(cfg).storage.path
    now = time.time()
    t = int(now) - int(now) % 900
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, t - 100 * DAY + 900 * s, received=now - 60) for s in range(1, 11)], {"b1": 10})
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)",
                 (field_retention.PASS_META_KEY, '{"now": NaN, "days": {"bin.temp": 90}, "top": 10, "rows_held": []}'))
    conn.commit()
    conn.close()
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: temps(db) == 0, "no pass removed the old values")
    finally:
        await gw.stop()
    assert pending(db) == []


def _floors_store(db: Path) -> None:
    """Devices whose floors move over many seqs: d0..d5 with 130 seqs from 1 (no saved floor for d0..d2),
    d6 with a gap after 70, d7 starting at 2 (keeps floor 0)."""
    t = 1_700_000_000
    store = ReportStore(db, gateway_id="gw")
    recs = [rec("d%d" % d, s, t + 900 * s, received=t + 900 * s + 60) for d in range(6) for s in range(1, 131)]
    recs += [rec("d6", s, t + 900 * s, received=t + 900 * s + 60) for s in list(range(1, 71)) + list(range(72, 90))]
    recs += [rec("d7", s, t + 900 * s, received=t + 900 * s + 60) for s in range(2, 9)]
    store.insert_batch(recs, {"d3": 5, "d4": 60, "d5": 130})
    store.close()


def test_the_floors_are_moved_in_bounded_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The floors stage was one write transaction over every device (200 devices x 35k seqs: 11.6 s while ingest
    waited). Capped per job now, continuing in the next: several jobs, the same floors. Fails before (one job)."""
    one, many = tmp_path / "one.sqlite", tmp_path / "many.sqlite"
    _floors_store(one)
    shutil.copy(one, many)
    expected = {"d%d" % d: 130 for d in range(6)} | {"d6": 70}

    def floors_pass(db: Path) -> tuple[list[dict[str, int]], dict[str, int]]:
        store = ReportStore(db, gateway_id="gw")
        rows = store.begin_retention({("bin", "temp"): 90}, 1_700_000_000.0 + 300 * 900, None)
        assert rows.values is not None
        seen = []
        while rows.values.stage == "floors":
            store.retention_batch(rows)
            seen.append(store.ack_floors())
        while store.retention_batch(rows):
            pass
        store.close()
        return seen, seen[-1]

    seen, floors = floors_pass(one)
    assert len(seen) == 1 and floors == expected
    monkeypatch.setattr(field_retention, "FLOOR_BATCH", 100)
    monkeypatch.setattr(field_retention, "FLOOR_DEVICES", 3)
    seen, floors = floors_pass(many)
    assert floors == expected
    # ~680 seqs read at most 100 a job; d0's run of 130 seqs is moved part-way by the first job, then finished
    assert len(seen) >= 7 and seen[0] == {"d0": 100, "d3": 5, "d4": 60, "d5": 130}
