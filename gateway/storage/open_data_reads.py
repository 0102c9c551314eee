"""The report store's reads for the public open data: what a range of periods is made of (the stamps its
``ETag``/``Last-Modified`` are made of), where the stored periods begin, which devices reported up to a
publication bound, and the ε the devices spent (the privacy-budget CSV).

Functions of a read connection, each the body of one :class:`gateway.storage.queries.ReportQueries` method
(the public API: its thread's read-only connection, statement limit, damage latch and errors); the
statements of one function run in one read transaction
(:func:`gateway.storage.read_transaction.one_read_transaction`).

The CSV range stamps. The exports are streamed a day at a time, so their ``ETag`` names what they are made of
instead of hashing their bytes (a 304 reads no value). That stamp must cover exactly the reports whose values
the range's body holds: a report for another range must leave it as it was, so a past range keeps answering
304 (QA MEDIUM: every report with a period start from ``since`` less the longest period on was counted, so the
6-hour ``mot``/``fill`` releases ending at 12:00 and the daily ``lid`` ones moved the stamp of every range
they merely started in, body byte-identical).

* :func:`csv_rows_stamp`, the readings CSV (:meth:`ReportQueries.device_hourly`): a row is a device's UTC
  hour, stored zone and field, and it is in the range ``(since, until]`` when its end, the latest period end of
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
* :func:`spend_stamp`, the privacy-budget CSV (:meth:`ReportQueries.privacy_spend`): each release counts on
  the day its period ends, so the reports whose ``e`` is not empty and whose period ends in the days.

Both are one statement (one snapshot, with the store's data version: retention removals, and when retention
last removed values from the days of period start the range reads, :mod:`gateway.storage.retention_removals`,
which dates the range no earlier than that) on the report
store's read connection, through ``reports_device_w`` per device, as the exports' own reads; a month of
a hundred devices takes seconds, so the web layer keeps each stamp, exactly
(:class:`gateway.web.range_stamps.StampCache`), and a repeated request (a 304) reads the data version alone.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Sequence

from gateway.storage.read_models import (
    DATA_VERSION_COUNTER,
    MAX_ID,
    VALUE_TYPES_SQL,
    DaySpend,
    RangeStamp,
    RowsStamp,
)
from gateway.storage import retention_removals
from gateway.storage.read_transaction import one_read_transaction

HOUR_S = 3600

# Whether a device has a report with an id up to ?2: its (device, w) index entries hold the ids.
_DEVICE_REPORTED_SQL = "SELECT 1 FROM reports INDEXED BY reports_device_w WHERE device = ? AND id <= ? LIMIT 1"
# The earliest period start at or after ?1 of the value reports (what the open data publishes: not the
# boot reports a board sends before its clock is set, their period near 2000-01-01 or 1970, nor alarms)
# with an id up to ?2, of devices not in the JSON list ?3: the period index walked from ?1, stopping at
# the first such report (the first entry, as a rule: ids follow the arrival, and alarms and excluded
# devices are few).
_OLDEST_W_SQL = ("SELECT w FROM reports INDEXED BY reports_w WHERE w >= ?1 AND id <= ?2 AND type IN (%s)"
                 " AND device NOT IN (SELECT value FROM json_each(?3)) ORDER BY w LIMIT 1" % VALUE_TYPES_SQL)
# The newest report (id, received_at) with a period start in [?1, ?2) and an id up to ?3: the ids are
# in the period index, so only the newest row is read.
_RANGE_NEWEST_SQL = ("SELECT id, received_at FROM reports WHERE id = (SELECT MAX(id) FROM reports INDEXED BY reports_w"
                     " WHERE w >= ? AND w < ? AND id <= ?)")
# ?1 since, ?2 until, ?3 the earliest period start (a whole hour) of a row ending after since, ?4 the id bound,
# ?5 the devices (JSON list), ?6 the zone (NULL: any), ?7 the data version's counter, ?8 the end of the hours
# rows of the range can start in (until rounded up to an hour), ?9 the meta row of the retention removals
# (gateway.storage.retention_removals, read in the same snapshot as the data version). A value report
# without a value or a withheld one (m and e empty) has no row. The reports are grouped by device, UTC hour, stored zone and period
# (``lg``): a group's rounded period ends span [lo, hi], and every row of its hour (``device_hourly`` groups by
# the field instead, which needs the JSON) ends at one of its groups' ends. An hour's reports are all counted
# when one of its period groups spans into (since, until] (``hg``), else none: see the module's docstring for
# why that covers every change of the body.
_ROW_END = "((w + l + 3599) / 3600) * 3600"
_ROWS_STAMP_SQL = """
WITH lg AS (
  SELECT device, w / 3600 AS hr, zone, MAX(id) AS top, COUNT(*) AS n, MIN(%(end)s) AS lo, MAX(%(end)s) AS hi
  FROM reports
  WHERE w >= ?3 AND w < ?8 AND +id <= ?4 AND type IN (%(types)s) AND (m != '{}' OR e != '{}')
    AND device IN (SELECT value FROM json_each(?5)) AND (?6 IS NULL OR zone = ?6)
  GROUP BY device, hr, zone, l),
