"""A continuous retention pass finds what expires instead of reading the whole store (soak QA: every pass
counted every stored value, a full read of the reports table on the store's writer thread each interval).
What a pass reads is measured in SQLite VM steps on the store's own connection (no time measured), and
what it leaves is checked against the retention over the whole store. Real SQLite files."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

import pytest

from gateway.resources import load_policy
from gateway.retention_clock import LargeRemovalHold
from gateway.storage import ReportRecord, ReportStore, field_retention
from gateway.storage.row_retention import RowPass

DAY = 86400
HOUR = 3600
T0 = 1_700_000_100 - (1_700_000_100 % DAY)
POLICY_DAYS = {(k, f): int(spec["retention_days"]) for k, kspec in load_policy()["kinds"].items()
               for f, spec in kspec["fields"].items()}
BIN_M = {"temp": 5, "fill": 30, "tilt": 0, "bat": 90, "lid": 1}
SL_M = {"lux": 10, "mot": 2, "lvl": 3, "lamp": 1, "wh": 7}


def rec(device: str, seq: int, w: int, *, kind: str = "bin", rtype: str = "win", length: int = 900,
        received: float | None = None, e: dict[str, int] | None = None) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind=kind, zone="north", type=rtype, w=w, l=length,
                        m=dict(BIN_M if kind == "bin" else SL_M), e=e or {}, a=[], fw="1.0",
                        received_at=w + length + 65.0 if received is None else received, link="serial:/dev/x",
                        digest="%064x" % (seq + 100_000 * len(device)))


def steps(store: ReportStore, run: Callable[[], object]) -> int:
    """SQLite VM steps (in hundreds) the store's connection runs during ``run``: what it reads, in SQLite's
    own units."""
    seen = [0]

    def tick() -> int:
        seen[0] += 1
        return 0

    store._conn.set_progress_handler(tick, 100)
    try:
        run()
    finally:
        store._conn.set_progress_handler(None, 100)
    return seen[0]


def cutoffs(days: dict[tuple[str, str], int], now: float) -> dict[tuple[str, str], int]:
    return {k: int(now) - d * DAY for k, d in days.items()}


def left_past(db: Path, cut: dict[tuple[str, str], int]) -> list[tuple[str, str, int]]:
    """Every ``(kind, field, id)`` of a value (``m`` or ``e``) whose period ended by its field's cut-off: none
    may be left."""
    conn = sqlite3.connect(db)
    try:
        out = []
        for (kind, fld), c in sorted(cut.items()):
            out += [(kind, fld, int(i)) for (i,) in conn.execute(
                "SELECT id FROM reports WHERE kind = ? AND w + l <= ? AND (json_type(m, ?) IS NOT NULL OR"
                " json_type(e, ?) IS NOT NULL)", (kind, c, '$."%s"' % fld, '$."%s"' % fld))]
        return out
    finally:
        conn.close()


def lost_inside(db: Path, cut: dict[tuple[str, str], int]) -> dict[str, int]:
    """Per field, the rows ending after its cut-off (the latest any pass used) that lost the value (every row
    was stored with every field of its kind): none may have."""
    conn = sqlite3.connect(db)
    try:
        return {"%s.%s" % (kind, fld): int(conn.execute(
            "SELECT COUNT(*) FROM reports WHERE kind = ? AND w + l > ? AND json_type(m, ?) IS NULL",
            (kind, c, '$."%s"' % fld)).fetchone()[0]) for (kind, fld), c in cut.items()}
    finally:
        conn.close()


def year_store(db: Path) -> ReportStore:
    """Two years of reports, a bin and a streetlight every 3 hours, and a day report of the bin each day (the
    longest period: a day report ending after a cut-off starts before it)."""
    store = ReportStore(db, gateway_id="gw")
    start = T0 - 800 * DAY
    records = []
    for i in range(800 * 8):
        w = start + 3 * HOUR * i
        records += [rec("b1", i + 1, w), rec("s1", i + 1, w, kind="streetlight")]
    records += [rec("b1d", i + 1, start + DAY * i, rtype="day", length=DAY) for i in range(800)]
    records.sort(key=lambda r: r.received_at)  # stored in the order they came
    store.insert_batch(records, {"b1": 6400, "s1": 6400, "b1d": 800})
    return store


def run_pass(store: ReportStore, days: dict[tuple[str, str], int], now: float,
             hold: LargeRemovalHold | None = None) -> RowPass:
    rows = store.begin_retention(days, now, hold)
    while store.retention_batch(rows):
        pass
    return rows


def test_a_continuous_pass_reads_what_expires_not_the_store(tmp_path: Path) -> None:
    """Fails before: the second pass, 3 hours after the first, counted every stored value again (as many VM
    steps as the first pass's count, which reads 13,600 reports)."""
    db = tmp_path / "r.sqlite"
    store = year_store(db)
    first = steps(store, lambda: run_pass(store, POLICY_DAYS, float(T0)))
    assert left_past(db, cutoffs(POLICY_DAYS, T0)) == []
    # three hours on: new reports, and a late one of a period past temp's 90 days (a board's buffered batch)
    store.insert_batch([rec("b1", 6401 + i, T0 + 3 * HOUR * i) for i in range(2)]
                       + [rec("b9", 1, T0 - 100 * DAY, received=T0 + 2 * HOUR)], {"b1": 6402, "b9": 1})
    now = float(T0 + 3 * HOUR)
    rows: list[RowPass] = []
    later = steps(store, lambda: rows.append(run_pass(store, POLICY_DAYS, now)))
    assert left_past(db, cutoffs(POLICY_DAYS, now)) == []
    assert set(lost_inside(db, cutoffs(POLICY_DAYS, now)).values()) == {0}
    assert rows[0].readings > 0  # it removed the 3 hours that expired (and the late report's values)
    assert later * 50 < first, (later, first)
    store.close()


def test_passes_with_the_retention_changed_and_the_clock_set_back_leave_nothing_past_retention(
        tmp_path: Path) -> None:
    """The marks a pass leaves (field_retention.Cleared) hold across retention shortened, lengthened, a removal
    time set back, a field kept longer during a pass, reports stored late: after every pass, no value past its
    retention is left and none inside it is gone (checked over the whole store)."""
    db = tmp_path / "r.sqlite"
    store = year_store(db)
    days = dict(POLICY_DAYS)
    now = float(T0 - 30 * DAY)
    seq = 1
    latest: dict[tuple[str, str], int] = {}  # the latest cut-off any pass removed by, per field

    def check(days: dict[tuple[str, str], int], now: float) -> None:
        cut = cutoffs(days, now)
        for k, c in cut.items():
            latest[k] = max(latest.get(k, c), c)
        assert left_past(db, cut) == [], now
        assert set(lost_inside(db, latest).values()) == {0}, (now, lost_inside(db, latest))

    run_pass(store, days, now)
    check(days, now)
    for step, change in enumerate([
            {("bin", "temp"): 30},            # shortened: the band from 90 to 30 days goes
            {("bin", "temp"): 60},            # lengthened: nothing more of it goes
            {("bin", "temp"): 20, ("streetlight", "lux"): 10},
            {}, {}]):
        days.update(change)
        now += 7 * HOUR if step != 3 else -2 * DAY  # one pass by a removal time set back
        store.insert_batch([rec("late", seq, int(now) - 50 * DAY, received=now - 60, e={"temp": 40, "fill": 20})],
                           {"late": seq})  # a late release, its spend in e (left_past checks e too)
        seq += 1
        rows = store.begin_retention(days, now)
        assert rows.values is not None
        while store.retention_batch(rows):
            pass
        assert rows.values.stage == "rows" and rows.done
        check(days, now)
    # a field kept longer part-way through a pass loses nothing more, and the next pass finds what is left
    days[("bin", "tilt")] = 5
    now += DAY
    rows = store.begin_retention(days, now)
    assert rows.values is not None
    while rows.values.stage != "values":
        store.retention_batch(rows)
    longer = dict(days)
    longer[("bin", "tilt")] = 90
    while store.retention_batch(rows, longer):
        pass
    check(longer, now)
    now += HOUR
    run_pass(store, days, now)
    check(days, now)
    store.close()


def test_a_report_ending_after_the_last_cut_off_that_started_before_it_is_found(tmp_path: Path) -> None:
    """A day report ends a day after its w: the search on w starts the longest period before the last cut-off,
    or such a report past its retention stayed for good."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    cut = T0 - 90 * DAY  # temp's cut-off at T0
    store.insert_batch([rec("b1", 1, cut - 1000 - DAY, rtype="day", length=DAY),  # ends before the cut-off
                        rec("b1", 2, cut - DAY + 3600, rtype="day", length=DAY),  # ends an hour after it
                        rec("b2", 1, T0 - 600)], {"b1": 2, "b2": 1})
    run_pass(store, POLICY_DAYS, float(T0))
    assert left_past(db, cutoffs(POLICY_DAYS, T0)) == []
    assert left_past(db, cutoffs(POLICY_DAYS, T0 + 2 * HOUR)) != []  # report 2's temp ends inside the next pass
    run_pass(store, POLICY_DAYS, float(T0 + 2 * HOUR))
    assert left_past(db, cutoffs(POLICY_DAYS, T0 + 2 * HOUR)) == []
    store.close()


def test_a_continuous_pass_still_warns_of_a_large_removal_and_a_held_one_still_counts_all(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Devices fallen silent: a later pass removes all that is left of temp, with the 10 % WARNING naming the
    exact count. A pass the hold applies to counts every stored value, as before."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 80 * DAY + 900 * s) for s in range(1, 61)], {"b1": 60})
    run_pass(store, POLICY_DAYS, float(T0))  # nothing past 90 days yet
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        rows = run_pass(store, POLICY_DAYS, float(T0 + 20 * DAY))
    assert rows.readings == 60 * 3  # temp, tilt and bat (lid and fill are kept longer)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "60 of 60 bin.temp value(s)" in text, text
    store.close()


def test_the_share_is_counted_only_as_far_as_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A small removal: the share stage stops once the values counted make it small (no WARNING); a hold
    counts the whole store (count stage)."""
    monkeypatch.setattr(field_retention, "COUNT_BATCH", 50)
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 85 * DAY + 1800 * s) for s in range(1, 1001)], {"b1": 1000})
    run_pass(store, POLICY_DAYS, float(T0))
    rows = store.begin_retention(POLICY_DAYS, float(T0 + 5 * DAY + 2 * HOUR))
    assert rows.values is not None
    stages: list[str] = []
    with caplog.at_level(logging.WARNING, logger="gateway.storage"):
        while True:
            stages.append(rows.values.stage)
            if not store.retention_batch(rows):
                break
    assert "count" not in stages
    # 3 values of each 90-day field expire: 30 stored tell it is no large share, and the newest range of 50 has them
    assert stages.count("share") == 1, stages
    assert rows.values.counts[("bin", "temp")] == [50, 3]
    assert "of what was stored" not in " ".join(r.getMessage() for r in caplog.records)
    rows = store.begin_retention(POLICY_DAYS, float(T0 + 5 * DAY + 3 * HOUR), LargeRemovalHold())
    assert rows.values is not None
    stages = []
    while True:
        stages.append(rows.values.stage)
        if not store.retention_batch(rows):
            break
    assert "find" not in stages and rows.values.counts[("bin", "temp")][0] == 1000 - 3
    store.close()


