"""The stamps of the open-data CSV exports of past ranges (their ``ETag``/``Last-Modified``), kept per query.

The exports are streamed a day at a time, so their ``ETag`` names what they are made of instead of hashing
their bytes (a 304 reads no value). What they are made of is read by the store's read API, one statement
each: :meth:`gateway.storage.queries.ReportQueries.csv_rows_stamp` (the readings CSV) and
:meth:`gateway.storage.queries.ReportQueries.spend_stamp` (the privacy-budget CSV); why those cover every
change of a body, and leave a past range's stamp as it was when a report for another range arrives, is told
in :mod:`gateway.storage.open_data_reads`. A month of a hundred devices takes seconds, so
:class:`StampCache` keeps each stamp, exactly, and a repeated request (a 304) reads the data version alone.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

from gateway.storage.queries import ReportQueries
from gateway.web import publication
from gateway.storage.read_models import RowsStamp as RowsStamp


def csv_rows_stamp(queries: ReportQueries, *, since: int, until: int, devices: Sequence[str], max_period_s: int,
                   max_id: int | None = None, zone: str | None = None) -> RowsStamp:
    """The stamp of the readings CSV's rows ending in ``(since, until]`` (whole hours), of ``devices``
    (and ``zone``), of the reports with an id up to ``max_id``; ``max_period_s``: the longest period a
    value may have (how far before ``since`` a row ending after it may begin).
    (:meth:`gateway.storage.queries.ReportQueries.csv_rows_stamp`.)"""
    return queries.csv_rows_stamp(since=since, until=until, devices=devices, max_period_s=max_period_s,
                                  max_id=max_id, zone=zone)


def spend_stamp(queries: ReportQueries, *, first: int, end: int, devices: Sequence[str], max_period_s: int,
                max_id: int, zone: str | None = None) -> RowsStamp:
    """The stamp of the privacy-budget CSV's stored releases for the days ``[first, end)`` (UTC midnights;
    a release counts on the day its period ends), of ``devices`` (and ``zone``), ids up to ``max_id``.
    Repeat releases are not in it: their bound is stamped apart (a rowid).
    (:meth:`gateway.storage.queries.ReportQueries.spend_stamp`.)"""
    return queries.spend_stamp(first=first, end=end, devices=devices, max_period_s=max_period_s, max_id=max_id,
                               zone=zone)


def published_at(stamp: RowsStamp) -> float | None:
    """The ``Last-Modified`` of a CSV body ``stamp`` names (before rounding and the ``Date`` bound): the
    publication mark of its newest report (:func:`gateway.web.publication.csv_published_at`), or the mark
    after the last retention removal from its reports (:func:`gateway.web.publication.csv_removal_mark`)
    when later, so a removal dates the range forward though its newest report may be older (None: neither)."""
    dates = []
    if stamp.newest_at is not None:
        dates.append(publication.csv_published_at(stamp.newest_at))
    if stamp.removed_at is not None:
        dates.append(publication.csv_removal_mark(stamp.removed_at))
    return float(max(dates)) if dates else None


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
