"""QA MEDIUM: the CSV exports' ETag and Last-Modified of a PAST range moved when reports for another range
arrived (body byte-identical), so a past range did not keep answering 304 as docs/open-data.md says.

The real app over the real SQLite store of the fed fleet (tests/web/conftest.py); reports written into the
store with the receive times of a day going on, the app's clock moved past the CSV's hh:05 marks. Before
the fix, the stamp took every report with a period start from ``from`` less the longest period (a day) on:
a 6-hour release starting before the range's end, an alarm in it, a window ending at its start all moved it.
"""

from __future__ import annotations

import csv
import io
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import ClientResponse

from gateway.storage.store import ReportRecord
from gateway.web import range_stamps

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client

H = 3600
DAY = 86400
# The range under test: (13:00, 14:00] on NOW's day; every report in it arrives before the 14:05 mark.
R_FROM, R_TO = NOW + H, NOW + 2 * H
RANGE = f"/opendata/readings.csv?from={R_FROM}&to={R_TO}"
_seq = [96_000]


def record(device: str, *, type: str = "win", w: int, l: int, m: dict[str, Any], e: dict[str, int] | None = None,
           received_at: float, a: list[str] | None = None) -> ReportRecord:  # noqa: A002
    """A stored report of ``device`` (a streetlight in centre unless a bin), received at ``received_at``."""
    _seq[0] += 1
    kind = "bin" if device.startswith("bin") else "streetlight"
    zone = "north" if device in ("sl-03", "bin-02", "bin-03") else "centre"
    return ReportRecord(device=device, seq=_seq[0], kind=kind, zone=zone, type=type, w=w, l=l, m=m, e=e or {},
                        a=a or [], fw=None, received_at=received_at, link="serial:/dev/pts/9",
                        digest="%064x" % _seq[0])


def lamp_window(device: str, w: int, received_at: float, lux: int = 10) -> ReportRecord:
    return record(device, w=w, l=900, m={"lux": lux, "lvl": 40, "lamp": 0}, received_at=received_at)


def last_modified(resp: ClientResponse) -> float:
    return parsedate_to_datetime(resp.headers["Last-Modified"]).timestamp()


async def test_a_past_range_keeps_its_etag_until_a_report_of_its_own_rows_arrives(fleet: Fleet) -> None:
    # 13:00-14:00 of sl-01: four windows and the hour's energy, received by 14:01 (published at 14:05).
    fleet.store.insert_batch([lamp_window("sl-01", R_FROM + i * 900, R_FROM + (i + 1) * 900 + 30) for i in range(4)]
                             + [record("sl-01", type="hour", w=R_FROM, l=H, m={"wh": 42}, received_at=R_TO + 40)])
    clock = [float(R_TO + 600)]  # 14:10
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        first = await c.get(RANGE)
        body = await first.read()
        etag = first.headers["ETag"]
        assert first.status == 200 and len(list(csv.DictReader(io.StringIO(body.decode())))) == 4  # lux, lvl, lamp, wh
        assert last_modified(first) == R_TO + 300  # the 14:05 mark published them

        # Reports of other ranges, all published by 18:05: the 6-hour PIR release 12:00-18:00 (received at
        # 18:00; its row ends 18:00), a late window 12:45-13:00 (its row ends 13:00, at the range's start), the
        # next hour's window, and a lamp_fail alarm inside the range (an alarm's values are in no CSV row).
        fleet.store.insert_batch([
            record("sl-01", w=NOW, l=6 * H, m={"mot": 40}, e={"mot": 500}, received_at=NOW + 6 * H + 20),
            lamp_window("sl-01", R_FROM - 900, NOW + 5 * H),
            lamp_window("sl-02", R_TO, R_TO + 930),
            record("sl-02", type="alarm", w=R_FROM + 1800, l=60, m={}, a=["lamp_fail"], received_at=R_FROM + 1830),
        ])
        clock[0] = float(NOW + 6 * H + 600)  # 18:10: the 18:05 mark published them
        again = await c.get(RANGE, headers={"If-None-Match": etag})
        assert again.status == 304, "a report of another range changed the past range's ETag"
        assert again.headers["ETag"] == etag and last_modified(again) == R_TO + 300
        assert await (await c.get(RANGE)).read() == body

        # A late window of the range itself (sl-02, 13:15-13:30, received at 18:20): a new row, a new ETag,
        # dated by the 19:05 mark that published it.
        fleet.store.insert_batch([lamp_window("sl-02", R_FROM + 900, NOW + 6 * H + 1200)])
        clock[0] = float(NOW + 7 * H + 600)  # 19:10
        late = await c.get(RANGE, headers={"If-None-Match": etag})
        assert late.status == 200 and late.headers["ETag"] != etag
        assert last_modified(late) == NOW + 7 * H + 300
        assert await late.read() != body


