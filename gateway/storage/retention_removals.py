"""When retention last removed stored values, per UTC day of their period start: what dates a range's change.

The open-data CSV exports name their body by what it is made of (the newest report and the store's data
version, :mod:`gateway.storage.open_data_reads`), and date it by the publication mark of its newest report.
A retention removal changes a body without a new report: the data version moves (a new ``ETag``), but the
newest report left is the same or an older one, so a client deciding by date alone (``wget -N``, ``curl -z``)
would keep a copy holding values retention removed. So every value batch that removes something from a report
the CSV may have published (:func:`published_filter`) also records, in the same transaction, when it did so
for each UTC day those reports' periods begin in (the ``meta`` row :data:`META_KEY`); a range's stamp reads
the latest such time of the days it reads reports of, in the same statement as the data version, and its
``Last-Modified`` is never earlier than the minute after it (``gateway.web.publication.csv_removal_mark``).

Per day, so a range retention did not touch keeps its ``Last-Modified``. Bounded by the longest retention in
force: a day older than it and a week (the longest period a report covers) holds no value retention still
removes, so it is folded into one floor ("every day up to D, at T", T the latest of the folded days' times),
which only ever makes a date later (a re-download of ranges without values, once a day as days age out;
never a stale copy); :data:`MAX_DAYS` caps the days kept apart whatever the policy. A day under the floor
that retention touches again (a late report with an old period) is kept apart again, so the floor's time
moves only when days are folded. The time is the gateway's clock (the store's ``removal_clock``: the host's
wall clock, or the simulated one under ``[sim_clock]``, as the publication marks), whole seconds; each
answer's ``Date`` (the host's wall clock) caps the ``Last-Modified`` it gives.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable

from gateway.storage.meta_keys import PUBLISHED_META_PREFIX

# The meta row (no ``published:`` prefix: the web layer cannot write it).
META_KEY = "retention_removed"
DAY_S = 86400
# Days kept apart at most, whatever the retentions (~11 years; each ~18 bytes of JSON: ~75 KiB).
MAX_DAYS = 4096
# How far before the longest retention's cut-off a day is still kept apart: a report's period is a week at
# most (``day``: a day; the longest a board sends), and a day more for the UTC day boundary.
MARGIN_DAYS = 8
# The CSV marks: hh:05 (gateway.web.publication.csv_mark; the storage layer does not import the web's).
_CSV_MARK_OFFSET_S = 300
# The time a value that cannot be read dates every day by: later than any real time (capped by each answer's
# ``Date``: every range is dated "now" until the next removal rewrites the row), and exact as a float.
DAMAGED_AT = 2**53
# What a stored day or time may be: a JSON number outside this (1e999 reads as inf, a 400-digit integer does
# not fit a float) is taken for damage, not for a date.
_LIMIT = 2**53


@dataclass
class RemovalLog:
    """The removal times per UTC day of period start (``w // 86400``), and the floor the oldest were folded
    into: every day up to ``floor_day`` was last changed at ``floor_at`` at the latest (None: no floor), or at
    its own time when kept apart too (later)."""

    days: dict[int, int] = field(default_factory=dict)
    floor_day: int | None = None
    floor_at: int = 0

    def add(self, days: Iterable[int], at: int) -> None:
        """Record a removal at ``at`` (unix seconds) from reports whose periods begin on ``days``; each day is
        kept apart, under the floor too (its time is then the later of the two)."""
        for day in days:
            self.days[day] = max(self.days.get(day, 0), at)
        if len(self.days) > MAX_DAYS:
            self.fold(sorted(self.days)[len(self.days) - MAX_DAYS])

    def fold(self, before_day: int) -> None:
        """Fold every day kept apart before ``before_day`` into the floor (its time: the latest of theirs)."""
        old = [day for day in self.days if day < before_day]
        if not old:
            return
        self.floor_at = max([self.floor_at] + [self.days.pop(day) for day in old])
        self.floor_day = max(old) if self.floor_day is None else max(self.floor_day, max(old))

    def latest(self, lo_w: int, hi_w: int) -> int | None:
        """The latest removal from reports with a period start in ``[lo_w, hi_w)``, or None (none recorded)."""
        if hi_w <= lo_w:
            return None
        first, last = lo_w // DAY_S, (hi_w - 1) // DAY_S
        found = [at for day, at in self.days.items() if first <= day <= last]
        if self.floor_day is not None and first <= self.floor_day:
            found.append(self.floor_at)
        return max(found) if found else None

    def encode(self) -> str:
        """The ``meta`` value: ``{"d": [[day, at], ...], "f": [floor_day, floor_at] | null}``."""
        floor = None if self.floor_day is None else [self.floor_day, self.floor_at]
        return json.dumps({"d": sorted([d, a] for d, a in self.days.items()), "f": floor}, separators=(",", ":"))


def decode(text: str | None) -> RemovalLog:
    """The log a ``meta`` value written by :meth:`RemovalLog.encode` holds; an empty log for None. Never raises
    on what is stored: a value that cannot be read (written by hand, cut short, damaged: not JSON, ``1e999``,
    ``Infinity``, a non-integer, a number out of range) gives a floor covering every day at
    :data:`DAMAGED_AT` (every range dated as late as its answer's ``Date``: a re-download, never a stale
    copy), until :func:`record` rewrites it."""
    if text is None:
        return RemovalLog()
    try:
        raw = json.loads(text)
        days = {_whole(d): _whole(a) for d, a in raw["d"]}
        floor = raw["f"]
        if floor is None:
            return RemovalLog(days)
        return RemovalLog(days, _whole(floor[0]), _whole(floor[1]))
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError):
        return RemovalLog({}, _LIMIT, DAMAGED_AT)


def _whole(value: object) -> int:
    """A stored day or time: a JSON integer (not a bool, a float or a string) within :data:`_LIMIT`."""
    if type(value) is not int or not -_LIMIT < value < _LIMIT:
        raise ValueError("not a stored day or time: %r" % (value,))
    return value


def keep_from_day(retention_days: Iterable[int], now: float) -> int | None:
    """The first day :func:`record` keeps apart under retentions ``retention_days`` at ``now``: the day of the
    longest one's cut-off less :data:`MARGIN_DAYS` (None: no retention, keep every day up to the cap)."""
    longest = max(retention_days, default=None)
    if longest is None:
        return None
    return (int(now) - int(longest) * DAY_S) // DAY_S - MARGIN_DAYS


def published_filter(conn: sqlite3.Connection, at: int, kind: str) -> tuple[str, tuple[int, int]]:
    """The SQL condition (on ``rowid`` and ``received_at``) and its parameters of a row the CSV exports may have
    published by ``at``: received before the last CSV mark at or before ``at``, or at or below the bound the CSV
    saved (``kind``: ``csv`` for ``reports``, ``repeats`` for ``window_duplicates``; what it served before a
    clock was set back). The saved bound can lag what was served (it is saved in the background), the mark
    cannot: either suffices. A removal from any other row changes no body served yet, and the row's report is
    dated by its own (later) mark once published, so it is not recorded (review L1)."""
    mark = (int(at) - _CSV_MARK_OFFSET_S) // 3600 * 3600 + _CSV_MARK_OFFSET_S
    return "(received_at < ? OR rowid <= ?)", (mark, _saved_bound(conn, kind))


def _saved_bound(conn: sqlite3.Connection, kind: str) -> int:
    """The bound ``published:<kind>`` holds (``gateway.web.publication.encode_published``: "bound mark µs"),
    0 for none or a value that cannot be read (then the mark alone decides)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (PUBLISHED_META_PREFIX + kind,)).fetchone()
    found = None if row is None else re.fullmatch(r"([0-9]{1,18}) [0-9]{1,18} [0-9]{1,18}", str(row[0]))
    return 0 if found is None else int(found.group(1))


def record(conn: sqlite3.Connection, days: Iterable[int], at: int, keep_from: int | None = None) -> None:
    """Add a removal at ``at`` from reports whose periods begin on ``days`` to the ``meta`` row, inside the
    caller's transaction (the one that removed the values and moved the data version), and fold the days
    before ``keep_from`` (:func:`keep_from_day`) into the floor. A row that cannot be read (:func:`decode`) is
    replaced by a floor covering every day up to ``at``'s at ``at``: no removal it recorded can be later than
    this one (a clock set back aside), and the ranges get their dates back as its days age out."""
    wanted = set(days)
    if not wanted:
        return
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    log = decode(None if row is None else str(row[0]))
    if log.floor_at == DAMAGED_AT:
        log = RemovalLog({}, int(at) // DAY_S, int(at))
    log.add(wanted, int(at))
    if keep_from is not None:
        log.fold(keep_from)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META_KEY, log.encode()))
