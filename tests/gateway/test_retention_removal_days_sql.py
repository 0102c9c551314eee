"""The days a retention pass records its removals under (gateway.storage.retention_removals), read without
``UPDATE ... RETURNING`` (review M2, rev-fresh: SQLite 3.35 and later only, while docs/gateway.md supports
Debian 10 / Ubuntu 20.04, whose system SQLite is 3.27 / 3.31), for the reports' values and for the repeat
releases' (``window_duplicates``) alike (review L3: the latter's record call had no test); with the days
older than the longest retention and a week folded into the floor, the others kept apart (review M1).

A real SQLite store (ReportStore), retention run by the store itself (apply_retention).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.storage import ReportRecord, ReportStore, retention_removals

DAY, H = 86400, 3600
NOW = 1_795_262_400 + 12 * H  # 12:00 UTC


def rec(seq: int, w: int, m: dict[str, int], e: dict[str, int] | None = None) -> ReportRecord:
    return ReportRecord(device="sl-01", seq=seq, kind="streetlight", zone="centre", type="win", w=w, l=900, m=m,
                        e=e or {}, a=[], fw="1.0", received_at=w + 965.0, link="serial:/dev/x",
                        digest="%064x" % seq)


def _log(store: ReportStore) -> retention_removals.RemovalLog:
    row = store._conn.execute("SELECT value FROM meta WHERE key = ?", (retention_removals.META_KEY,)).fetchone()
    assert row is not None, "nothing recorded"
    return retention_removals.decode(str(row[0]))


def test_the_days_are_read_without_returning_for_reports_and_repeat_releases(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "s.db", gateway_id="gw")
    try:
        a, b = NOW - 10 * DAY, NOW - 8 * DAY  # a report's day, a repeat release's day (nothing else on it)
        store.insert_batch([rec(1, a, {"lux": 10, "mot": 3}, {"mot": 500}), rec(2, a + 900, {"lux": 11})])
        with store._writing("test: a repeat release") as conn:
            conn.execute("INSERT INTO window_duplicates (device, seq, kind, type, w, l, e, kept_seq, digest,"
                         " received_at, gateway_id, link) VALUES ('sl-01', 9, 'streetlight', 'win', ?, 900,"
                         " '{\"mot\":500}', 1, ?, ?, 'gw', 'serial:/dev/x')", (b, "%064x" % 9, b + 965.0))
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        calls: list[int] = []  # each batch reads the clock once: 60 s apart
        store.removal_clock = lambda: float(NOW + 60 * (calls.append(1) or len(calls)))
        try:
            assert store.apply_retention({("streetlight", "lux"): 5, ("streetlight", "mot"): 5}, float(NOW)) == 3
        finally:
            store._conn.set_trace_callback(None)
        # Before the fix: UPDATE reports ... RETURNING w and UPDATE window_duplicates ... RETURNING w.
        assert not [s for s in statements if "RETURNING" in s.upper()]
        log = _log(store)
        assert set(log.days) == {a // DAY, b // DAY}  # the repeat release's day from its own stage, later
        assert NOW < log.days[a // DAY] < log.days[b // DAY] <= NOW + 60 * len(calls)
        assert store._conn.execute("SELECT e FROM window_duplicates").fetchone()[0] == "{}"
        assert store._conn.execute("SELECT COUNT(*) FROM reports WHERE m != '{}' OR e != '{}'").fetchone()[0] == 0
        # rows changed still counted (.rowcount): a second pass changes nothing and records nothing new
        assert store.apply_retention({("streetlight", "lux"): 5, ("streetlight", "mot"): 5}, float(NOW)) == 0
        assert _log(store).days == log.days
    finally:
        store.close()


def test_a_period_before_1970_gets_its_floored_day(tmp_path: Path) -> None:
    """SQLite's integer division truncates towards zero: the day of a negative period start is floored as
    Python's ``//`` (the stamps' ``w // 86400``), so a range over it finds its removal."""
    store = ReportStore(tmp_path / "s.db", gateway_id="gw")
    try:
        store.insert_batch([rec(1, -3 * H, {"lux": 10})])
        store.removal_clock = lambda: float(NOW)
        assert store.apply_retention({("streetlight", "lux"): 5}, float(NOW)) == 1
        log = _log(store)
        assert log.latest(-DAY, 0) is not None and log.latest(0, DAY) is None
    finally:
        store.close()


def test_a_pass_keeps_apart_the_days_within_the_longest_retention_only(tmp_path: Path) -> None:
    """Retentions of 90 and 365 days: the pass folds the days before the 365 days' cut-off less a week and a
    day into the floor, and keeps the others apart, whatever how many there are (before: 256 at most)."""
    store = ReportStore(tmp_path / "s.db", gateway_id="gw")
    try:
        first = NOW - 400 * DAY
        store.insert_batch([rec(1 + i, first + i * DAY, {"lux": 1, "mot": 2}) for i in range(400)])
        store.removal_clock = lambda: float(NOW)
        assert store.apply_retention({("streetlight", "mot"): 90, ("streetlight", "lux"): 365}, float(NOW)) > 0
        log = _log(store)
        keep = retention_removals.keep_from_day([90, 365], NOW)
        assert keep == (NOW - 365 * DAY) // DAY - retention_removals.MARGIN_DAYS
        assert sorted(log.days) == list(range(keep, (NOW - 90 * DAY) // DAY))
        assert len(log.days) > 256 and log.floor_day == keep - 1 and log.floor_at == NOW
    finally:
        store.close()


def test_only_removals_from_reports_the_csv_may_have_published_are_recorded(tmp_path: Path) -> None:
    """Review L1: received before the CSV mark at the removal (hh:05), or at or below the bound the CSV saved
    (``published:csv``: what it served before the clock was set back); not a report received since."""
    store = ReportStore(tmp_path / "s.db", gateway_id="gw")
    try:
        at = NOW + 1800  # 12:30: the mark is 12:05
        days = [NOW - (10 + i) * DAY for i in range(3)]
        store.insert_batch([
            ReportRecord(device="sl-01", seq=1 + i, kind="streetlight", zone="centre", type="win", w=w, l=900,
                         m={"lux": 1}, e={}, a=[], fw="1.0", received_at=r, link="serial:/dev/x",
                         digest="%064x" % (1 + i))
            for i, (w, r) in enumerate([(days[0], NOW + 200.0),       # before the 12:05 mark: published
                                        (days[1], NOW + 1500.0),      # 12:25, but under the saved bound
                                        (days[2], NOW + 1600.0)])])   # 12:26: not published yet
        store.save_meta("published:csv", "2 %d %d" % (NOW + 300, round((NOW + 1500.0) * 1_000_000)))
        store.removal_clock = lambda: float(at)
        assert store.apply_retention({("streetlight", "lux"): 5}, float(NOW)) == 3  # all three removed
        assert _log(store).days == {days[0] // DAY: at, days[1] // DAY: at}
        # a saved value that cannot be read: the mark alone decides
        store.insert_batch([rec(9, days[1] + 900, {"lux": 1})])  # received days ago
        store.save_meta("published:csv", "garbage")
        store.removal_clock = lambda: float(at + 600)
        assert store.apply_retention({("streetlight", "lux"): 5}, float(NOW)) == 1
        assert _log(store).days == {days[0] // DAY: at, days[1] // DAY: at + 600}
    finally:
        store.close()
