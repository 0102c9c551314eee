"""Review L1 (rev-fresh): a retention removal from a report the CSV had not published yet (received after the
last hh:05 mark) dated its day's ranges before that report's own mark, though no body served had changed: the
removal's minute showed on a range whose body was byte-identical. Only removals from reports the CSV may have
published (received before the mark at the removal, or at or below its saved bound) are recorded now; such a
report is dated by its own mark once published.

The real app over the real SQLite store of the fed fleet (tests/web/conftest.py), retention run by the store.
"""

from __future__ import annotations

from .support import Fleet
from .test_web_opendata_publishing import app_client
from .test_web_opendata_range_etag import last_modified, lamp_window
from .test_web_opendata_removal_minute import D, H, R, X  # an old day's range, the day the passes run


async def test_a_removal_from_a_report_not_yet_published_leaves_the_date_until_its_mark(fleet: Fleet) -> None:
    # P: published long ago; a pass at 10:30 removes its lux (dated 10:31).
    fleet.store.insert_batch([lamp_window("sl-01", D + 13 * H, D + 14 * H + 60)])
    clock = [float(X + 9 * H)]
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        assert (await c.get(R)).status == 200  # the CSV publishes P (its saved bound)
        fleet.store.removal_clock = lambda: float(X + 10 * H + 1800)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(X + 10 * H)) > 0
        clock[0] = float(X + 12 * H + 1200)  # 12:20 (the last CSV mark: 12:05)
        r1 = await c.get(R)
        b1 = await r1.read()
        assert r1.status == 200 and last_modified(r1) == X + 10 * H + 1860
        # L: a late report of the same range, received 12:25, after the 12:05 mark (published at 13:05), and a
        # pass at 12:30 that removes its lux.
        fleet.store.insert_batch([lamp_window("sl-01", D + 13 * H + 900, X + 12 * H + 1500)])
        fleet.store.removal_clock = lambda: float(X + 12 * H + 1800)
        assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(X + 12 * H + 1800)) > 0
        clock[0] = float(X + 12 * H + 2400)  # 12:40, before the 13:05 mark
        r2 = await c.get(R)
        assert r2.status == 200 and await r2.read() == b1
        # Before the fix: 12:31 (the removal's), for the same body.
        assert last_modified(r2) == last_modified(r1)
        clock[0] = float(X + 13 * H + 360)  # 13:06: L is published, dated by its own mark
        r3 = await c.get(R)
        assert r3.status == 200 and await r3.read() != b1
        assert last_modified(r3) == X + 13 * H + 300 > last_modified(r1)
