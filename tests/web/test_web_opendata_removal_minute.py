"""Review H1 (rev-fresh): two retention removals from one CSV range within one publication hour were both dated
hh:06 (the minute after the hour's mark), so a copy fetched after the first kept its ``Last-Modified`` after the
second: ``wget -N`` / ``curl -z`` kept values past their retention. A pass runs every ``[retention] interval_s``
(as short as 10 minutes), at every start, and a large pass in 2,000-row batches with requests served between
them. A removal is now dated by the minute after its own minute (never earlier than hh:06), capped by ``Date``.

The real app over the real SQLite store of the fed fleet (tests/web/conftest.py), retention run by the store.
"""

from __future__ import annotations

import csv
import io

from gateway.web.publication import csv_removal_mark

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client
from .test_web_opendata_range_etag import last_modified, lamp_window

H, DAY = 3600, 86400
TODAY = NOW - NOW % DAY
D = TODAY - 3 * DAY                      # an old day no other test data is in
R = f"/opendata/readings.csv?from={D + 13 * H}&to={D + 14 * H}"
X = TODAY + 6 * DAY                      # the day the passes run


def _lux_rows(text: str) -> int:
    """How many lux values the hour's rows aggregate (its ``values`` column; 0: no lux row)."""
    return sum(int(row["values"]) for row in csv.DictReader(io.StringIO(text)) if row["field"] == "lux")


def test_a_removal_is_dated_by_the_minute_after_its_own_never_before_the_marks_minute() -> None:
    assert csv_removal_mark(X + 12 * H + 1800) == X + 12 * H + 1860          # 12:30:00 -> 12:31
    assert csv_removal_mark(X + 12 * H + 1859.9) == X + 12 * H + 1860        # 12:30:59 -> 12:31
    assert csv_removal_mark(X + 12 * H + 300) == X + 12 * H + 360            # at the mark: 12:06
    assert csv_removal_mark(X + 12 * H + 120) == X + 12 * H + 180            # 12:02 (the 11:05 mark's hour)


async def test_two_removals_from_one_range_within_one_hour_each_move_its_last_modified(fleet: Fleet) -> None:
    # sl-01's four lux windows of 13:00-14:00 on day D, received 14:01 (published at 14:05 that day).
    fleet.store.insert_batch([lamp_window("sl-01", D + 13 * H + i * 900, D + 14 * H + 60) for i in range(4)])
    clock = [float(X + 12 * H + 1500)]    # 12:25
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        r0 = await c.get(R)
        assert r0.status == 200 and _lux_rows(await r0.text()) == 4
        assert last_modified(r0) == D + 14 * H + 300

        # 12:30: a pass removes the first two windows' lux (lux kept a day; cut-off 13:30 of day D).
        fleet.store.removal_clock = lambda: float(X + 12 * H + 1800)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(D + DAY + 13 * H + 1800)) > 0
        clock[0] = float(X + 12 * H + 1900)  # 12:31:40: a mirror fetches
        r1 = await c.get(R)
        t1 = await r1.text()
        assert r1.status == 200 and _lux_rows(t1) == 2
        assert last_modified(r1) == X + 12 * H + 1860  # 12:31 (before: 12:06)

        # 12:40: the next pass removes the other two.
        fleet.store.removal_clock = lambda: float(X + 12 * H + 2400)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(D + DAY + 14 * H)) > 0
        clock[0] = float(X + 12 * H + 3000)  # 12:50
        r2 = await c.get(R)
        t2 = await r2.text()
        assert r2.status == 200 and _lux_rows(t2) == 0 and t2 != t1
        # Before the fix both were 12:06: the 12:31 copy, with two lux values past retention, was kept.
        assert last_modified(r2) == X + 12 * H + 2460 > last_modified(r1)

        # curl -z with the 12:31 copy's date downloads the new body.
        r3 = await c.get(R, headers={"If-Modified-Since": r1.headers["Last-Modified"]})
        assert r3.status == 200 and _lux_rows(await r3.text()) == 0


async def test_a_removal_in_the_minute_of_a_fetch_still_moves_its_date(fleet: Fleet) -> None:
    # A fetch at 12:30:10 after a removal at 12:20:10, a removal at 12:30:20 (the fetch's minute), a fetch at
    # 12:30:50: dated 12:31, later than the first copy's 12:21 (capped by the answer's Date, the host's wall
    # clock: tests/web/test_web_opendata_retention_dates.py covers the cap).
    fleet.store.insert_batch([lamp_window("sl-01", D + 13 * H + i * 900, D + 14 * H + 60) for i in range(4)])
    clock = [float(X + 12 * H + 900)]
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        assert (await c.get(R)).status == 200  # published (12:15)
        fleet.store.removal_clock = lambda: float(X + 12 * H + 1210)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(D + DAY + 13 * H + 1800)) > 0
        clock[0] = float(X + 12 * H + 1810)
        r1 = await c.get(R)
        assert r1.status == 200 and last_modified(r1) == X + 12 * H + 1260  # 12:21, the first removal's
        fleet.store.removal_clock = lambda: float(X + 12 * H + 1820)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(D + DAY + 14 * H)) > 0
        clock[0] = float(X + 12 * H + 1850)
        r2 = await c.get(R)
        assert r2.status == 200 and _lux_rows(await r2.text()) == 0
        assert last_modified(r1) < last_modified(r2) == X + 12 * H + 1860