hg AS (
  SELECT MAX(top) AS top, SUM(n) AS n FROM lg GROUP BY device, hr, zone HAVING MAX(lo <= ?2 AND hi > ?1))
SELECT (SELECT value FROM counters WHERE name = ?7), g.top, g.n, (SELECT received_at FROM reports WHERE id = g.top),
       (SELECT value FROM meta WHERE key = ?9)
FROM (SELECT MAX(top) AS top, SUM(n) AS n FROM hg) g
""" % {"types": VALUE_TYPES_SQL, "end": _ROW_END}
# ?1 the first day, ?2 the end of the days, ?3 the earliest period start ending in them, ?4 ?5 ?6 ?9 as above
# (?8 unused): the reports privacy_spend reads (a non-empty e, period end in [?1, ?2)).
_SPEND_STAMP_SQL = """
SELECT (SELECT value FROM counters WHERE name = ?7), g.top, g.n,
       (SELECT received_at FROM reports WHERE id = g.top), (SELECT value FROM meta WHERE key = ?9)
FROM (SELECT MAX(id) AS top, COUNT(*) AS n FROM reports
      WHERE w >= ?3 AND w < ?2 AND w + l >= ?1 AND w + l < ?2 AND +id <= ?4 AND e != '{}'
        AND device IN (SELECT value FROM json_each(?5)) AND (?6 IS NULL OR zone = ?6)) g
"""

# The ε map entries of the releases whose period ends in [?1, ?2) (the day of that end is the row's), of the
# devices in the JSON list ?5 (their index entries: reports by (device, w), repeat releases by their primary
# key), fields in ?6 and zone ?7 (NULL: any). Reports: a period start from ?3 (the end less the longest
# period) and an id up to ?4. Repeat releases (window_duplicates): a rowid up to ?8, and their stored
# release still stored (its zone is theirs; one that row retention removed is not counted, with or
# without a zone: retention removes such a repeat release soon after). An ``e`` is written as {} when
# empty, so most reports are passed over without json_each. Non-integer entries (none passes the
# gateway's check) are left out rather than summed.
_PRIVACY_SPEND_SQL = """
WITH spent(day, device, field, milli, repeats) AS (
    SELECT ((r.w + r.l) / 86400) * 86400, r.device, j.key, j.value, 0
    FROM reports r INDEXED BY reports_device_w, json_each(r.e) j
    WHERE r.device IN (SELECT value FROM json_each(?5)) AND r.w >= ?3 AND r.w < ?2
      AND r.w + r.l >= ?1 AND r.w + r.l < ?2 AND r.id <= ?4 AND r.e != '{}' AND (?7 IS NULL OR r.zone = ?7)
      AND j.type = 'integer' AND j.key IN (SELECT value FROM json_each(?6))
    UNION ALL
    SELECT ((d.w + d.l) / 86400) * 86400, d.device, j.key, j.value, 1
    FROM window_duplicates d JOIN reports k ON k.device = d.device AND k.seq = d.kept_seq, json_each(d.e) j
    WHERE d.device IN (SELECT value FROM json_each(?5)) AND d.rowid <= ?8 AND d.w >= ?3 AND d.w < ?2
      AND d.w + d.l >= ?1 AND d.w + d.l < ?2 AND d.e != '{}' AND (?7 IS NULL OR k.zone = ?7)
      AND j.type = 'integer' AND j.key IN (SELECT value FROM json_each(?6)))
