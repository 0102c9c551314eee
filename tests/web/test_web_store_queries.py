"""The storage read queries the web layer uses: a connection per thread, incremental changes,
keyset pages of readings, per-device hourly sums and the one-pass hourly aggregates; each
checked against the plain per-field queries on a store written by the gateway's ReportStore."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import pytest

from gateway.errors import StorageError
from gateway.storage import Reading, ReportQueries, ReportRecord, ReportStore
from gateway.storage import queries
from gateway.storage.queries import DeviceHourAggregate

T0 = 1_795_000_000 - 1_795_000_000 % 86400  # a UTC midnight
WIN = 900
# A statement that runs for a second or two whatever the store holds.
SLOW_SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT COUNT(*) FROM c"


def rec(device: str, seq: int, w: int, m: dict[str, int], *, type_: str = "win", l: int = WIN,  # noqa: E741
        kind: str = "streetlight", zone: str = "centre", link: str = "serial:/dev/x") -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind=kind, zone=zone, type=type_, w=w, l=l, m=m, e={}, a=[],
                        fw="1.0", received_at=float(T0 + seq), link=link, digest="%064x" % (hash((device, seq)) & 2**64 - 1))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[ReportStore, ReportQueries]]:
    path = tmp_path / "r.sqlite"
    store = ReportStore(path, gateway_id="gw-q")
    queries = ReportQueries(path)
    try:
        yield store, queries
    finally:
        queries.close()
        store.close()


def test_each_thread_reads_through_its_own_connection(db: tuple[ReportStore, ReportQueries]) -> None:
    """A slow query in one thread does not hold up a read in another (one shared connection did:
    SQLite serialises the statements of a connection)."""
    store, q = db
    store.insert_batch([rec("sl-1", 1, T0, {"lux": 1})])
    slow_done = threading.Event()

    def slow() -> None:
        q._rows(SLOW_SQL, ())  # noqa: SLF001 - a deliberately slow statement on the shared object
        slow_done.set()

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.2)  # the slow statement is running
    assert q.last_report_id() == 1
    quick_finished_first = not slow_done.is_set()
    worker.join()
    assert quick_finished_first


def test_close_ends_the_reads_of_every_thread(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    store.insert_batch([rec("sl-1", 1, T0, {"lux": 1})])
    errors: list[StorageError] = []

    def read() -> None:
        try:
            q.last_report_id()
        except StorageError as exc:
            errors.append(exc)

    first = threading.Thread(target=read)
    first.start()
    first.join()
    assert errors == []
    q.close()
    for target in (read, read):
        t = threading.Thread(target=target)
        t.start()
        t.join()
    with pytest.raises(StorageError) as info:
        q.last_report_id()
    assert info.value.reason == "read_failed"
    assert [e.reason for e in errors] == ["read_failed", "read_failed"]


def test_close_interrupts_a_statement_running_in_another_thread(db: tuple[ReportStore, ReportQueries]) -> None:
    """No reader is left on the store after close() (the gateway checkpoints the WAL next)."""
    store, q = db
    store.insert_batch([rec("sl-1", 1, T0, {"lux": 1})])
    outcome: list[object] = []

    def slow() -> None:
        try:
            outcome.append(q._rows(SLOW_SQL, ()))  # noqa: SLF001 - a deliberately slow statement
        except StorageError as exc:
            outcome.append(exc.reason)

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.2)  # the slow statement is running
    q.close()
    worker.join()
    assert outcome == ["read_failed"]  # interrupted, not run to its end


def test_changes_since_follows_the_store_by_report_id(db: tuple[ReportStore, ReportQueries]) -> None:
    """Several reports for one period (aggregates, no ``e``: a board whose clock was set back reports the
    period again, and the store keeps both) give the higher seq's values."""
    store, q = db
    assert q.changes_since(0).watermark == 0 and q.last_report_id() == 0 and q.device_ids() == []
    store.insert_batch([
        rec("sl-1", 1, T0, {"lux": 1}), rec("sl-1", 2, T0 + WIN, {"lux": 2}),
        rec("sl-1", 3, T0 + WIN, {"wh": 40}, type_="hour", l=3600),
        rec("bin-1", 1, T0, {"fill": 10}, kind="bin", link="ble:AA"),
    ])
    full = q.changes_since(0)
    assert full.watermark == q.last_report_id() == 4
    assert {k: (rid, r.seq) for k, (rid, r) in full.latest.items()} == {
        ("sl-1", "win"): (2, 2), ("sl-1", "hour"): (3, 3), ("bin-1", "win"): (4, 1)}
    assert {d: r.seq for d, (_, r) in full.last.items()} == {"sl-1": 3, "bin-1": 1}
    assert q.changes_since(full.watermark).latest == {} and q.changes_since(full.watermark).watermark == 4
    # A late re-send of an older window (seq 4, period before the newest) is new by id, not newest by period.
    store.insert_batch([rec("sl-1", 4, T0 - WIN, {"lux": 9}), rec("sl-1", 5, T0 + WIN, {"lux": 5})])
    step = q.changes_since(full.watermark)
    assert step.watermark == 6
    assert {k: r.seq for k, (_, r) in step.latest.items()} == {("sl-1", "win"): 5}  # same w: the higher seq
    assert {d: r.seq for d, (_, r) in step.last.items()} == {"sl-1": 5}
    assert q.device_ids() == ["bin-1", "sl-1"]


