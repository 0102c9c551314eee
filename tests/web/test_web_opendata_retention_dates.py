"""Finding: when retention removed values of a range of the CSV exports, their ETag changed but their
Last-Modified did not move forward (the store counted removals, not when), so a client deciding by date alone
(``wget -N``, ``curl -z``) kept a copy holding values retention removed. The store now records when it removed
values, per UTC day of their periods' start (gateway.storage.retention_removals), and an affected range is
dated no earlier than the minute after the CSV mark before that removal.

The real app over the real SQLite store of the fed fleet (tests/web/conftest.py), retention run by the store
itself (ReportStore.apply_retention); its removal clock set, as the answers' Date is the wall clock.
"""

from __future__ import annotations

import csv
import io
from email.utils import parsedate_to_datetime

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client
from .test_web_opendata_range_etag import last_modified, lamp_window, record

H = 3600
DAY = 86400
A_FROM, A_TO = NOW + H, NOW + 2 * H  # (13:00, 14:00] of NOW's day: retention removes its lux
B_FROM, B_TO = NOW + 5 * DAY, NOW + 5 * DAY + H  # five days on: inside the retention
TODAY = NOW - NOW % DAY
A = f"/opendata/readings.csv?from={A_FROM}&to={A_TO}"
B = f"/opendata/readings.csv?from={B_FROM}&to={B_TO}"
SPEND = f"/opendata/privacy-budget.csv?from={TODAY}&to={TODAY + DAY}"
REMOVED_AT = NOW + 6 * DAY + 1800  # 12:30, six days on: the removal is dated 12:31 (the minute after its own)


def _fields(text: str) -> set[str]:
    return {row["field"] for row in csv.DictReader(io.StringIO(text))}


async def test_retention_removing_values_of_a_range_moves_its_last_modified_forward(fleet: Fleet) -> None:
    fleet.store.insert_batch(
        [lamp_window("sl-01", A_FROM + i * 900, A_FROM + (i + 1) * 900 + 30) for i in range(4)]
        + [record("sl-01", w=NOW, l=6 * H, m={"mot": 12}, e={"mot": 500}, received_at=NOW + 6 * H + 60)]
        + [lamp_window("sl-01", B_FROM + i * 900, B_FROM + (i + 1) * 900 + 30) for i in range(4)])
    clock = [float(NOW + 6 * DAY + 600)]
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        a0, b0, s0 = await c.get(A), await c.get(B), await c.get(SPEND)
        assert a0.status == b0.status == s0.status == 200
        assert "lux" in _fields(await a0.text()) and "mot" in await s0.text()
        assert last_modified(a0) == A_TO + 300  # the 14:05 mark published its newest report
        assert last_modified(b0) == B_TO + 300
        assert last_modified(s0) == NOW + 6 * H + 300  # the mot release, received 18:01, published 18:05

        # lux and mot kept a day, the pass run three days on: A's lux and the day's mot release go, B's stay.
        fleet.store.removal_clock = lambda: float(REMOVED_AT)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1, ("streetlight", "mot"): 1},
                                           float(NOW + 3 * DAY)) > 0
        clock[0] = float(NOW + 6 * DAY + 2400)

        a1 = await c.get(A, headers={"If-None-Match": a0.headers["ETag"]})
        assert a1.status == 200 and "lux" not in _fields(await a1.text())
        # Before the fix: still 14:05 (a wget -N copy with lux kept). Now: the minute after the removal's.
        assert last_modified(a1) == NOW + 6 * DAY + 1860 > last_modified(a0)
        s1 = await c.get(SPEND, headers={"If-None-Match": s0.headers["ETag"]})
        assert s1.status == 200 and "mot" not in await s1.text()
        assert last_modified(s1) == NOW + 6 * DAY + 1860 > last_modified(s0)

        # A range retention did not touch keeps its date (its ETag moves with the store's data version).
        b1 = await c.get(B)
        assert b1.status == 200 and "lux" in _fields(await b1.text())
        assert last_modified(b1) == last_modified(b0) == B_TO + 300

        # Revalidating by ETag still answers 304, with the same date.
        a2 = await c.get(A, headers={"If-None-Match": a1.headers["ETag"]})
        assert a2.status == 304 and a2.headers["ETag"] == a1.headers["ETag"]
        assert a2.headers["Last-Modified"] == a1.headers["Last-Modified"]

        # Never later than the answer's Date: a removal dated by a clock far ahead (2100) is capped by it.
        fleet.store.removal_clock = lambda: 4102444800.0
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(NOW + 7 * DAY)) > 0
        b2 = await c.get(B)
        assert b2.status == 200 and "lux" not in _fields(await b2.text())
        date = parsedate_to_datetime(b2.headers["Date"]).timestamp()
        assert last_modified(b2) <= date < 4102444800 and last_modified(b2) > last_modified(b1)