SELECT day, device, field, SUM(milli), COUNT(*), SUM(repeats) FROM spent
GROUP BY day, device, field ORDER BY day, device, field
"""


def oldest_period_start(conn: sqlite3.Connection, *, max_id: int | None, since: int,
                        excluded: Sequence[str]) -> int | None:
    """:meth:`gateway.storage.queries.ReportQueries.oldest_period_start` on ``conn``."""
    row = conn.execute(_OLDEST_W_SQL, (int(since), MAX_ID if max_id is None else int(max_id),
                                       json.dumps(list(excluded)))).fetchone()
    return int(row[0]) if row else None


def devices_reported(conn: sqlite3.Connection, devices: Sequence[str], *, max_id: int) -> set[str]:
    """:meth:`gateway.storage.queries.ReportQueries.devices_reported` on ``conn``."""
    out: set[str] = set()
    with one_read_transaction(conn):  # one snapshot for every device
        for dev in devices:
            if conn.execute(_DEVICE_REPORTED_SQL, (dev, int(max_id))).fetchone():
                out.add(dev)
    return out


def range_stamp(conn: sqlite3.Connection, *, start: int, end: int, max_id: int | None) -> RangeStamp:
    """:meth:`gateway.storage.queries.ReportQueries.range_stamp` on ``conn``."""
    with one_read_transaction(conn):  # one snapshot for both reads
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (DATA_VERSION_COUNTER,)).fetchone()
        newest = conn.execute(_RANGE_NEWEST_SQL,
                              (int(start), int(end), MAX_ID if max_id is None else int(max_id))).fetchone()
    return RangeStamp(data_version=int(row[0]) if row else 0,
                      newest_id=int(newest[0]) if newest else 0,
                      newest_at=float(newest[1]) if newest else None)


def csv_rows_stamp(conn: sqlite3.Connection, *, since: int, until: int, devices: Sequence[str], max_period_s: int,
                   max_id: int | None, zone: str | None) -> RowsStamp:
    """:meth:`gateway.storage.queries.ReportQueries.csv_rows_stamp` on ``conn`` (see the module's docstring)."""
    earliest = (int(since) - int(max_period_s) - HOUR_S) // HOUR_S * HOUR_S  # whole hours: whole groups
    end = -(-int(until) // HOUR_S) * HOUR_S
    return _stamp(conn, _ROWS_STAMP_SQL, (int(since), int(until), earliest, MAX_ID if max_id is None else int(max_id),
                                          json.dumps(list(devices)), zone), (earliest, end), end)


def spend_stamp(conn: sqlite3.Connection, *, first: int, end: int, devices: Sequence[str], max_period_s: int,
                max_id: int, zone: str | None) -> RowsStamp:
    """:meth:`gateway.storage.queries.ReportQueries.spend_stamp` on ``conn`` (see the module's docstring)."""
    earliest = int(first) - int(max_period_s)
    return _stamp(conn, _SPEND_STAMP_SQL, (int(first), int(end), earliest, int(max_id),
                                           json.dumps(list(devices)), zone), (earliest, int(end)), None)


def _stamp(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], starts: tuple[int, int],
           eighth: Any) -> RowsStamp:
    # ?7 is the data version's counter and ?9 the retention removals' meta row, read in the same statement (the
    # same snapshot) as the reports; ``starts``: the period starts [lo, hi) of every report the body may hold
    # (a removal from a report outside them changes no row of it).
    version, top, count, at, removals = conn.execute(
        sql, params + (DATA_VERSION_COUNTER, eighth, retention_removals.META_KEY)).fetchone()
    return RowsStamp(data_version=int(version or 0), newest_id=int(top or 0), count=int(count or 0),
                     newest_at=float(at) if at is not None else None,
                     removed_at=retention_removals.decode(removals).latest(*starts) if removals is not None else None)


def privacy_spend(conn: sqlite3.Connection, *, start: int, end: int, devices: Sequence[str], fields: Sequence[str],
                  max_period_s: int, max_id: int, max_repeat: int, zone: str | None) -> list[DaySpend]:
    """:meth:`gateway.storage.queries.ReportQueries.privacy_spend` on ``conn``."""
    rows = conn.execute(_PRIVACY_SPEND_SQL, (int(start), int(end), int(start) - int(max_period_s), int(max_id),
                                             json.dumps(list(devices)), json.dumps(list(fields)), zone,
                                             int(max_repeat))).fetchall()
    return [DaySpend(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]
