"""Review M3 (rev-fresh): a damaged ``retention_removed`` meta value that json reads (``1e999``, ``Infinity``)
or with non-ASCII digits (``²``) raised OverflowError / ValueError in its decode: every CSV range answered 500
and every retention pass failed. Now every range is answered, dated as late as its ``Date`` (never earlier),
and the next pass rewrites the value.

The real app over the real SQLite store of the fed fleet (tests/web/conftest.py), retention run by the store.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from gateway.storage import retention_removals

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client
from .test_web_opendata_range_etag import last_modified, lamp_window

H, DAY = 3600, 86400
TODAY = NOW - NOW % DAY
D = TODAY - 3 * DAY
R = f"/opendata/readings.csv?from={D + 13 * H}&to={D + 14 * H}"
X = TODAY + 6 * DAY


@pytest.mark.parametrize("bad", ['{"d":[[20000,1e999]],"f":null}', '{"d":[[20000,Infinity]],"f":null}',
                                 "x\u00b2", '{"d":[[1,2]],"f":null'])
async def test_a_damaged_record_of_removals_never_fails_a_range_or_a_pass(fleet: Fleet, bad: str) -> None:
    fleet.store.insert_batch([lamp_window("sl-01", D + 13 * H + i * 900, D + 14 * H + 60) for i in range(4)])
    with fleet.store._writing("test: a damaged value") as conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (retention_removals.META_KEY, bad))
    async with app_client(fleet, clock=lambda: float(X + 12 * H)) as c:
        r = await c.get(R)
        assert r.status == 200, await r.text()  # before the fix: 500
        # dated as late as it can be: its Date (the host's wall clock), rounded down to the minute
        date = parsedate_to_datetime(r.headers["Date"]).timestamp()
        assert date - 60 < last_modified(r) <= date
    fleet.store.removal_clock = lambda: float(X + 12 * H + 1800)
    assert fleet.store.apply_retention({("streetlight", "lux"): 1}, float(D + DAY + 14 * H)) > 0  # not failing
    async with app_client(fleet, clock=lambda: float(X + 13 * H)) as c:
        r = await c.get(R)
        assert r.status == 200 and last_modified(r) == X + 12 * H + 1860  # rewritten: a date again