def test_a_backup_merged_into_the_store_is_counted_by_the_next_pass(tmp_path: Path) -> None:
    """A row merged by another connection (docs/gateway.md's INSERT OR IGNORE ... SELECT *, the gateway
    stopped: a running store refuses writes after another connection wrote it, d58eea4) keeps the backup's
    id, below the last pass's newest, and its old w: the next pass after the restart finds it. The store's
    own writes leave the passes finding."""
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 800 * DAY + 900 * s) for s in range(1, 11)]
                       + [rec("b1", 10 + s, T0 - HOUR * s) for s in range(1, 4)], {"b1": 13})
    backup = store._conn.execute("SELECT * FROM reports WHERE id = 5").fetchone()
    run_pass(store, POLICY_DAYS, float(T0))  # the 800-day-old reports go (values and rows)
    assert store._conn.execute("SELECT COUNT(*) FROM reports WHERE id = 5").fetchone()[0] == 0
    # a pass after the store's own writes still finds (no count stage)
    store.insert_batch([rec("b1", 14, T0)], {"b1": 14})
    rows = store.begin_retention(POLICY_DAYS, float(T0 + HOUR))
    assert rows.values is not None
    stages = []
    while True:
        stages.append(rows.values.stage)
        if not store.retention_batch(rows):
            break
    assert "find" in stages and "count" not in stages, stages
    store.close()  # the gateway stopped, as the merge steps say
    other = sqlite3.connect(db, isolation_level=None)  # the operator's sqlite3
    try:
        other.execute("INSERT OR IGNORE INTO reports VALUES (%s)" % ",".join("?" * len(backup)), backup)
    finally:
        other.close()
    store = ReportStore(db, gateway_id="gw")
    now = float(T0 + 2 * HOUR)
    assert left_past(db, cutoffs(POLICY_DAYS, now)) != []
    run_pass(store, POLICY_DAYS, now)
    assert left_past(db, cutoffs(POLICY_DAYS, now)) == []
    store.close()


