"""One read transaction (one snapshot of the store) for several statements on a read connection."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def one_read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the statements of the ``with`` block in one read transaction of ``conn``: ``BEGIN`` ... ``COMMIT``,
    unless ``conn`` is in one already (a :meth:`gateway.storage.queries.ReportQueries.snapshot`), whose
    snapshot the block then reads and leaves open for the statements after it."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
