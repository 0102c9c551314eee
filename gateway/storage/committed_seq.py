"""The highest seq a report store holds for a device, for the read API and for ``civicedge provision --db``."""

from __future__ import annotations

import sqlite3

from gateway.errors import StorageError

# The tables a device's committed seqs are in: stored reports, releases recorded as window duplicates
# (no report row), and per device the highest seq whose row report retention removed. A store of an
# older version (before 3 and 4) lacks the last two: a store file read offline may be one.
_SEQ_TABLES = ("reports", "window_duplicates", "retired_seqs")
# The device's ACK floor: authentic refusals (and gaps given up on) move it past the highest stored seq,
# and a board counting at or below it ignores every ACK (floor above its own last seq).
_FLOOR_TABLE = "ack_floor"


def highest_committed_seq(conn: sqlite3.Connection, device: str) -> int:
    """The highest seq the report store on ``conn`` holds for ``device``: stored, recorded as a window
    duplicate, removed by report retention, or acknowledged (its ACK floor, which refused reports and
    gaps given up on move past the stored ones); 0 when none. A board taking the id over must count above
    it, else the gateway refuses its reports (``seq_reused``) or the board ignores the ACKs (the floor is
    above its seqs) and re-sends for good.

    One statement (one snapshot), an index lookup per table. The one implementation for the gateway's
    read API (:meth:`ReportQueries.highest_seq`) and for ``civicedge provision --db``
    (hil/field/seq_floor.py), which opens a store file read-only itself.

    Raises:
        StorageError: reason ``not_a_store``: the database has no ``reports`` table.
        sqlite3.Error: the database could not be read (the caller says which file).
    """
    present = {str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?)", (*_SEQ_TABLES, _FLOOR_TABLE))}
    if "reports" not in present:
        raise StorageError("not a civicedge report store (no reports table)", reason="not_a_store")
    parts = ["SELECT MAX(seq) AS seq FROM %s WHERE device = ?" % t for t in _SEQ_TABLES if t in present]
    if _FLOOR_TABLE in present:
        parts.append("SELECT MAX(floor) AS seq FROM %s WHERE device = ?" % _FLOOR_TABLE)
    row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM (%s)" % " UNION ALL ".join(parts),
                       (device,) * len(parts)).fetchone()
    return int(row[0])
