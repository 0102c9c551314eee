"""Retention of whole report rows: what is left of a report once its field values are gone.

Field retention (:meth:`gateway.storage.store.ReportStore.apply_retention`) removes values from ``m``
and ``e``; the row itself (device, type, period, reception time, link, alarm codes, frame digest) used to
stay for good. A row of kind K is removed once it holds no value any more (``m`` and ``e`` empty) and
both its period end (``w + l``) and its reception time are older than K's **report retention**: the
longest retention of K's fields (:func:`row_retention_days`), so no row outlives the longest-kept
value of its kind, and what the transparency page says per field stays the whole promise.

What removal must not undo:

* **Replay protection.** The replay window is rebuilt at start from the highest seq stored per device
  (``ReportStore.max_seqs``) and an old frame is refused when the store ``has`` it. Before a device's
  rows go, the highest removed seq is kept in ``retired_seqs`` (one row per device: device and seq, no
  time, no link, no content) in the same transaction; the store counts every seq up to it as committed,
  so a replayed frame of a removed report is answered as the duplicate it is and never stored again,
  also after a restart (the window is rebuilt from it too). Only rows at or below the device's ACK
  floor (``ack_floor``: every seq up to it is committed or was given up on) are removed, so the retired
  seq never passes the floor: a seq above it that was never stored (a gap the device still holds, say
  a fire alarm) is stored when it arrives, not answered as a duplicate and lost. Ingest saves a floor
  with the next stored batch (and at stop), so a pass first moves each device's floor over the seqs
  above it committed without a gap, from 0 for a device with no floor saved
  (:func:`gateway.storage.field_retention.extend_floors`): else the last batch of a device that fell
  silent stayed for good (a gateway killed, or up with every device silent). A device whose lowest
  seq stored is above 1 (and no floor saved) keeps its rows.
* **Report ids.** ``reports`` has no AUTOINCREMENT: a new row takes ``MAX(id) + 1``. The open data's
  publication marks and change feeds name reports by id, so the newest row (the highest id) is never
  removed: ids are never reused. It also keeps the reception time the retention clock checks the
  gateway clock against (gateway/retention_clock.py). The same holds for ``window_duplicates`` (no
  AUTOINCREMENT either): the privacy-budget CSV publishes its repeat releases up to a rowid per mark
  (gateway/web/published_marks.py, ``published:repeats``), so its newest row (the highest rowid) is never
  removed either. Else, once retention removed every row, a new repeat release took a rowid at or below
  the published bound and showed before its mark, and the saved bound named a row gone at the next start.
  The row kept counts nowhere: its stored release is gone (the budget counts a repeat release only with it).
* **The provenance chain** is its own table (device, seq, gateway, frame digest, hashes; no time, no
  link, no measurement: the digest is a SHA-256 of the authenticated frame, from which no value can be
  read back without the device key): removing reports leaves it whole, and ``export-log`` verifies as before.

**What is read.** The first pass of an open store reads, per kind K, every row with ``w`` at or before K's cut-off
(through the index on ``w``: rows of every kind). Once a pass went through K, the next reads only what may have
expired for K since (:class:`gateway.storage.field_retention.RowMark`, in memory): the rows of K that pass could
not remove yet (by id), the rows stored since (by id) and the rows whose ``w`` is between its cut-off and this one
(the index on ``w``). So a store older than the shortest report retention no longer reads, every pass, the rows of
the kinds kept longer that lie between the two cut-offs (bench/retention_pass.py ``--days``), and no index on
``(kind, w)`` is needed (it would cost every insert, the space, and its build when a large store is opened). The
whole range is read again by the first pass after another connection wrote the store (as the field part), and
by the pass after one that left more than :data:`STUCK_MAX` rows of K it could not remove.
These marks rely on ids never going down (see *Report ids*): any new code that deletes report rows
must keep the highest-id row, or drop the marks (``Cleared.rows``), or a pass would skip rows stored
after such a delete.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from gateway.retention_clock import LargeRemovalHold
from gateway.storage.field_retention import MAX_ID, FieldPass, RowMark

# Rows removed per transaction, each its own job on the store's one writer thread
# (ReportStore.remove_rows_batch): ingest waits for one batch at most, not for the whole row part.
ROW_BATCH = 2000

# The highest seq per device whose report row retention removed (schema.py creates the table).
RETIRED_TABLE = "retired_seqs"

# A row's seq is at or below its device's ACK floor (no floor row: nothing acknowledged, kept).
_AT_OR_BELOW_FLOOR = "seq <= (SELECT f.floor FROM ack_floor f WHERE f.device = %s.device)"


# Where a kind's batches start: before any ``(w, id)``.
START = (-(2 ** 62), 0)

# Rows a kind may leave past its cut-off (not removable yet) for the next pass to read again by id
# (:class:`~gateway.storage.field_retention.RowMark`); with more, the next pass reads the kind's whole range.
STUCK_MAX = 10000

# A row past the cut-off ``:cutoff`` (its ``w``) that can go: its period and reception are past it too, it holds
# no value, and its seq is at or below its device's ACK floor.
_REMOVABLE = ("w + l <= :cutoff AND received_at <= :cutoff AND m = '{}' AND e = '{}' AND "
              + _AT_OR_BELOW_FLOOR % "reports")


@dataclass
class RowPass:
    """The row part of one retention pass, removed a batch at a time (ReportStore.remove_rows_batch).

    Attributes:
        cutoffs: ``kind -> cutoff`` (unix s): rows of the kind older than it go.
        keep_id: rows of this id and above are kept (the newest row when the pass began: ids never reused).
        readings: the field values (``m``) the field pass before it removed.
        held: what held the row part (a large removal; ReportStore.remove_values): nothing is removed.
        kind: index in ``cutoffs`` (sorted) of the kind being removed.
        phase: what of that kind the next batch reads (:func:`remove_row_batch`): ``stuck`` (the rows the last
            pass left, ``mark.stuck``), ``new`` (rows stored since it), ``band`` (by ``w``); ``""``: not begun.
        mark: what the last pass through the kind left (None: this pass reads its whole range).
        stuck: the rows of that kind found past its cut-off but not removable yet (None: more than
            :data:`STUCK_MAX`).
        after: where the next batch of the phase starts after: ``(w, id)`` of the last row of that kind read
            (``band``), so no batch walks again over rows it cannot remove; ``(0, id)`` (``new``); ``(0, index in
            mark.stuck)`` (``stuck``).
        rows: report rows removed so far. duplicates_done: the ``window_duplicates`` step ran.
        values: the field part of the pass, run before the row part (ReportStore.begin_retention), or None.
        hold: the large-removal hold the pass is counted for, or None. retention_days: the pass's retention.
        large_fields, large: what the field part found large (logged, at WARNING, once its values are removed).
    """

    cutoffs: dict[str, int]
    keep_id: int
    readings: int = 0
    held: list[str] = field(default_factory=list)
    kind: int = 0
    phase: str = ""
    mark: RowMark | None = None
    stuck: list[int] | None = field(default_factory=list)
    after: tuple[int, int] = START
    rows: int = 0
    duplicates_done: bool = False
    values: FieldPass | None = None
    hold: LargeRemovalHold | None = None
    retention_days: dict[tuple[str, str], int] = field(default_factory=dict)
    large_fields: list[str] = field(default_factory=list)
    large: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """Nothing is left to remove (or the row part is held)."""
        return bool(self.held) or self.duplicates_done or not self.cutoffs


def row_retention_days(retention_days: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """The report retention per kind: the longest retention among the kind's fields.

    Args:
        retention_days: ``(kind, field) -> days`` (effective retention, as apply_retention gets it).
    """
    out: dict[str, int] = {}
    for (kind, _fld), days in retention_days.items():
        out[kind] = max(out.get(kind, 0), int(days))
    return out


def count_old_rows(conn: sqlite3.Connection, kind: str, cutoff: int, fields: Sequence[str],
                   ids: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(rows of kind the pass removes, rows of kind)``: what the large-removal hold compares.

    Counted before the field pass: a row past the cutoff is past every field's cutoff of its kind (the
    report retention is the longest), so it is removed when every field it holds is one of ``fields``.
    A scan of the kind's rows (only those ``lo < id <= hi`` when ``ids`` is ``(lo, hi)``): only counted when
    a hold may apply.
    """
    marks = ",".join("?" * len(fields))
    lo, hi = ids if ids is not None else (-(2 ** 62), 2 ** 62)
    old, held = conn.execute(
        "SELECT COALESCE(SUM(w <= ? AND w + l <= ? AND received_at <= ? AND " + _AT_OR_BELOW_FLOOR % "reports" +
        " AND NOT EXISTS (SELECT 1 FROM json_each(m) j WHERE j.key NOT IN (%s))"
        " AND NOT EXISTS (SELECT 1 FROM json_each(e) j WHERE j.key NOT IN (%s))), 0), COUNT(*)"
        " FROM reports WHERE kind = ? AND id > ? AND id <= ?" % (marks, marks),
        (cutoff, cutoff, cutoff, *fields, *fields, kind, lo, hi)).fetchone()
    return int(old), int(held)


