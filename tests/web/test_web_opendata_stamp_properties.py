"""Review M1, as a property: whenever the readings CSV's body (``ReportQueries.device_hourly``) of a range
changes, its stamp (:func:`gateway.web.range_stamps.csv_rows_stamp`, what the ETag is made of) changes too.

The other direction is not asked: a stamp that moves with the body unchanged costs a re-download, a body
that moves under an unchanged stamp leaves clients with stale data behind a 304. Reports of random periods
(15, 20, 40 minutes, 1, 2 and 6 hours: dividing the hour, whole hours, neither), field subsets, withheld
values, zones and publication bounds arrive in a random order into a real store; after each arrival every
range of one to three whole hours around them is compared, with every field and with one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.storage import ReportQueries, ReportRecord, ReportStore
from gateway.web import range_stamps

EXAMPLES = 200 if os.environ.get("CIVICEDGE_FULL") == "1" else 30
H = 3600
DAY = 86400
BASE = 1795262400 - 1795262400 % DAY  # a UTC midnight
FIELDS = ("lux", "lvl", "mot")
PERIODS = (900, 1200, 2400, 3600, 7200, 6 * H)
# Ranges (since, until] of one to three whole hours from an hour before BASE to 9 h after it.
RANGES = [(BASE + a * H, BASE + b * H) for a in range(-1, 9) for b in range(a + 1, min(a + 4, 10))]


@st.composite
def report(draw: st.DrawFn) -> tuple[int, int, str, dict[str, int], dict[str, int]]:
    """(period start, period length, zone, m, e) of one value report of device ``d``: a start that is a
    multiple of its period (docs/protocol.md), within BASE's first three hours."""
    length = draw(st.sampled_from(PERIODS))
    w = BASE + length * draw(st.integers(0, max(0, 3 * H // length - 1)))
    fields = draw(st.sets(st.sampled_from(FIELDS), min_size=1))
    withheld = draw(st.sets(st.sampled_from(sorted(fields))))
    m = {f: draw(st.integers(0, 9)) for f in sorted(fields - withheld)}
    e = {f: 500 for f in sorted(withheld)}
    return w, length, draw(st.sampled_from(("c", "n"))), m, e


def _snapshot(queries: ReportQueries, max_id: int | None) -> dict[tuple[Any, ...], tuple[bytes, Any]]:
    out: dict[tuple[Any, ...], tuple[bytes, Any]] = {}
    for since, until in RANGES:
        for zone in (None, "c"):
            stamp = range_stamps.csv_rows_stamp(queries, since=since, until=until, devices=["d"], max_period_s=DAY,
                                                max_id=max_id, zone=zone)
            for fields in (list(FIELDS), ["lux"]):
                rows = queries.device_hourly(fields=fields, start=since, end=until, devices=["d"], zone=zone,
                                             max_period_s=DAY, max_id=max_id)
                body = hashlib.sha256(repr(rows).encode()).digest()
                out[(since, until, zone, tuple(fields))] = (body, stamp)
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports=st.lists(report(), min_size=1, max_size=10, unique_by=lambda r: (r[0], r[1])),
       bound_lag=st.integers(0, 2))
def test_the_body_never_changes_under_the_same_stamp(reports: list[tuple[int, int, str, dict[str, int],
                                                                         dict[str, int]]], bound_lag: int) -> None:
    # The list's order is the arrival order. ``bound_lag``: the stamp and the body are read up to a
    # publication bound that many reports behind the newest (0: no bound), as at a CSV mark.
    with tempfile.TemporaryDirectory(prefix="stamp-prop-") as tmp:
        db = Path(tmp) / "r.sqlite"
        store = ReportStore(db, gateway_id="gw")
        queries = ReportQueries(db)
        try:
            ids: list[int] = []
            before = _snapshot(queries, None)
            for seq, (w, length, zone, m, e) in enumerate(reports, start=1):
                store.insert_batch([ReportRecord(device="d", seq=seq, kind="streetlight", zone=zone, type="win", w=w,
                                                 l=length, m=m, e=e, a=[], fw=None, received_at=float(BASE + DAY + seq),
                                                 link="x", digest="%064x" % seq)])
                ids.append(queries.last_report_id())
                bound = None if bound_lag == 0 else (ids[-1 - bound_lag] if len(ids) > bound_lag else 0)
                after = _snapshot(queries, bound)
                for key, (body, stamp) in after.items():
                    if body != before[key][0]:
                        assert stamp != before[key][1], (
                            "range %s: the body changed after report %d (w=%+d s, l=%d, m=%s, e=%s), its stamp did not"
                            % (key, seq, w - BASE, length, m, e))
                before = after
        finally:
            queries.close()
            store.close()