async def test_a_late_long_release_ending_in_the_range_changes_it(fleet: Fleet) -> None:
    """A release over 6 h whose period ends in the range is in it (its row ends there), however early it
    starts; so is a daily count ending at the range's end."""
    rng = f"/opendata/readings.csv?from={NOW + 5 * H}&to={NOW + 6 * H}"  # (17:00, 18:00]
    clock = [float(NOW + 6 * H + 600)]
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        before = await c.get(rng)
        fleet.store.insert_batch([record("bin-01", w=NOW, l=6 * H, m={"fill": 70}, received_at=NOW + 6 * H + 700)])
        clock[0] = float(NOW + 7 * H + 600)
        after = await c.get(rng, headers={"If-None-Match": before.headers["ETag"]})
        assert after.status == 200 and "fill" in (await after.text())
        assert last_modified(after) == NOW + 7 * H + 300


async def test_privacy_budget_of_a_past_day_moves_only_with_its_own_releases(fleet: Fleet) -> None:
    day = NOW - NOW % DAY - DAY  # 2026-11-20
    path = f"/opendata/privacy-budget.csv?from={day}&to={day + DAY}"
    clock = [float(NOW + 600)]
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        first = await c.get(path)
        etag, body = first.headers["ETag"], await first.read()
        assert first.status == 200
        # Releases counted on other days: one ending at midnight (18:00-24:00 on the 20th counts on the 21st),
        # one of the 21st, and a window without ε in the day.
        fleet.store.insert_batch([
            record("sl-01", w=day + 18 * H, l=6 * H, m={"mot": 12}, e={"mot": 500}, received_at=NOW + 700),
            record("sl-02", w=NOW, l=6 * H, m={"mot": 14}, e={"mot": 500}, received_at=NOW + 800),
            lamp_window("sl-01", day + 6 * H, NOW + 900),
        ])
        clock[0] = float(NOW + H + 600)
        again = await c.get(path, headers={"If-None-Match": etag})
        assert again.status == 304 and again.headers["ETag"] == etag
        # A late release of the 20th (12:00-18:00): counted there, so a new ETag.
        fleet.store.insert_batch([record("sl-02", w=day + 12 * H, l=6 * H, m={"mot": 9}, e={"mot": 500},
                                         received_at=NOW + H + 900)])
        clock[0] = float(NOW + 2 * H + 600)
        late = await c.get(path, headers={"If-None-Match": etag})
        assert late.status == 200 and late.headers["ETag"] != etag and await late.read() != body
        assert last_modified(late) == NOW + 2 * H + 300