@pytest.mark.parametrize("walk_from", [0, 10 ** 9], ids=["walk", "flat"])
def test_changes_since_gives_each_released_field_its_newest_value(
        db: tuple[ReportStore, ReportQueries], monkeypatch: pytest.MonkeyPatch, walk_from: int) -> None:
    """Per field, not per report type: the 6-hourly motion count travels in its own "win" report
    (l = 21600), older by period start than the 15-minute windows; a field absent from the newest
    window (not released) keeps its newest released value; alarm reports release no period value.
    The same from both queries (the walk reads the whole store at first, the flat read a refresh)."""
    monkeypatch.setattr(queries, "_RELEASED_WALK_FROM", walk_from)
    store, q = db
    store.insert_batch([
        rec("sl-1", 1, T0, {"lux": 1, "lvl": 5}),
        rec("sl-1", 2, T0 + WIN, {"lvl": 6}),                         # lux not released this window
        rec("sl-1", 3, T0, {"mot": 7}, l=21600),                      # the 6-hourly count, its own report
        rec("sl-1", 4, T0, {"wh": 40}, type_="hour", l=3600),
        rec("sl-1", 5, T0 + WIN, {"lvl": 8}),                         # same period start: the higher seq
        rec("bin-1", 1, T0, {"fill": 10, "temp": 12}, kind="bin"),
        rec("bin-1", 2, T0 + 600, {"temp": 71}, type_="alarm", l=60, kind="bin"),
        rec("bin-1", 3, T0 - 86400, {"lid": 23}, type_="day", l=86400, kind="bin"),
    ])
    full = q.changes_since(0)
    assert {k: (v.value, v.w, v.l, v.seq) for k, v in full.released.items()} == {
        ("sl-1", "lux"): (1, T0, WIN, 1), ("sl-1", "lvl"): (8, T0 + WIN, WIN, 5),
        ("sl-1", "mot"): (7, T0, 21600, 3), ("sl-1", "wh"): (40, T0, 3600, 4),
        ("bin-1", "fill"): (10, T0, WIN, 1), ("bin-1", "temp"): (12, T0, WIN, 1),
        ("bin-1", "lid"): (23, T0 - 86400, 86400, 3)}
    assert {k: v.report_id for k, v in full.released.items() if k[0] == "sl-1"} == {
        ("sl-1", "lux"): 1, ("sl-1", "lvl"): 5, ("sl-1", "mot"): 3, ("sl-1", "wh"): 4}
    assert q.changes_since(full.watermark).released == {}
    # Only the new reports: a later window and a late older one, each newest of its fields among them.
    store.insert_batch([rec("sl-1", 6, T0 + 2 * WIN, {"lux": 3}), rec("sl-1", 7, T0 - WIN, {"lux": 9, "lamp": 0}),
                        rec("bin-1", 4, T0 + WIN, {"fill": 20}, kind="bin"),
                        rec("bin-1", 5, T0 + WIN, {"fill": 30, "temp": 14}, kind="bin")])
    step = q.changes_since(full.watermark)
    assert {k: (v.value, v.seq) for k, v in step.released.items()} == {
        ("sl-1", "lux"): (3, 6), ("sl-1", "lamp"): (0, 7), ("bin-1", "fill"): (30, 5), ("bin-1", "temp"): (14, 5)}


@pytest.mark.parametrize("sql", ["_RELEASED_FLAT_SQL", "_RELEASED_WALK_SQL"])
def test_the_released_values_queries_scan_only_the_new_reports(db: tuple[ReportStore, ReportQueries],
                                                               sql: str) -> None:
    """The id range bounds the scan (the planner preferred walking the whole (device, w) index),
    and every other step is an index search."""
    store, q = db
    store.insert_batch([rec("sl-%d" % (i % 7), i, T0 + i * WIN, {"lux": i}) for i in range(1, 400)])
    plan = [str(r[3]) for r in q._rows("EXPLAIN QUERY PLAN " + getattr(queries, sql), (390, 399))]  # noqa: SLF001
    assert "SEARCH r USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan, plan
    assert not [step for step in plan if step.startswith("SCAN r")], plan


