"""The report store's SQL rows: one ``reports`` row of a record (:func:`report_row`), the store's insert
statements, multi-row ``INSERT``/``SELECT`` over a list of rows in a few fixed chunk sizes (:func:`insert_rows`,
:func:`select_rows`), a persisted counter's increment and a rollback that never hides the error being handled.
No state; gateway.storage.store re-exports the names other code imports from it.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from typing import Any

from gateway.storage.damage import sqlite_message
from gateway.storage.records import ReportRecord

# The store's one logger, whichever of its modules logs (the name operators and tests know).
log = logging.getLogger("gateway.storage.store")


def add_to_counter(conn: sqlite3.Connection, name: str, n: int) -> None:
    """Add ``n`` to the persisted counter ``name`` (created at ``n``), in the caller's transaction."""
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                 (name, n, n))


# One encoder for every row: json.dumps with options builds a new JSONEncoder per call (same output),
# and the C encoder behind it is faster on these small maps than formatting them by hand.
dump_json = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

# Rows per multi-row INSERT, largest first: a few fixed sizes keep the statements in sqlite3's
# statement cache. Sizes whose parameters exceed the library's bound (999 before SQLite 3.32) are skipped.
# Each statement is one step without the GIL and one hand-back of it to the store's thread: 1024-row
# statements halve those per batch of [storage] batch_max (bench/gateway_ingest.py: ~5 % more reports/s).
CHUNKS = (1024, 256, 64, 16, 4, 1)


def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
    """The values of one ``reports`` row, in :data:`INSERT_REPORTS` order (m, e, a as compact JSON)."""
    # e and a are empty in all but releases and alarms: their JSON is a constant, and each encoder call
    # costs ~1.5 µs of the store thread's GIL time per report (same text as dump_json gives).
    return (rec.device, rec.seq, rec.kind, rec.zone, rec.type, rec.w, rec.l, dump_json(rec.m),
            dump_json(rec.e) if rec.e else "{}", dump_json(rec.a) if rec.a else "[]", rec.fw, rec.received_at,
            gateway_id, rec.link, rec.digest)


# The store's row inserts: (statement head, values per row), for insert_rows.
INSERT_REPORTS = ("INSERT OR IGNORE INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at,"
                  " gateway_id, link, digest) VALUES ", 15)
INSERT_CHAIN = ("INSERT INTO chain (pos, device, seq, gateway, digest, prev, hash) VALUES ", 7)
INSERT_FLOORS = ("INSERT INTO ack_floor (device, floor) VALUES ", 2)
UPSERT_FLOORS = " ON CONFLICT(device) DO UPDATE SET floor = MAX(floor, excluded.floor)"


def roll_back(conn: sqlite3.Connection, what: str) -> None:
    """Roll back the open transaction, if any, after a failure in it. A ROLLBACK that fails itself (an I/O
    error, a damaged page) is logged, never raised: the error being handled is the one to report (a
    damaged file is recognised from it), not the rollback's."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.error("rolling back after %s failed as well: %s", what, sqlite_message(exc))


def insert_rows(conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]], *,
                tail: str = "") -> None:
    """Insert ``rows`` (each ``width`` values) through a few multi-row ``INSERT ... VALUES`` statements.

    One statement inserts many rows inside one call into SQLite, which runs without the GIL; with
    ``executemany`` the store thread takes the GIL back after every row, each time competing with
    the event loop for it (measured: ~6 % more reports/s in bench/gateway_ingest.py). ``tail`` ends
    each statement (an ``ON CONFLICT`` clause); ``rows`` must then not repeat a conflict key.
    """
    one = "(" + ",".join("?" * width) + ")"
    bound = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    i, n = 0, len(rows)
    for size in CHUNKS:
        if n - i < size or (size > 1 and size * width > bound):
            continue
        sql = head + ",".join([one] * size) + tail
        while n - i >= size:
            conn.execute(sql, list(itertools.chain.from_iterable(rows[i:i + size])))  # flattened in C
            i += size


# The stored reports of the given (device, w) pairs (releases and aggregates): the VALUES list first (CROSS JOIN keeps that order),
# each pair one search of reports_device_w.
SELECT_PERIODS = ("SELECT r.device, r.type, r.w, r.l, r.e, r.seq FROM (VALUES %s) v CROSS JOIN reports r"
                   " ON r.device = v.column1 AND r.w = v.column2")


def select_rows(conn: sqlite3.Connection, sql: str, width: int, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run ``sql`` (its ``%s`` a ``VALUES`` list of ``width``-value rows) over ``rows`` in the chunk sizes of
    :func:`insert_rows`, and return all result rows."""
    one = "(" + ",".join("?" * width) + ")"
    bound = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    found: list[tuple[Any, ...]] = []
    i, n = 0, len(rows)
    for size in CHUNKS:
        if n - i < size or (size > 1 and size * width > bound):
            continue
        query = sql % ",".join([one] * size)
        while n - i >= size:
            found += conn.execute(query, list(itertools.chain.from_iterable(rows[i:i + size]))).fetchall()
            i += size
    return found
