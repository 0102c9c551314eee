"""Retention of field values in bounded jobs: a pass over a large store never holds the store's writer for long.

A pass (:meth:`gateway.storage.store.ReportStore.begin_retention`) walks the reports by id, a range of rows per
job on the store's one writer thread, so ingest (which shares that thread) gets the writer between jobs:

1. **floors** (:data:`FLOOR_BATCH` seqs or :data:`FLOOR_DEVICES` devices a job): each device's saved ACK
   floor is moved over the seqs above it that are committed without a gap (:func:`extend_floors`), so the rows
   of a device's last batch before it fell silent can go too;
2. **count** (:data:`COUNT_BATCH` rows a job): per field the values stored and those past their retention,
   per kind the report rows the row part would remove (only when a hold may apply). The large-removal hold is
   decided on the whole count, before anything is removed. This reads the whole store, so it runs only where
   the hold applies or no earlier pass of this open store went through (:class:`Cleared`); any other pass
   **finds** what expires instead
   (:data:`COUNT_BATCH` index entries or rows a job): per field the reports whose period end passed the cut-off
   since that pass (through the index on ``w``, from the cut-off it reached less the longest period stored),
   and the reports stored since it (by id), then counts the field's stored values only as far as it takes to
   tell whether the pass removes more than :data:`~gateway.storage.store.LARGE_REMOVAL` of them (the WARNING),
   newest reports first (**share**). A pass an hour after the last one reads about an hour's reports plus the
   longest period's, not the store (QA: a full read of the store every pass, on the writer's thread);
3. **values** (:data:`FIELD_BATCH` rows a job, each its own transaction): the values past their retention are
   removed from ``m`` and ``e``, and the data version moves in the same transaction;
4. **duplicates**: the same for the ``e`` of ``window_duplicates``;
5. the row part (gateway/storage/row_retention.py).

Rows inserted after the pass began (ids above :attr:`FieldPass.top`) wait for the next pass: no other writer
changes stored values, so the count is exactly what the value batches remove. A pass cut off part-way
(a crash, a stop) leaves every batch before it committed whole.

**A pass cut off is finished as decided.** A pass that runs whatever it removes (no hold: the operator
confirmed, or the time elapsed vouches for the clock) and a pass whose hold let its values go save what they
decided in the ``meta`` row :data:`PASS_META_KEY` (its removal time, retention, newest report id, and the
report rows held, if any) and clear it once they are through. The next pass whose clock passes the checks
(gateway/retention_clock.py; a pass they skip leaves it saved) finishes that pass first (:func:`parse_pending`),
without asking the hold again about values it already let go, by the earlier of its saved removal time and the
checked one: never by a clock later than this start's. A saved removal time later than the checked one by more
than the clock-back tolerance was decided by a clock that was ahead: that pass is dropped with a WARNING (it would
remove values still inside their retention) and a new pass decides afresh, the hold applying.

**What an earlier pass cleared is known only to the open store** (:class:`Cleared`, in memory): a restart,
and any pass the hold applies to, counts the whole store again. The store's only writer adds rows with new ids
and never adds a value to a stored row, so once a pass of this open store went through, no value past a cut-off
it reached is left in the reports up to its newest id; a row written outside the gateway (a backup merged into
a stopped store, docs/gateway.md) is in a store opened afresh, whose first pass counts it, and one written into
the running store by another connection moves ``PRAGMA data_version``: the next pass forgets what was cleared
and counts the whole store. A field's own cut-off
and newest id are kept, so a retention changed (longer: the cut-off moves back, nothing is left before it
either; shorter: the band from the old cut-off to the new one is searched) or a field kept longer during a
pass (its mark stays where its last complete pass left it) is still searched from where it is clean.

**A retention made longer during a pass** (the admin API) is followed between jobs: the pass stops removing
that field's values, and the report rows of its kind go by the longer retention (ReportStore.retention_batch
gets the effective retention with each job). A shorter retention waits for the next pass.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any

# Rows one value-removal job updates (its own transaction: ingest waits for one such job at most).
FIELD_BATCH = 2000
# Rows one counting job reads (a read: no page written, so more rows per job for the same time).
COUNT_BATCH = 10000
# Buckets of report ids the find stage holds at most (add_found): a bounded set however much it finds.
FOUND_BUCKETS = 4096
# Report ids found (find_values) in one bucket of this many share one value job, to begin with (add_found: larger
# buckets when it finds much).
FIND_GAP = 64

# (kind, field, cutoff, days, JSON path) of one field a pass removes values of.
FieldPlan = tuple[str, str, int, int, str]
# An SQL condition on a row of reports / window_duplicates and its parameters: which removals date open data
# (gateway.storage.retention_removals.published_filter).
Published = tuple[str, tuple[int, ...]]

# Seqs one floors job reads, and devices it visits (a write transaction: bounded like the others; a store of
# many devices, or one holding a long run of seqs above its floor, takes several jobs).
FLOOR_BATCH = 20000
FLOOR_DEVICES = 500
# What a saved pass in progress may hold (parse_pending): a removal time up to the year 9999 (time.gmtime's
# range), a retention of at most a century, a report id SQLite can store.
MAX_TIME = 253402300799.0
MAX_DAYS = 36500
MAX_ID = 2**63 - 1

# The ``meta`` row of a pass in progress that runs whatever it removes (module docstring), as JSON.
PASS_META_KEY = "retention_pass"


@dataclass
class FieldPass:
    """The field part of one retention pass, walked a job at a time (ReportStore.retention_batch).

    Attributes:
        fields: what is removed, per field (:data:`FieldPlan`).
        top: the highest report id when the pass began; the pass covers rows up to it.
        stage: ``floors``, ``count`` (or ``find`` then ``share``), ``values``, ``duplicates``, then ``rows`` (the
            row part), ``done``;
            ``held`` when a field's large removal held the whole pass (nothing was removed).
        after: the id (``window_duplicates``: rowid) the next job of the stage starts after.
        floor_device: the device the next floors job starts at (by name).
        duplicates_top: the highest ``window_duplicates`` rowid when its stage began.
        counts: per field ``[values stored, values past retention]`` (rows up to ``top``; after a find, the
            values stored are counted only as far as the share needs, :func:`share_threshold`).
        row_counts: per kind ``[rows the row part removes, rows]`` (counted only when a hold may apply).
        todo: the counted id ranges ``(lo, hi]`` holding values to remove: the only ones the value stage
            visits (a pass an hour after the last one finds an hour of values, not a store to walk again).
        now: the removal time of the pass.
        saved: the pass is saved as in progress (:data:`PASS_META_KEY`): cleared when it is through.
        rows_held: for a pass finished after a cut (:func:`parse_pending`): what held its report rows when it
            was decided (empty: none), in place of a new decision; None for a new pass.
        kept: ``kind.field`` whose retention was made longer (or removed) during the pass: no more removed.
        searches: the find stage's searches left (:func:`plan_searches`); found: the reports they found, as
            ``id // found_gap`` (:func:`add_found`: a bounded set).
        longest: the longest period of the reports the count read (:class:`Cleared`).
        share: per field the values stored the share stage still has to count (:func:`share_threshold`);
            it walks down from ``top``, ``after`` being the id its next range ends at, ``share_rows`` its size
            (twice the last, up to :data:`COUNT_BATCH`: a few jobs however far it has to go).
    """

    fields: list[FieldPlan]
    top: int
    now: float = 0.0
    saved: bool = False
    rows_held: list[str] | None = None
    kept: list[str] = field(default_factory=list)
    stage: str = "floors"
    after: int = 0
    floor_device: str = ""
    duplicates_top: int = 0
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    row_counts: dict[str, list[int]] = field(default_factory=dict)
    todo: list[tuple[int, int]] = field(default_factory=list)
    searches: list[Search] = field(default_factory=list)
    found: set[int] = field(default_factory=set)
    found_gap: int = FIND_GAP
    longest: int | None = None
    share: dict[tuple[str, str], int] = field(default_factory=dict)
    share_rows: int = 0


@dataclass
class Cleared:
    """What the passes of one open store left without a value past its retention (module docstring).

    Attributes:
        fields: per ``(kind, field)``, ``(cut-off, top)`` of the last pass that went through its values: no
            report up to id ``top`` holds a value of the field (in ``m`` or ``e``) whose period ended
            (``w + l``) at or before ``cut-off``.
        longest: the longest period (``l``) of the reports up to id ``upto``: a report with ``w`` at or before
            a cut-off less it ended before that cut-off (the lower end of the band searched on ``w``).
        upto: see ``longest``.
        data_version: the store connection's ``PRAGMA data_version`` when the last pass began its values (None:
            no pass yet). It moves only when another connection commits (a backup merged into the running
            store keeps the backup's ids, below ``top``, and old ``w``: no search finds those rows), so a pass
            that sees it moved starts from a new :class:`Cleared` and counts the whole store
            (:meth:`ReportStore._retention_step`).
        rows: per kind, what the row part of the last pass that went through the kind left
            (:class:`RowMark`; gateway/storage/row_retention.py): the next one reads only what expired since.
    """

    fields: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    longest: int = 0
    upto: int = 0
    data_version: int | None = None
    rows: dict[str, RowMark] = field(default_factory=dict)

    def covers(self, fields: list[FieldPlan]) -> bool:
        """Whether every field of a pass has a mark (else the pass counts the whole store)."""
        return all((kind, fld) in self.fields for kind, fld, _c, _d, _p in fields)

    def passed(self, fields: list[FieldPlan], top: int) -> None:
        """The values of ``fields`` past their cut-offs are gone from every report up to ``top``."""
        for kind, fld, cutoff, _days, _path in fields:
            mark = self.fields.get((kind, fld))
            if mark is None or top >= mark[1]:  # (a pass resumed over fewer reports leaves the later mark)
                self.fields[(kind, fld)] = (cutoff, top)

    def periods(self, longest: int | None, upto: int) -> None:
        """Add the longest period of the reports up to ``upto`` (None: there are none)."""
        if longest is not None:
            self.longest = max(self.longest, longest)
        self.upto = max(self.upto, upto)


@dataclass(frozen=True)
class RowMark:
    """What the row part of a pass of this open store left of one kind: no report row of the kind with ``w`` at or
    before ``cutoff`` and an id below ``keep_id`` is left but the rows ``stuck`` (ids, sorted): rows it could not
    remove yet (a period or reception after the cut-off, values left, a seq above its device's ACK floor)."""

    cutoff: int
    keep_id: int
    stuck: tuple[int, ...]


@dataclass
class Search:
    """One search of the find stage: the reports of ``kind`` that may hold a value of ``fields`` (one cut-off)
    past it: with ``lo < w <= hi`` and id at most ``top`` through the index on ``w`` (``by_w``), or with
    ``lo < id <= hi`` by id. ``after`` is the ``(w, id)`` (by id: ``(0, id)``) the next job starts after."""

    kind: str
    fields: list[FieldPlan]
    by_w: bool
    lo: int
    hi: int
    top: int
    after: tuple[int, int]


def plan_searches(fields: list[FieldPlan], cleared: Cleared, top: int) -> list[Search]:
    """The searches that find every value of ``fields`` past its cut-off in reports up to ``top``, given what
    earlier passes ``cleared`` (which must cover the fields and know the periods up to ``top``). Fields of one
    kind, cut-off and mark share a search."""
    groups: dict[tuple[str, int, int, int], list[FieldPlan]] = {}
    for plan in fields:
        kind, fld, cutoff = plan[0], plan[1], plan[2]
        was, upto = cleared.fields[(kind, fld)]
        groups.setdefault((kind, cutoff, was, min(upto, top)), []).append(plan)
    out: list[Search] = []
    for (kind, cutoff, was, upto), mine in sorted(groups.items(), key=lambda g: g[0]):
        if cutoff > was:  # clean up to `was`: a report ending after it starts after `was` less the longest period
            low = was - cleared.longest
            out.append(Search(kind, mine, True, low, cutoff, upto, (low, 0)))
        if upto < top:  # stored since: any period (a board's late batch, a clock set back)
            out.append(Search(kind, mine, False, upto, top, top, (0, upto)))
    return out


def longest_period(conn: sqlite3.Connection, lo: int, hi: int) -> int | None:
    """The longest period (``l``) of the reports ``lo < id <= hi`` (None: there are none)."""
    row = conn.execute("SELECT MAX(l) FROM reports WHERE id > ? AND id <= ?", (lo, hi)).fetchone()
    return None if row[0] is None else int(row[0])


def find_values(conn: sqlite3.Connection, search: Search, size: int,
                counts: dict[tuple[str, str], list[int]]) -> tuple[list[int], bool]:
    """Run the next job of ``search`` (at most ``size`` index entries or rows read): return the ids of the
    reports holding a value to remove (in ``m`` or ``e``), having added to ``counts`` (``[values stored,
    values past retention]`` per field) the ``m`` values past the cut-off, and whether the search is through."""
    cutoff = search.fields[0][2]
    olds = ", ".join("json_type(m, ?) IS NOT NULL" for _f in search.fields)
    anyv = " OR ".join("json_type(m, ?) IS NOT NULL OR json_type(e, ?) IS NOT NULL" for _f in search.fields)
    paths = [f[4] for f in search.fields]
    if search.by_w:
        # the job's last index entry: only the index is read to find it
        end = conn.execute("SELECT w, id FROM reports INDEXED BY reports_w WHERE w > ? AND w <= ? AND (w, id) > (?, ?)"
                           " ORDER BY w, id LIMIT 1 OFFSET ?", (search.lo, search.hi, *search.after, size - 1)).fetchone()
        last = (search.hi, MAX_ID) if end is None else (int(end[0]), int(end[1]))
        where = ("FROM reports INDEXED BY reports_w WHERE w > ? AND w <= ? AND (w, id) > (?, ?) AND (w, id) <= (?, ?)"
                 " AND id <= ?")
        args: list[Any] = [search.lo, search.hi, *search.after, *last, search.top]
        done = end is None
    else:
        hi = next_range(conn, "reports", search.after[1], search.hi, size)
        last = (0, search.hi if hi is None else hi)
        where = "FROM reports WHERE id > ? AND id <= ?"
        args = [search.after[1], last[1]]
        done = hi is None or hi >= search.hi
    rows = conn.execute("SELECT id, %s %s AND kind = ? AND w + l <= ? AND (%s)" % (olds, where, anyv),
                        (*paths, *args, search.kind, cutoff, *[p for p in paths for _ in (0, 1)])).fetchall()
    search.after = last
    for i, (kind, fld, _c, _d, _p) in enumerate(search.fields):
        counts.setdefault((kind, fld), [0, 0])[1] += sum(int(r[1 + i]) for r in rows)
    return [int(r[0]) for r in rows], done


def add_found(found: set[int], gap: int, ids: list[int]) -> int:
    """Add the reports ``ids`` (holding a value to remove) to ``found``, which holds ``id // gap`` of each, and
    return the gap: doubled (the buckets merged in pairs) while more than :data:`FOUND_BUCKETS` are held, so
    a pass that finds much holds a bounded set and its value jobs visit larger ranges (a list of every id
    found took 41.5 MB for 400,000 of them, where a count pass holds a range per :data:`COUNT_BATCH` rows)."""
    found.update(i // gap for i in ids)
    while len(found) > FOUND_BUCKETS:
        merged = {b // 2 for b in found}
        found.clear()
        found.update(merged)
        gap *= 2
    return gap


def found_ranges(found: set[int], gap: int, top: int) -> list[tuple[int, int]]:
    """The id ranges ``(lo, hi]`` (up to ``top``) of the buckets ``found`` (:func:`add_found`), adjacent ones
    sharing a range (fewer, larger value jobs; the removal's own conditions pass over the reports between)."""
    out: list[tuple[int, int]] = []
    for b in sorted(found):
        lo, hi = max(0, b * gap - 1), min(top, b * gap + gap - 1)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def share_threshold(old: int, share: float) -> int:
    """The fewest values stored of which ``old`` is not more than ``share``: counting that many tells the
    removal is not large, without counting the rest."""
    need = max(0, int(old / share) - 1)
    while old > share * need:
        need += 1
    return need


def previous_range(conn: sqlite3.Connection, table: str, below: int, size: int) -> int | None:
    """The start (exclusive) of the range of up to ``size`` rows of ``table`` (by rowid) at or below ``below``,
    walking down: the range is ``(returned, below]``; None when no row is left."""
    row = conn.execute("SELECT MIN(rowid) FROM (SELECT rowid FROM %s WHERE rowid <= ? ORDER BY rowid DESC LIMIT ?)"
                       % table, (below, size)).fetchone()
    return None if row[0] is None else int(row[0]) - 1


def pending_row(rows_days: dict[tuple[str, str], int], now: float, top: int, rows_held: list[str]) -> str:
    """The ``meta`` value (:data:`PASS_META_KEY`) of a pass in progress."""
    return json.dumps({"now": now, "days": {"%s.%s" % k: d for k, d in sorted(rows_days.items())}, "top": top,
                       "rows_held": rows_held}, sort_keys=True)


def parse_pending(saved: str) -> tuple[float, dict[tuple[str, str], int], int, list[str]]:
    """``(removal time, retention, newest report id, report rows held)`` of a saved pass in progress.

    Raises:
        ValueError: the row is not one the gateway writes (saying what is wrong), including numbers Python's
            json reads but no pass is planned with (NaN, Infinity, a time after the year 9999, a retention
            longer than :data:`MAX_DAYS`, an id beyond SQLite's).
    """
    state: Any = json.loads(saved)
    if not isinstance(state, dict):
        raise ValueError("JSON, but not an object")
    now, days, top, held = state.get("now"), state.get("days"), state.get("top"), state.get("rows_held")
    if (not isinstance(now, (int, float)) or isinstance(now, bool) or not math.isfinite(now)
            or not 0 < now <= MAX_TIME):
        raise ValueError("bad removal time %r" % (now,))
    if not (isinstance(days, dict) and all(isinstance(k, str) and "." in k and isinstance(v, int)
                                           and not isinstance(v, bool) and 0 <= v <= MAX_DAYS
                                           for k, v in days.items())):
        raise ValueError("bad retention %r" % (days,))
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_ID:
        raise ValueError("bad newest report id %r" % (top,))
    if not (isinstance(held, list) and all(isinstance(x, str) for x in held)):
        raise ValueError("bad rows held %r" % (held,))
    retention = {(k.split(".", 1)[0], k.split(".", 1)[1]): int(v) for k, v in days.items()}
    return float(now), retention, top, list(held)


def extend_floors(conn: sqlite3.Connection, start: str) -> str | None:
    """Move each device's ACK floor over the seqs above it committed without a gap (stored, or recorded as a
    window duplicate), inside the caller's transaction, for the devices from ``start`` on (by name) until
    :data:`FLOOR_DEVICES` devices or :data:`FLOOR_BATCH` seqs are read; return the device the next job starts
    at (the same one when its seqs went beyond the job), or None when every device was visited.

    The floor is saved with the next stored batch of reports (and at stop), so the floor of a device's last
    batch before it fell silent was never saved while the gateway ran on (nor ever, after a kill), and its
    rows stayed past their retention. Every seq up to the moved floor is committed, which is what the floor
    means (row_retention.py): a seq the device may still hold is above a gap, and the floor stops before it.
    A device without a saved floor (its only batch came just before a kill) starts from floor 0: seqs stored
    from 1 without a gap are just as committed; one whose lowest seq is above 1 keeps its rows. A floor moved
    part-way by one job is saved as such (every seq up to it is committed): the next job goes on from it.
    Only devices with a stored report or window duplicate are visited: a floor moves over nothing else.
    """
    device: str | None = _next_device(conn, start, inclusive=True)
    seqs_read = devices = 0
    while device is not None:
        if devices >= FLOOR_DEVICES or seqs_read >= FLOOR_BATCH:
            return device
        devices += 1
        row = conn.execute("SELECT floor FROM ack_floor WHERE device = ?", (device,)).fetchone()
        floor = top = 0 if row is None else int(row[0])
        full = False
        while seqs_read < FLOOR_BATCH:  # a few hundred seqs at a time: a device waiting on a gap may hold many
            chunk = min(500, FLOOR_BATCH - seqs_read)
            seqs = [int(s) for (s,) in conn.execute(
                "SELECT seq FROM reports WHERE device = ?1 AND seq > ?2 UNION SELECT seq FROM window_duplicates"
                " WHERE device = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3", (device, top, chunk))]
            seqs_read += len(seqs)
            start_top = top
            for seq in seqs:
                if seq != top + 1:
                    break
                top = seq
            full = top - start_top == chunk
            if not full:
                break
        if top > floor:
            conn.execute("INSERT INTO ack_floor (device, floor) VALUES (?, ?)"
                         " ON CONFLICT(device) DO UPDATE SET floor = MAX(floor, excluded.floor)", (device, top))
        if full:  # the job's seqs ran out inside this device's run: the next job goes on from its new floor
            return device
        device = _next_device(conn, device, inclusive=False)
    return None


def _next_device(conn: sqlite3.Connection, after: str, *, inclusive: bool) -> str | None:
    """The first device (by name) from ``after`` on (``inclusive``) or after it with a stored report or window
    duplicate: one index seek per table (the ``(device, seq)`` keys), not a walk over every row."""
    op = ">=" if inclusive else ">"
    found = []
    for table in ("reports", "window_duplicates"):
        row = conn.execute("SELECT MIN(device) FROM %s WHERE device %s ?" % (table, op), (after,)).fetchone()
        if row[0] is not None:
            found.append(str(row[0]))
    return min(found) if found else None


def next_range(conn: sqlite3.Connection, table: str, after: int, top: int, size: int) -> int | None:
    """The end of the next range of up to ``size`` rows of ``table`` (by rowid) after ``after`` and at most
    ``top``, or None when none is left."""
    row = conn.execute("SELECT MAX(rowid) FROM (SELECT rowid FROM %s WHERE rowid > ? AND rowid <= ? ORDER BY rowid"
                       " LIMIT ?)" % table, (after, top, size)).fetchone()
    return None if row[0] is None else int(row[0])


def count_values(conn: sqlite3.Connection, fields: list[FieldPlan], lo: int, hi: int,
                 counts: dict[tuple[str, str], list[int]]) -> bool:
    """Add to ``counts`` the ``m`` values of each field stored in reports ``lo < id <= hi`` and those past its
    cutoff; return whether the range holds anything to remove (in ``m`` or ``e``). One read of the range per
    kind (the CASE keeps SQLite from parsing the JSON of rows past the cutoff only)."""
    found = False
    for kind in sorted({f[0] for f in fields}):
        mine = [f for f in fields if f[0] == kind]
        parts, args = [], []
        for _kind, _fld, cutoff, _days, path in mine:
            parts.append("COALESCE(SUM(json_type(m, ?) IS NOT NULL), 0),"
                         " COALESCE(SUM(CASE WHEN w + l <= ? THEN json_type(m, ?) IS NOT NULL END), 0),"
                         " COALESCE(SUM(CASE WHEN w + l <= ? THEN json_type(e, ?) IS NOT NULL END), 0)")
            args += [path, cutoff, path, cutoff, path]
        row = conn.execute("SELECT %s FROM reports WHERE id > ? AND id <= ? AND kind = ?" % ", ".join(parts),
                           (*args, lo, hi, kind)).fetchone()
        for i, (_kind, fld, _c, _d, _p) in enumerate(mine):
            got = counts.setdefault((kind, fld), [0, 0])
            got[0] += int(row[3 * i])
            got[1] += int(row[3 * i + 1])
            found = found or bool(row[3 * i + 1] or row[3 * i + 2])
    return found


def remove_values(conn: sqlite3.Connection, fields: list[FieldPlan], lo: int, hi: int,
                  days: set[int] | None = None, published: Published | None = None) -> tuple[int, int]:
    """Remove the values past their retention from reports ``lo < id <= hi`` (inside the caller's transaction);
    return ``(m values removed, rows changed)``. ``days``, when given, gets the UTC day (``w // 86400``) of
    every changed report's period start (what dates the open-data ranges the change is in,
    :mod:`gateway.storage.retention_removals`), of the reports ``published`` (an SQL condition and its
    parameters, ``retention_removals.published_filter``) holds only, when given."""
    readings = changed = 0
    for kind, _fld, cutoff, _days, path in fields:
        where = " WHERE id > ? AND id <= ? AND kind = ? AND w + l <= ?"
        readings += int(conn.execute("SELECT COUNT(*) FROM reports" + where + " AND json_type(m, ?) IS NOT NULL",
                                     (lo, hi, kind, cutoff, path)).fetchone()[0])
        touched = where + " AND (json_type(m, ?) IS NOT NULL OR json_type(e, ?) IS NOT NULL)"
        params = (lo, hi, kind, cutoff, path, path)
        if days is not None:
            days.update(_days_of(conn, "reports", touched, params, published))
        changed += conn.execute("UPDATE reports SET m = json_remove(m, ?), e = json_remove(e, ?)" + touched,
                                (path, path) + params).rowcount
    return readings, changed


def remove_duplicate_values(conn: sqlite3.Connection, fields: list[FieldPlan], lo: int, hi: int,
                            days: set[int] | None = None, published: Published | None = None) -> int:
    """Remove the ``e`` values past their retention from ``window_duplicates`` rows ``lo < rowid <= hi`` (the
    spend of a release not stored goes with the stored release's); return the rows changed. ``days`` and
    ``published``, when given: as for :func:`remove_values`."""
    changed = 0
    for kind, _fld, cutoff, _days, path in fields:
        touched = " WHERE rowid > ? AND rowid <= ? AND kind = ? AND w + l <= ? AND json_type(e, ?) IS NOT NULL"
        params = (lo, hi, kind, cutoff, path)
        if days is not None:
            days.update(_days_of(conn, "window_duplicates", touched, params, published))
        changed += conn.execute("UPDATE window_duplicates SET e = json_remove(e, ?)" + touched,
                                (path,) + params).rowcount
    return changed


def _days_of(conn: sqlite3.Connection, table: str, where: str, params: tuple[object, ...],
             published: Published | None) -> list[int]:
    """The UTC days of period start of the rows of ``table`` the ``UPDATE`` under ``where`` is about to change,
    read in the same transaction right before it (not ``UPDATE ... RETURNING``, which needs SQLite 3.35: the
    system SQLite of Debian 10 / Ubuntu 20.04, hosts docs/gateway.md supports, is 3.27 / 3.31)."""
    # w / 86400 truncates towards zero in SQLite; less one for a negative remainder: w // 86400, as Python
    if published is not None:
        where, params = where + " AND " + published[0], params + tuple(published[1])
    return [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT w / 86400 - (w % 86400 < 0) FROM " + table + where, params)]
