"""What an open-data CSV export of a past range is made of, read cheaply for its ``ETag``/``Last-Modified``.

The exports are streamed a day at a time, so their ``ETag`` names what they are made of instead of hashing
their bytes (a 304 reads no value). That stamp must cover exactly the reports whose values the range's
body holds: a report for another range must leave it as it was, so a past range keeps answering 304
(QA MEDIUM: every report with a period start from ``since`` less the longest period on was counted, so
the 6-hour ``mot``/``fill`` releases ending at 12:00 and the daily ``lid`` ones moved the stamp of every
range they merely started in, body byte-identical).

* :func:`csv_rows_stamp`, the readings CSV (``ReportQueries.device_hourly``): a row is a device's UTC hour,
  stored zone and field, and it is in the range ``(since, until]`` when its end, the latest period end of
  its values rounded up to a whole hour, is. The stamp groups the value reports the same way, by
  ``(hour, device, zone, l)`` instead of the field, so it reads the index and the rows but no JSON: under
  one policy each field has one period (docs/protocol.md, the policy gate), so a field's row and the
  period's group end alike. It gives the newest report of the groups in the range and how many reports
  they hold: the newest grows with any report added to them (ids only grow), and the count falls when a
  late report moves a group out of the range (a 40-minute window's group end past ``until``).
* :func:`spend_stamp`, the privacy-budget CSV (``ReportQueries.privacy_spend``): each release counts on
  the day its period ends, so the reports whose ``e`` is not empty and whose period ends in the days.

Both are one statement (one snapshot, with the store's data version: retention removals) on the
report store's read connection, through the period-start index ``reports_w`` over the periods that may
end in the range, or ``reports_device_w`` per device, as the exports' own reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from gateway.storage.queries import DATA_VERSION_COUNTER, VALUE_REPORT_TYPES, ReportQueries

HOUR_S = 3600
_MAX_ID = 2**63 - 1
_VALUE_TYPES = ", ".join("'%s'" % t for t in VALUE_REPORT_TYPES)
# ?1 since, ?2 until, ?3 the earliest period start a row ending after since may have, ?4 the id bound,
# ?5 the devices (JSON list), ?6 the zone (NULL: any), ?7 the data version's counter. A value report
# without a value or a withheld one (m and e empty) has no row. A row's end is device_hourly's (MAX(w + l)
# of its values rounded up to the hour) in (since, until]. A report of a period that divides the hour or
# is a whole number of hours (w a multiple of l, docs/protocol.md) ends its group's row itself: every
# report of its group ends at the same whole hour, so its own end decides, read from the row. Only a
# period that does neither (a 40-minute window: 00:00-00:40 ends at 01:00, 00:40-01:20 at 02:00, both of
# hour 00) needs its group's latest end: a seek in the (device, w) index over that hour.
_ROW_END = "((%s + 3599) / 3600) * 3600"
_GROUP_END = ("(SELECT MAX(g.w + g.l) FROM reports g WHERE g.device = r.device AND g.w >= r.w / 3600 * 3600"
              " AND g.w < r.w / 3600 * 3600 + 3600 AND g.zone = r.zone AND g.l = r.l AND g.type IN (%s)"
              " AND +g.id <= ?4 AND (g.m != '{}' OR g.e != '{}'))")
_ROWS_SQL = """
SELECT (SELECT value FROM counters WHERE name = ?7), g.top, g.n,
       (SELECT received_at FROM reports WHERE id = g.top)
FROM (SELECT MAX(r.id) AS top, COUNT(*) AS n FROM reports r
      WHERE r.w >= ?3 AND r.w < ?2 AND +r.id <= ?4 AND r.type IN (%(types)s) AND (r.m != '{}' OR r.e != '{}')
        AND r.device IN (SELECT value FROM json_each(?5)) AND (?6 IS NULL OR r.zone = ?6)
        AND CASE WHEN 3600 %% r.l = 0 OR r.l %% 3600 = 0 THEN r.w + r.l > ?1 AND r.w + r.l <= ?2
            ELSE %(group_end)s > ?1 AND %(group_end)s <= ?2 END) g
""" % {"types": _VALUE_TYPES, "group_end": _ROW_END % (_GROUP_END % _VALUE_TYPES)}
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


def _stamp(queries: ReportQueries, sql: str, params: tuple[Any, ...]) -> RowsStamp:
    # ReportQueries' own read path (its thread's read-only connection, statement clock, damage latch and
    # errors): the storage read API has no such query of its own yet.
    rows = queries._rows(sql, params + (DATA_VERSION_COUNTER,))  # noqa: SLF001
    version, top, count, at = rows[0]
    return RowsStamp(data_version=int(version or 0), newest_id=int(top or 0), count=int(count or 0),
                     newest_at=float(at) if at is not None else None)


def csv_rows_stamp(queries: ReportQueries, *, since: int, until: int, devices: Sequence[str], max_period_s: int,
                   max_id: int | None = None, zone: str | None = None) -> RowsStamp:
    """The stamp of the readings CSV's rows ending in ``(since, until]`` (whole hours), of ``devices``
    (and ``zone``), of the reports with an id up to ``max_id``; ``max_period_s``: the longest period a
    value may have (how far before ``since`` a row ending after it may begin)."""
    return _stamp(queries, _ROWS_SQL, (int(since), int(until), int(since) - int(max_period_s) - HOUR_S,
                                       _MAX_ID if max_id is None else int(max_id), json.dumps(list(devices)), zone))


def spend_stamp(queries: ReportQueries, *, first: int, end: int, devices: Sequence[str], max_period_s: int,
                max_id: int, zone: str | None = None) -> RowsStamp:
    """The stamp of the privacy-budget CSV's stored releases for the days ``[first, end)`` (UTC midnights;
    a release counts on the day its period ends), of ``devices`` (and ``zone``), ids up to ``max_id``.
    Repeat releases are not in it: their bound is stamped apart (a rowid)."""
    return _stamp(queries, _SPEND_SQL, (int(first), int(end), int(first) - int(max_period_s), int(max_id),
                                        json.dumps(list(devices)), zone))