def remove_row_batch(conn: sqlite3.Connection, kind: str, cutoff: int, keep_id: int, after: tuple[int, int],
                     phase: str = "band", stuck: Sequence[int] = (), limit: int | None = None
                     ) -> tuple[dict[str, int], tuple[int, int] | None, list[int], int]:
    """Remove up to ``limit`` (default :data:`ROW_BATCH`) emptied rows of ``kind`` older than ``cutoff`` whose seq
    is at or below their device's ACK floor (inside the caller's transaction), never the row ``keep_id`` or above;
    retire their seqs first. Their alarms go with them (ON DELETE CASCADE). The rows read (:class:`RowPass`
    ``phase``): ``band``, up to ``limit`` rows of ``kind`` with ``w`` at or before ``cutoff`` whose ``(w, id)`` is
    after ``after`` (the index on ``w``); ``new``, the rows with an id after ``after[1]`` (up to ``limit`` ids);
    ``stuck``, up to ``limit`` of the ids ``stuck`` from index ``after[1]`` on.

    Returns:
        The rows removed per device, the ``after`` to start the phase's next batch after (None: the phase has
        nothing more to read), the ids of the rows of ``kind`` read with ``w`` at or before ``cutoff`` and an id
        below ``keep_id`` that cannot go yet, and how many rows (``band``) or ids the batch read.
    """
    batch = ROW_BATCH if limit is None else max(1, limit)
    args: dict[str, Any] = {"cutoff": cutoff, "kind": kind, "keep": keep_id, "batch": batch}
    select = ("SELECT id, device, seq, w, " + _REMOVABLE + " FROM reports ")
    mine = " AND w <= :cutoff AND kind = :kind AND id < :keep"
    nxt: tuple[int, int] | None
    if phase == "band":
        rows = conn.execute(select + "INDEXED BY reports_w WHERE w <= :cutoff AND (w, id) > (:aw, :aid)" + mine
                            + " ORDER BY w, id LIMIT :batch", dict(args, aw=after[0], aid=after[1])).fetchall()
        nxt = (int(rows[-1][3]), int(rows[-1][0])) if len(rows) == batch else None
        read = len(rows)
    elif phase == "new":
        hi = min(after[1] + batch, keep_id - 1)
        rows = [] if hi <= after[1] else conn.execute(select + "WHERE id > :lo AND id <= :hi" + mine,
                                                      dict(args, lo=after[1], hi=hi)).fetchall()
        nxt = (0, hi) if hi < keep_id - 1 else None
        read = max(0, hi - after[1])
    elif phase == "stuck":
        ids = list(stuck[after[1]:after[1] + batch])
        rows = [] if not ids else conn.execute(select + "WHERE id IN (SELECT value FROM json_each(:ids))" + mine,
                                               dict(args, ids=json.dumps(ids))).fetchall()
        nxt = (0, after[1] + batch) if after[1] + batch < len(stuck) else None
        read = len(ids)
    else:
        raise ValueError("no such phase of the row part: %r" % (phase,))
    gone = [r for r in rows if r[4]]
    left = [int(r[0]) for r in rows if not r[4]]
    highest: dict[str, int] = {}
    count: dict[str, int] = {}
    for _id, device, seq, _w, _ok in gone:
        highest[str(device)] = max(highest.get(str(device), 0), int(seq))
        count[str(device)] = count.get(str(device), 0) + 1
    if gone:
        _retire(conn, highest)
        conn.executemany("DELETE FROM reports WHERE id = ?", [(int(r[0]),) for r in gone])
    return count, nxt, left, read