def test_reports_by_id_sees_what_retention_removed(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    store.insert_batch([rec("sl-1", 1, T0, {"lux": 1, "mot": 3})])
    assert q.reports_by_id([1])[1].m == {"lux": 1, "mot": 3}
    store.apply_retention({("streetlight", "mot"): 1}, now=T0 + 3 * 86400)
    assert q.reports_by_id([1, 99]) == {1: q.reports_by_id([1])[1]} and q.reports_by_id([1])[1].m == {"lux": 1}


def test_readings_pages_neither_repeat_nor_skip_readings_sharing_a_start(
        db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    # 5 devices x 4 fields at one period start: 20 readings share it; one more window after.
    store.insert_batch([rec("sl-%d" % d, 1, T0, {"lux": d, "mot": d, "lvl": d, "lamp": 0}) for d in range(5)]
                       + [rec("sl-0", 2, T0 + WIN, {"lux": 7})])
    fields = ["lux", "mot", "lvl", "lamp"]
    everything = q.readings_page(fields=fields, start=T0, end=T0 + 86400, limit=1000)
    assert len(everything) == 21
    pages, after = [], None
    while True:
        page = q.readings_page(fields=fields, start=T0, end=T0 + 86400, after=after, limit=4)
        if not page:
            break
        pages.append(page)
        last = page[-1]
        after = (last.w, last.device, last.report_id, last.field)
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 1]
    assert [r for p in pages for r in p] == everything
    # The order: start, device, report, field; and the same values as the per-field query.
    assert [(r.w, r.device, r.field) for r in everything] == sorted((r.w, r.device, r.field) for r in everything)
    per_field = sorted((r.device, r.field, r.w, r.value) for f in fields
                       for r in q.readings(field=f, start=T0, end=T0 + 86400))
    assert sorted((r.device, r.field, r.w, r.value) for r in everything) == per_field
    one_device = q.readings_page(fields=["lux"], start=T0, end=T0 + 86400, device="sl-0")
    assert [(r.w, r.value) for r in one_device] == [(T0, 0), (T0 + WIN, 7)]


def test_device_hourly_sums_every_reading_per_device_hour_and_field(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    records = []
    for i in range(12):  # three hours of windows, an hourly energy value, a 6-hour pass count
        for n, dev in enumerate(("sl-1", "sl-2")):
            records.append(rec(dev, 1 + i, T0 + i * WIN, {"lux": 10 * n + i, "lvl": 50 + i % 3, "mot": i},
                               zone="north" if n else "centre"))
    records.append(rec("sl-1", 100, T0, {"wh": 41}, type_="hour", l=3600))
    records.append(rec("sl-1", 101, T0 + 1800, {"mot": 12}, type_="day", l=6 * 3600))
    records.append(rec("bin-1", 1, T0, {"fill": 30}, kind="bin"))
    store.insert_batch(records)
    fields = ["lux", "lvl", "mot", "wh", "fill"]
    devices = ["sl-1", "sl-2"]
    groups: dict[tuple[int, str, str], list[Reading]] = defaultdict(list)
    for f in fields:
        for r in q.readings(field=f, start=T0, end=T0 + 86400):
            if r.device in devices:
                groups[(r.w - r.w % 3600, r.device, r.field)].append(r)
    expected = [DeviceHourAggregate(hour, dev, rs[0].kind, rs[0].zone, f, len(rs), sum(r.value for r in rs),
                                    max(r.w + r.l for r in rs))
                for (hour, dev, f), rs in sorted(groups.items())]
    got = q.device_hourly(fields=fields, start=T0, end=T0 + 86400, devices=devices)
    assert got == expected and len(got) == 19
    assert [g.until for g in got if g.field == "mot" and g.device == "sl-1"][0] == T0 + 1800 + 6 * 3600
    north = q.device_hourly(fields=fields, start=T0, end=T0 + 86400, devices=devices, zone="north")
    assert {g.device for g in north} == {"sl-2"}
    assert q.device_hourly(fields=fields, start=T0, end=T0 + 86400, devices=[]) == []


def test_hourly_aggregates_of_several_fields_in_one_pass(db: tuple[ReportStore, ReportQueries]) -> None:
    store, q = db
    store.insert_batch([rec("sl-%d" % n, 1 + i, T0 + i * WIN, {"mot": i + n, "wh": 3 * i})
                        for i in range(8) for n in range(3)])
    one_pass = q.hourly_aggregates_of(fields=["mot", "wh"], start=T0, end=T0 + 86400)
    per_field = sorted((a for f in ("mot", "wh") for a in q.hourly_aggregates(field=f, start=T0, end=T0 + 86400)),
                       key=lambda a: (a.hour, a.zone, a.field))
    assert one_pass == per_field and len(one_pass) == 4


def test_hourly_means_and_sums_leave_alarm_values_out(db: tuple[ReportStore, ReportQueries]) -> None:
    """QA M1: a fire alarm's temperature (85, over one minute) was averaged with the hour's four
    15-minute windows (count 5, mean 27 instead of 12) in the CSV, /api/aggregates/hourly and the
    dashboard series. The alarm's value stays readable where alarms are shown (``readings``)."""
    store, q = db
    store.insert_batch([rec("bin-1", 1 + i, T0 + i * WIN, {"temp": 12, "tilt": 0}, kind="bin") for i in range(4)]
                       + [rec("bin-1", 5, T0 + 1260, {"temp": 85}, kind="bin", type_="alarm", l=60),
                          rec("bin-1", 6, T0 + 1500, {}, kind="bin", type_="boot", l=60)])
    (row,) = q.device_hourly(fields=["temp"], start=T0, end=T0 + 3600, devices=["bin-1"])
    assert (row.count, row.total, row.until) == (4, 48, T0 + 3600)
    (agg,) = q.hourly_aggregates_of(fields=["temp"], start=T0, end=T0 + 3600)
    assert (agg.count, agg.total, agg.maximum, agg.mean) == (4, 48, 12, 12.0)
    assert sorted(r.value for r in q.readings(field="temp", start=T0, end=T0 + 3600)) == [12, 12, 12, 12, 85]


def test_the_hourly_queries_read_through_the_period_indexes(db: tuple[ReportStore, ReportQueries],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The report-type filter of the hourly queries keeps them on the (device, w) and (w) indexes
    (a million-report store: a scan of ``reports`` would read all of it per request)."""
    store, q = db
    store.insert_batch([rec("sl-%d" % n, 1 + i, T0 + i * WIN, {"lux": i}) for i in range(8) for n in range(3)])
    statements: list[tuple[str, tuple[object, ...]]] = []
    rows = q._rows  # noqa: SLF001 - the statement each query runs, planned below

    def record(sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        statements.append((sql, params))
        return rows(sql, params)

    monkeypatch.setattr(q, "_rows", record)
    q.device_hourly(fields=["lux"], start=T0, end=T0 + 86400, devices=["sl-0", "sl-1"])
    q.hourly_aggregates_of(fields=["lux"], start=T0, end=T0 + 86400)
    plans = [[str(r[3]) for r in rows("EXPLAIN QUERY PLAN " + sql, params)] for sql, params in statements]
    assert "SEARCH r USING INDEX reports_device_w (device=? AND w>? AND w<?)" in plans[0], plans[0]
    assert "SEARCH r USING INDEX reports_w (w>? AND w<?)" in plans[1], plans[1]
    for plan in plans:
        assert not [step for step in plan if step.startswith("SCAN r")], plan


def test_device_hourly_counts_the_withheld_releases(db: tuple[ReportStore, ReportQueries]) -> None:
    """QA M3: a noisy count below k leaves its report with ``e`` naming the field and ``m`` without it
    (docs/protocol.md §2). Such a release is counted as withheld, never as a value; a row of withheld
    releases only has no value (count 0)."""
    store, q = db
    six = 6 * 3600
    records = [rec("sl-1", 1, T0, {"mot": 12}, l=six), rec("sl-1", 2, T0 + six, {}, l=six),
               rec("sl-1", 3, T0 + six, {"lux": 30, "lvl": 50, "lamp": 0})]
    records = [r._replace(e={"mot": 500}) if r.l == six else r for r in records]
    store.insert_batch(records)
    got = q.device_hourly(fields=["mot", "lux"], start=T0, end=T0 + 2 * six, devices=["sl-1"])
    assert [(g.hour, g.field, g.count, g.total, g.withheld, g.until) for g in got] == [
        (T0, "mot", 1, 12, 0, T0 + six), (T0 + six, "lux", 1, 30, 0, T0 + six + WIN),
        (T0 + six, "mot", 0, 0, 1, T0 + 2 * six)]


def test_reads_bounded_by_a_publication_mark_leave_later_reports_out(db: tuple[ReportStore, ReportQueries],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The public open data reads only the reports received before a publication mark
    (gateway/web/publication.py): the highest id received before it bounds every read, as a filter on
    the rows the period indexes find (never a walk of all ids below the bound: nearly the whole of a
    million-report store), and finding that id walks back from the newest report only."""
    store, q = db
    store.insert_batch([rec("sl-1", 1 + i, T0 + i * WIN, {"lux": i}) for i in range(4)])  # received T0 + 1..4
    store.insert_batch([rec("sl-1", 5, T0 + 3 * WIN + 60, {}, type_="alarm", l=60)._replace(a=["lamp_fail"]),
                        rec("sl-1", 6, T0 + 4 * WIN, {"lux": 9})])                        # received T0 + 5, 6
    assert [q.last_id_received_before(T0 + s) for s in (0, 1, 4.5, 5, 100)] == [0, 0, 4, 4, 6]
    bound = q.last_id_received_before(T0 + 5)
    statements: list[tuple[str, tuple[object, ...]]] = []
    rows = q._rows  # noqa: SLF001 - the statement each query runs, planned below

    def record(sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        statements.append((sql, params))
        return rows(sql, params)

    monkeypatch.setattr(q, "_rows", record)
    assert [r.value for r in q.readings(field="lux", start=T0, end=T0 + 86400, device="sl-1", max_id=bound)] == [
        0, 1, 2, 3]
    assert q.alarms(start=T0, end=T0 + 86400, max_id=bound) == []
    hours = q.device_hourly(fields=["lux"], start=T0, end=T0 + 86400, devices=["sl-1"], max_id=bound)
    q.last_id_received_before(T0 + 5, above=2)
    monkeypatch.undo()
    assert [(h.hour, h.count, h.total) for h in hours] == [(T0, 4, 6)]
    assert [(h.hour, h.count) for h in q.device_hourly(fields=["lux"], start=T0, end=T0 + 86400, devices=["sl-1"])] == [
        (T0, 4), (T0 + 3600, 1)]
    assert [a.code for a in q.alarms(start=T0, end=T0 + 86400)] == ["lamp_fail"]
    stamp = q.range_stamp(start=T0, end=T0 + 86400, max_id=bound)
    assert (stamp.newest_id, stamp.newest_at) == (4, T0 + 4)
    assert q.range_stamp(start=T0, end=T0 + 86400).newest_id == 6
    changes = q.changes_since(0, upto=bound)
    assert changes.watermark == 4 and changes.released[("sl-1", "lux")].value == 3
    assert q.changes_since(4, upto=bound).watermark == 4 and q.changes_since(0).watermark == 6
    plans = [[str(r[3]) for r in rows("EXPLAIN QUERY PLAN " + sql, params)] for sql, params in statements]
    assert "SEARCH r USING INDEX reports_device_w (device=? AND w>? AND w<?)" in plans[0], plans[0]
    assert "SEARCH alarms USING INDEX alarms_w (w>? AND w<?)" in plans[1], plans[1]
    assert "SEARCH r USING INDEX reports_device_w (device=? AND w>? AND w<?)" in plans[2], plans[2]
    for plan in plans[:3]:
        assert not [step for step in plan if "PRIMARY KEY" in step or step.startswith("SCAN r")], plan
    # the ids from the newest down to the bound published before, stopping at the first received
    # before the mark: a rowid range, no sort, no index (review M1: never the whole store)
    assert plans[3] == ["SEARCH reports USING INTEGER PRIMARY KEY (rowid>?)"], plans[3]
    # the bound never goes below the one published before (a clock set back: review M1)
    assert [q.last_id_received_before(T0 + s, above=5) for s in (0, 5, 100)] == [5, 5, 6]
    # the devices with a report up to a CSV bound (review LOW4): a seek in each device's index entries
    assert q.devices_reported(["sl-1", "sl-2"], max_id=bound) == {"sl-1"}
    assert q.devices_reported(["sl-1"], max_id=0) == set()
    seek = [str(r[3]) for r in rows("EXPLAIN QUERY PLAN " + queries._DEVICE_REPORTED_SQL,  # noqa: SLF001
                                    ("sl-1", bound))]
    assert seek == ["SEARCH reports USING COVERING INDEX reports_device_w (device=?)"], seek
    stamp_plan = [str(r[3]) for r in rows("EXPLAIN QUERY PLAN " + queries._RANGE_NEWEST_SQL,  # noqa: SLF001
                                          (T0, T0 + 86400, bound))]
    assert stamp_plan == ["SEARCH reports USING INTEGER PRIMARY KEY (rowid=?)", "SCALAR SUBQUERY 1",
                          "SEARCH reports USING COVERING INDEX reports_w (w>? AND w<?)"], stamp_plan