def test_a_pass_that_finds_much_holds_a_bounded_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: a retention shortened at runtime made the find stage hold every report id it found (a
    list: 41.5 MB for 400,000 of them). Now it holds at most FOUND_BUCKETS buckets of ids (larger ones when it
    finds more), removes exactly what expired, and leaves the reports stored after the pass began alone."""
    monkeypatch.setattr(field_retention, "FOUND_BUCKETS", 8, raising=False)
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 60 * DAY + 900 * s) for s in range(1, 5001)], {"b1": 5000})
    run_pass(store, POLICY_DAYS, float(T0))  # nothing past 90 days
    days = dict(POLICY_DAYS)
    days[("bin", "temp")] = 1  # shortened at runtime: about 4,900 reports lose temp
    now = float(T0 + HOUR)
    rows = store.begin_retention(days, now)
    assert rows.values is not None
    held, stages = 0, []
    while True:
        stages.append(rows.values.stage)
        held = max(held, len(rows.values.found))
        if rows.values.stage == "share" and "late" not in stages:  # a late report stored during the pass
            stages.append("late")
            store.insert_batch([rec("b9", 1, T0 - 30 * DAY, received=now)], {"b9": 1})
        if not store.retention_batch(rows):
            break
    assert "find" in stages and "count" not in stages, stages
    assert held <= 8, held
    assert rows.readings >= 4800
    cut = cutoffs(days, now)
    assert left_past(db, cut) == [("bin", "temp", 5001)]  # stored after the pass began: the next pass's
    assert set(lost_inside(db, cut).values()) == {0}
    run_pass(store, days, now + 60)
    assert left_past(db, cutoffs(days, now + 60)) == []
    store.close()


def test_a_field_kept_longer_during_a_pass_is_not_counted_for_its_share(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: a field kept longer (the admin API) during the find or share stage kept its share entry,
    which nothing then counted down: the share stage walked every report, newest first."""
    monkeypatch.setattr(field_retention, "COUNT_BATCH", 50)
    db = tmp_path / "r.sqlite"
    store = ReportStore(db, gateway_id="gw")
    store.insert_batch([rec("b1", s, T0 - 85 * DAY + 1800 * s) for s in range(1, 1001)], {"b1": 1000})
    run_pass(store, POLICY_DAYS, float(T0))  # nothing past 90 days yet
    kept = dict(POLICY_DAYS)
    kept.update({("bin", "temp"): 200, ("bin", "tilt"): 200, ("bin", "bat"): 200})

    def run(now: float, keep_at: str, jobs_before: int) -> list[str]:
        rows = store.begin_retention(POLICY_DAYS, now)
        assert rows.values is not None
        stages: list[str] = []
        current = dict(POLICY_DAYS)
        while True:
            stages.append(rows.values.stage)
            if stages.count(keep_at) > jobs_before:
                current = kept
            if not store.retention_batch(rows, current):
                break
        return stages

    # 3 values of temp, tilt and bat expire; kept longer when the find stage is through (the share not yet built)
    stages = run(float(T0 + 5 * DAY + 2 * HOUR), "find", 0)
    assert "find" in stages and stages.count("share") == 1, stages
    # 30 more expire: a share of 300 values to count, 50 a job; the fields are kept longer after its first job
    stages = run(float(T0 + 5 * DAY + 54900), "share", 1)
    assert stages.count("share") == 2, stages
    cut = cutoffs(kept, T0 + 5 * DAY + 54900)
    assert left_past(db, cut) == []
    store.close()