def next_phase(rows: RowPass, mark: RowMark | None) -> str:
    """Move ``rows`` to the next phase of the kind it removes (``mark``: what the last pass through the kind
    left, or None) and return it (``""``: the kind is through)."""
    order = ["band"] if mark is None else ["stuck", "new", "band"]
    following = order[order.index(rows.phase) + 1:] if rows.phase in order else order
    rows.phase = following[0] if following else ""
    if rows.phase == "band":
        rows.after = START if mark is None else (mark.cutoff, MAX_ID)  # w after the mark's cut-off
    elif rows.phase == "new":
        assert mark is not None
        rows.after = (0, mark.keep_id - 1)  # from the row the last pass kept as the newest on
    else:
        rows.after = (0, 0)
    return rows.phase


def remove_window_duplicates(conn: sqlite3.Connection, kind: str, cutoff: int) -> int:
    """Remove the ``window_duplicates`` rows of ``kind`` whose stored release (``kept_seq``) is gone, whose
    reception is older than ``cutoff`` and whose seq is at or below their device's ACK floor (inside the
    caller's transaction), retiring their seqs first; return how many. Such a row records why a release was
    not stored: it goes with the release it names. The newest row (the highest rowid) stays, as the newest
    report does: its rowid is never reused (see "Report ids" above). Rows a development build recorded
    without a kind (``''``) are passed with the longest cutoff."""
    where = ("FROM window_duplicates wd WHERE wd.kind = ?1 AND wd.received_at <= ?2 AND wd."
             + _AT_OR_BELOW_FLOOR % "wd" + " AND wd.rowid < (SELECT MAX(rowid) FROM window_duplicates)"
             " AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.device = wd.device AND r.seq = wd.kept_seq)")
    rows = conn.execute("SELECT wd.device, MAX(wd.seq), COUNT(*) " + where + " GROUP BY wd.device",
                        (kind, cutoff)).fetchall()
    if not rows:
        return 0
    _retire(conn, {str(d): int(s) for d, s, _n in rows})
    conn.execute("DELETE FROM window_duplicates WHERE rowid IN (SELECT wd.rowid " + where + ")", (kind, cutoff))
    return sum(int(n) for _d, _s, n in rows)


def _retire(conn: sqlite3.Connection, highest: Mapping[str, int]) -> None:
    conn.executemany(
        "INSERT INTO retired_seqs (device, seq) VALUES (?, ?)"
        " ON CONFLICT(device) DO UPDATE SET seq = MAX(seq, excluded.seq)", sorted(highest.items()))


def retired_seqs(conn: sqlite3.Connection) -> dict[str, int]:
    """The highest removed seq per device."""
    return {str(d): int(s) for d, s in conn.execute("SELECT device, seq FROM retired_seqs")}
