"""When retention last removed stored values, per UTC day of their period start: what dates a range's change.

The open-data CSV exports name their body by what it is made of (the newest report and the store's data
version, :mod:`gateway.storage.open_data_reads`), and date it by the publication mark of its newest report.
A retention removal changes a body without a new report: the data version moves (a new ``ETag``), but the
newest report left is the same or an older one, so a client deciding by date alone (``wget -N``, ``curl -z``)
would keep a copy holding values retention removed. So every value batch that removes something also records,
in the same transaction, when it did so for each UTC day its changed reports' periods begin in (the ``meta``
row :data:`META_KEY`); a range's stamp reads the latest such time of the days it reads reports of, in the same
statement as the data version, and its ``Last-Modified`` is never earlier than the publication mark after it
(``gateway.web.publication.csv_removal_mark``: no finer time than the marks is published).

Per day, so a range retention did not touch keeps its ``Last-Modified``. Bounded: at most :data:`MAX_DAYS`
days are kept apart; the oldest beyond that are folded into one floor ("every day up to D, at T", T the latest
of them), which only ever makes a date later (a superset: a re-download, never a stale copy). The time is the
store's :attr:`RemovalLog.clock` (the wall clock, which the answers' ``Date`` is too), whole seconds.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable

# The meta row (no ``published:`` prefix: the web layer cannot write it).
META_KEY = "retention_removed"
DAY_S = 86400
# Days kept apart; ~1.5 years of daily removals (each 16 bytes of JSON or so: ~4 KiB).
MAX_DAYS = 256


@dataclass
class RemovalLog:
    """The removal times per UTC day of period start (``w // 86400``), and the floor the oldest were folded
    into: every day up to ``floor_day`` was last changed at ``floor_at`` at the latest (None: no floor)."""

    days: dict[int, int] = field(default_factory=dict)
    floor_day: int | None = None
    floor_at: int = 0

    def add(self, days: Iterable[int], at: int) -> None:
        """Record a removal at ``at`` (unix seconds) from reports whose periods begin on ``days``."""
        for day in days:
            if self.floor_day is not None and day <= self.floor_day:
                self.floor_at = max(self.floor_at, at)
            else:
                self.days[day] = max(self.days.get(day, 0), at)
        if len(self.days) > MAX_DAYS:
            old = sorted(self.days)[: len(self.days) - MAX_DAYS]
            self.floor_day = old[-1]
            self.floor_at = max([self.floor_at] + [self.days.pop(d) for d in old])

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
    """The log a ``meta`` value written by :meth:`RemovalLog.encode` holds; an empty log for None. A value that
    cannot be read (written by hand) gives a floor covering every day, dated by the largest number in it (the
    latest time it may have named: a superset, never an earlier date than it said)."""
    if text is None:
        return RemovalLog()
    try:
        raw = json.loads(text)
        days = {int(d): int(a) for d, a in raw["d"]}
        floor = raw["f"]
        return RemovalLog(days, None if floor is None else int(floor[0]), 0 if floor is None else int(floor[1]))
    except (ValueError, TypeError, KeyError, IndexError):
        numbers = [int(n) for n in "".join(c if c.isdigit() else " " for c in text).split()] or [0]
        return RemovalLog({}, 2**40, max(numbers))


def record(conn: sqlite3.Connection, days: Iterable[int], at: int) -> None:
    """Add a removal at ``at`` from reports whose periods begin on ``days`` to the ``meta`` row, inside the
    caller's transaction (the one that removed the values and moved the data version)."""
    wanted = set(days)
    if not wanted:
        return
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    log = decode(None if row is None else str(row[0]))
    log.add(wanted, int(at))
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META_KEY, log.encode()))
