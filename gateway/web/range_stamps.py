"""What an open-data CSV export of a past range is made of, read cheaply for its ``ETag``/``Last-Modified``.

The exports are streamed a day at a time, so their ``ETag`` names what they are made of instead of hashing
their bytes (a 304 reads no value). That stamp must cover exactly the reports whose values the range's
body holds: a report for another range must leave it as it was, so a past range keeps answering 304
(QA MEDIUM: every report with a period start from ``since`` less the longest period on was counted, so
the 6-hour ``mot``/``fill`` releases ending at 12:00 and the daily ``lid`` ones moved the stamp of every
range they merely started in, body byte-identical).

* :func:`csv_rows_stamp`, the readings CSV (``ReportQueries.device_hourly``): a row is a device's UTC hour,
  stored zone and field, and it is in the range ``(since, until]`` when its end, the latest period end of
  its values rounded up to a whole hour, is. The stamp reads the index and the rows but no JSON, so it
  cannot tell the fields apart: it groups an hour's value reports of a device and zone by their period
  ``l`` instead, each group spanning its reports' rounded ends ``[lo, hi]``, and counts all of the hour's
  reports when one of its groups' spans meets the range, else none. It gives the newest counted report and
  how many are counted. That covers every change of the body (review M1: grouping by ``l`` alone missed a
  late 00:00-00:40 window adding a ``lux`` row to (00:00, 01:00] when the 00:40 window, carrying ``lvl``
  only, had moved its group's end to 02:00; and one field under two periods in an hour, a policy change):
  a row ends at the end of one of its reports, which lies in its period group's span, so every report of
  a row in the range is counted; a report added to an hour whose row was or becomes in the range is
  counted (spans only widen), so the newest id moves (ids only grow); a report added to an hour counted
  neither before nor after changes no row in the range. The price is a superset: an hour holding two
  periods (a 6-hour ``mot`` release beside the 15-minute windows) is counted in the ranges of both ends,
  so the range holding the windows' row changes its stamp once more when the release arrives (the body
  does not; a re-download, never a stale 304), while a range the release merely starts before is left as
  it was (the QA MEDIUM above).
* :func:`spend_stamp`, the privacy-budget CSV (``ReportQueries.privacy_spend``): each release counts on
  the day its period ends, so the reports whose ``e`` is not empty and whose period ends in the days.

Both are one statement (one snapshot, with the store's data version: retention removals) on the report
store's read connection, through ``reports_device_w`` per device, as the exports' own reads; a month of
a hundred devices takes seconds, so :class:`StampCache` keeps each stamp, exactly, and a repeated request
(a 304) reads the data version alone.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from gateway.storage.queries import DATA_VERSION_COUNTER, VALUE_REPORT_TYPES, ReportQueries

HOUR_S = 3600
_MAX_ID = 2**63 - 1
_VALUE_TYPES = ", ".join("'%s'" % t for t in VALUE_REPORT_TYPES)
# ?1 since, ?2 until, ?3 the earliest period start (a whole hour) of a row ending after since, ?4 the id bound,
# ?5 the devices (JSON list), ?6 the zone (NULL: any), ?7 the data version's counter, ?8 the end of the hours
# rows of the range can start in (until rounded up to an hour). A value report without a value or a withheld
# one (m and e empty) has no row. The reports are grouped by device, UTC hour, stored zone and period
# (``lg``): a group's rounded period ends span [lo, hi], and every row of its hour (``device_hourly`` groups by
# the field instead, which needs the JSON) ends at one of its groups' ends. An hour's reports are all counted
# when one of its period groups spans into (since, until] (``hg``), else none: see the module's docstring for
# why that covers every change of the body.
_ROW_END = "((w + l + 3599) / 3600) * 3600"
_ROWS_SQL = """
WITH lg AS (
  SELECT device, w / 3600 AS hr, zone, MAX(id) AS top, COUNT(*) AS n, MIN(%(end)s) AS lo, MAX(%(end)s) AS hi
  FROM reports
  WHERE w >= ?3 AND w < ?8 AND +id <= ?4 AND type IN (%(types)s) AND (m != '{}' OR e != '{}')
    AND device IN (SELECT value FROM json_each(?5)) AND (?6 IS NULL OR zone = ?6)
  GROUP BY device, hr, zone, l),
hg AS (
  SELECT MAX(top) AS top, SUM(n) AS n FROM lg GROUP BY device, hr, zone HAVING MAX(lo <= ?2 AND hi > ?1))