async def test_a_period_not_dividing_the_hour_is_stamped_by_its_rows_end(fleet: Fleet) -> None:
    """40-minute windows: 00:00-00:40 alone ends its hour's row at 01:00; 00:40-01:20 joins that row (the
    hour it starts in) and moves its end to 02:00, out of (00:00, 01:00] and into (01:00, 02:00]. The hour's
    period group then spans 01:00..02:00, so both ranges count both reports (a superset: the stamp cannot
    tell the fields apart, review M1), and the range the row left changes its stamp."""
    h = NOW + 10 * H - (NOW + 10 * H) % 7200  # a whole hour that is a multiple of 2400 s too
    assert h % 2400 == 0
    devices = ["sl-01"]

    def stamp(since: int, until: int) -> range_stamps.RowsStamp:
        return range_stamps.csv_rows_stamp(fleet.queries, since=since, until=until, devices=devices, max_period_s=DAY)

    fleet.store.insert_batch([record("sl-01", w=h, l=2400, m={"lux": 5}, received_at=h + 2500)])
    one = stamp(h, h + H)
    assert (one.count, stamp(h + H, h + 2 * H).count) == (1, 0)
    fleet.store.insert_batch([record("sl-01", w=h + 2400, l=2400, m={"lux": 6}, received_at=h + 4900)])
    moved = stamp(h, h + H)
    assert moved.count == 2 and moved.newest_id > one.newest_id
    assert stamp(h + H, h + 2 * H).count == 2
    assert stamp(h - H, h).count == stamp(h + 2 * H, h + 3 * H).count == 0  # the hours around: nothing
    # The rows' own read agrees: the row of hour h ends at h + 2 h.
    rows = fleet.queries.device_hourly(fields=["lux"], start=h, end=h + H, devices=devices)
    assert rows == []
    assert [r.hour for r in fleet.queries.device_hourly(fields=["lux"], start=h + H, end=h + 2 * H,
                                                        devices=devices)] == [h]


