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
    hour it starts in) and moves its end to 02:00, out of (00:00, 01:00] and into (01:00, 02:00]."""
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
    assert (moved.count, moved.newest_id) == (0, 0)
    assert stamp(h + H, h + 2 * H).count == 2
    # The rows' own read agrees: the row of hour h ends at h + 2 h.
    rows = fleet.queries.device_hourly(fields=["lux"], start=h, end=h + H, devices=devices)
    assert rows == []
    assert [r.hour for r in fleet.queries.device_hourly(fields=["lux"], start=h + H, end=h + 2 * H,
                                                        devices=devices)] == [h]