SELECT (SELECT value FROM counters WHERE name = ?7), g.top, g.n, (SELECT received_at FROM reports WHERE id = g.top)
FROM (SELECT MAX(top) AS top, SUM(n) AS n FROM hg) g
""" % {"types": _VALUE_TYPES, "end": _ROW_END}
# ?1 the first day, ?2 the end of the days, ?3 the earliest period start ending in them, ?4 ?5 ?6 as above:
# the reports privacy_spend reads (a non-empty e, period end in [?1, ?2)).
_SPEND_SQL = """
SELECT (SELECT value FROM counters WHERE name = ?7), g.top, g.n,
       (SELECT received_at FROM reports WHERE id = g.top)
FROM (SELECT MAX(id) AS top, COUNT(*) AS n FROM reports
      WHERE w >= ?3 AND w < ?2 AND w + l >= ?1 AND w + l < ?2 AND +id <= ?4 AND e != '{}'
        AND device IN (SELECT value FROM json_each(?5)) AND (?6 IS NULL OR zone = ?6)) g
"""


@dataclass(frozen=True)
class RowsStamp:
    """What a CSV export's body is made of, as far as its ``ETag`` tells.

    Attributes:
        data_version: removals of stored values so far (retention runs that removed any).
        newest_id: the highest id of the reports the body holds (0: none).
        count: how many reports the body holds (their values' rows are in the range).
        newest_at: the ``received_at`` of the newest (None: none).
    """

    data_version: int
    newest_id: int
    count: int
    newest_at: float | None


def _stamp(queries: ReportQueries, sql: str, params: tuple[Any, ...], *more: Any) -> RowsStamp:
    # ReportQueries' own read path (its thread's read-only connection, statement clock, damage latch and
    # errors): the storage read API has no such query of its own yet.
    rows = queries._rows(sql, params + (DATA_VERSION_COUNTER,) + more)  # noqa: SLF001
    version, top, count, at = rows[0]
    return RowsStamp(data_version=int(version or 0), newest_id=int(top or 0), count=int(count or 0),
                     newest_at=float(at) if at is not None else None)


def csv_rows_stamp(queries: ReportQueries, *, since: int, until: int, devices: Sequence[str], max_period_s: int,
                   max_id: int | None = None, zone: str | None = None) -> RowsStamp:
    """The stamp of the readings CSV's rows ending in ``(since, until]`` (whole hours), of ``devices``
    (and ``zone``), of the reports with an id up to ``max_id``; ``max_period_s``: the longest period a
    value may have (how far before ``since`` a row ending after it may begin)."""
    earliest = (int(since) - int(max_period_s) - HOUR_S) // HOUR_S * HOUR_S  # whole hours: whole groups
    return _stamp(queries, _ROWS_SQL, (int(since), int(until), earliest, _MAX_ID if max_id is None else int(max_id),
                                       json.dumps(list(devices)), zone), -(-int(until) // HOUR_S) * HOUR_S)


def spend_stamp(queries: ReportQueries, *, first: int, end: int, devices: Sequence[str], max_period_s: int,
                max_id: int, zone: str | None = None) -> RowsStamp:
    """The stamp of the privacy-budget CSV's stored releases for the days ``[first, end)`` (UTC midnights;
    a release counts on the day its period ends), of ``devices`` (and ``zone``), ids up to ``max_id``.
    Repeat releases are not in it: their bound is stamped apart (a rowid)."""
    return _stamp(queries, _SPEND_SQL, (int(first), int(end), int(first) - int(max_period_s), int(max_id),
                                        json.dumps(list(devices)), zone))


class StampCache:
    """The stamps read last, each under everything that decides it, so a repeated request (a 304 above all)
    reads the store's data version alone instead of the range's reports (review L1: ~1 s for a month of 100
    devices, on every request).

    Exact, not a guess: a stamp is decided by its query (the range, devices, zone and longest period, all in
    ``key``), the id bound of the publication mark (in ``key`` too) and the stored reports with ids up to that
    bound. A report stored later has a higher id than any bound read before it (ids only grow, retention keeps
    the highest-id row), and only retention changes or removes a stored report, counting each such change in
    the store's data version in the same transaction. So an entry is used only under the data version it was
    read with, which :meth:`get` is given as read just before. Kept in memory only, the newest ``size``.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = max(1, size)
        self._held: OrderedDict[tuple[Any, ...], RowsStamp] = OrderedDict()

    def get(self, key: tuple[Any, ...], data_version: int) -> RowsStamp | None:
        """The stamp held for ``key`` if it was read under ``data_version`` (the store's now), else None."""
        held = self._held.get(key)
        if held is None or held.data_version != data_version:
            return None
        self._held.move_to_end(key)
        return held

    def put(self, key: tuple[Any, ...], stamp: RowsStamp) -> None:
        """Hold ``stamp`` (read under its own data version) for ``key``; the least recently used goes."""
        self._held[key] = stamp
        self._held.move_to_end(key)
        while len(self._held) > self._size:
            self._held.popitem(last=False)