async def test_a_late_window_adding_a_field_row_changes_the_etag(fleet: Fleet) -> None:
    """Review M1 (reviewer's reproduction): 40-minute windows, the 00:40-01:20 one carrying ``lvl`` only
    arrives first (its row of hour 00 ends 02:00); the late 00:00-00:40 window carries ``lux`` alone, a new
    ``lux`` row of hour 00 ending 01:00, in (00:00, 01:00]. Before the fix its period group ended 02:00
    with the other window's, so it was not counted: same ETag, 304 for a changed body."""
    h = NOW - NOW % 7200 - 4 * H  # a past hour, a multiple of 2400 s too
    assert h % 2400 == 0
    rng = f"/opendata/readings.csv?from={h}&to={h + H}"
    fleet.store.insert_batch([record("sl-01", w=h + 2400, l=2400, m={"lvl": 40}, received_at=NOW - 100)])
    clock = [float(NOW + 600)]
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        first = await c.get(rng, headers={"Accept-Encoding": "identity"})
        body0, etag = await first.read(), first.headers["ETag"]
        fleet.store.insert_batch([record("sl-01", w=h, l=2400, m={"lux": 5}, received_at=NOW + 700)])
        clock[0] = float(NOW + H + 600)  # the next mark published it
        cond = await c.get(rng, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
        assert cond.status == 200 and cond.headers["ETag"] != etag
        body1 = await cond.read()


        def lux_values(text: bytes) -> int:  # the fed fleet's own windows of the hour are in the row too
            return sum(int(r["values"]) for r in csv.DictReader(io.StringIO(text.decode()))
                       if (r["device"], r["field"]) == ("sl-01", "lux"))

        assert lux_values(body1) == lux_values(body0) + 1


async def test_one_field_under_two_periods_in_an_hour_changes_the_stamp(fleet: Fleet) -> None:
    """Review M1: ``lux`` of one hour under a 2-hour period and a 15-minute one (a policy change): the row
    ends at the longer one's end, and the 15-minute value (its own end an hour earlier) changes its count
    and sum: the stamp of the row's range moves too."""
    h = NOW - NOW % 7200 + 6 * 7200

    def stamp(since: int, until: int) -> range_stamps.RowsStamp:
        return range_stamps.csv_rows_stamp(fleet.queries, since=since, until=until, devices=["sl-01"],
                                           max_period_s=DAY)

    def body(since: int, until: int) -> list[Any]:
        return fleet.queries.device_hourly(fields=["lux"], start=since, end=until, devices=["sl-01"], max_period_s=DAY)

    fleet.store.insert_batch([record("sl-01", w=h, l=7200, m={"lux": 9}, received_at=h + 7300)])
    b0, s0 = body(h + H, h + 2 * H), stamp(h + H, h + 2 * H)
    fleet.store.insert_batch([record("sl-01", w=h, l=900, m={"lux": 3}, received_at=h + 9000)])
    b1, s1 = body(h + H, h + 2 * H), stamp(h + H, h + 2 * H)
    assert b0 != b1 and s0 != s1
    # The other way round: the longer period arriving later moves the row out of (h, h + 1 h].
    fleet.store.insert_batch([record("sl-01", w=h + 2 * H, l=900, m={"lux": 4}, received_at=h + 3 * H)])
    b2, s2 = body(h + 2 * H, h + 3 * H), stamp(h + 2 * H, h + 3 * H)
    fleet.store.insert_batch([record("sl-01", w=h + 2 * H, l=7200, m={"lux": 8}, received_at=h + 4 * H + 100)])
    b3, s3 = body(h + 2 * H, h + 3 * H), stamp(h + 2 * H, h + 3 * H)
    assert b2 and not b3 and s2 != s3


def test_the_stamp_cache_holds_a_stamp_only_under_its_data_version() -> None:
    cache = range_stamps.StampCache(size=2)
    one = range_stamps.RowsStamp(data_version=3, newest_id=10, count=4, newest_at=1.0)
    cache.put(("rows", 1), one)
    assert cache.get(("rows", 1), 3) is one
    assert cache.get(("rows", 1), 4) is None  # a retention change since: read again
    assert cache.get(("rows", 2), 3) is None
    cache.put(("rows", 2), one)
    cache.get(("rows", 1), 3)  # used last: kept
    cache.put(("rows", 3), one)
    assert cache.get(("rows", 2), 3) is None and cache.get(("rows", 1), 3) is one


async def test_a_repeated_request_reads_no_report_for_its_stamp(fleet: Fleet, monkeypatch: Any) -> None:
    """Review L1: the stamp read every report of the range on every request, a 304 too (~1 s for a month of
    100 devices). It is kept per query, mark bound and data version: read again only when one moves."""
    reads: list[int] = []
    real = range_stamps.csv_rows_stamp

    def counted(*args: Any, **kwargs: Any) -> range_stamps.RowsStamp:
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(range_stamps, "csv_rows_stamp", counted)
    fleet.store.insert_batch([lamp_window("sl-01", R_FROM + i * 900, R_FROM + (i + 1) * 900 + 30) for i in range(4)])
    clock = [float(R_TO + 600)]  # 14:10
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        first = await c.get(RANGE)
        etag, body = first.headers["ETag"], await first.read()
        assert first.status == 200 and len(reads) == 1
        again = await c.get(RANGE, headers={"If-None-Match": etag})
        assert again.status == 304 and len(reads) == 1
        # A late window of the range, received after the 14:05 mark: not published yet, so nothing moves.
        fleet.store.insert_batch([lamp_window("sl-02", R_FROM, R_TO + 700)])
        assert (await c.get(RANGE, headers={"If-None-Match": etag})).status == 304 and len(reads) == 1
        # The 15:05 mark publishes it: a new bound, read again, a new ETag.
        clock[0] = float(R_TO + H + 600)
        late = await c.get(RANGE, headers={"If-None-Match": etag})
        assert late.status == 200 and late.headers["ETag"] != etag and await late.read() != body
        assert len(reads) == 2
        etag = late.headers["ETag"]
        assert (await c.get(RANGE, headers={"If-None-Match": etag})).status == 304 and len(reads) == 2
        # Retention removes values (the data version moves), the mark unchanged: read again.
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, now=NOW + 3 * DAY) > 0
        gone = await c.get(RANGE, headers={"If-None-Match": etag})
        assert gone.status == 200 and gone.headers["ETag"] != etag and len(reads) == 3
