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
