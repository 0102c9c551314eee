"""What the report store holds of one device: the check before ``civicedge gateway devices remove``.

A device may leave the registry only when the store holds nothing of it (no report, no ACK floor, no
replay protection of removed reports, no provenance entry): its stored data and its replay protection
would otherwise name an id the registry no longer knows, and a board re-registered under that id would
have its seqs refused as reused. Every table with a ``device`` column counts, so a table added later
is checked without a change here.

The file is classified first (:func:`gateway.storage.store_kind.store_kind`): a file that is no report
store (the registry's own ``devices.sqlite`` named by mistake, an empty file, another program's
database) would hold no row of any device, and must not pass for a store without the device.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.errors import StorageError
from gateway.storage.sqlite_uri import open_for_check
from gateway.storage.store_files import real_store_path, store_writer
from gateway.storage.store_kind import ABSENT, EMPTY, store_kind

#: Tables with a ``device`` column but no index on it, whose rows of a device imply a row of it in a table
#: checked instead: ``chain`` and ``alarms`` rows are written only with their report (ReportStore.insert_batch,
#: one transaction), a report row is deleted only by retention (row_retention), which records the device's
#: highest removed seq in ``retired_seqs`` first (never deleted), and alarms go with their report. So a device
#: with a chain or alarms row has a ``reports`` or ``retired_seqs`` row: the full scans of these (millions of
#: rows on a long-running gateway, twice per removal) are skipped. Any other table without such an index is
#: still scanned (a table added later is checked until it is indexed or listed here).
COVERED = {"chain": ("reports", "retired_seqs"), "alarms": ("reports", "retired_seqs")}


def device_traces(path: Path, device_id: str, *, absent_ok: bool = False) -> list[str]:
    """The table of the report store at ``path`` first found holding a row of ``device_id`` (a list of one),
    or ``[]`` when none does.

    Tables with an index on ``device`` are checked first and the search stops at the first hit; the tables of
    :data:`COVERED` are not read (a row of the device there implies one in a table checked). Only a device that
    was never heard from (the removal's case) costs a look at any other table without such an index.

    Read-only, and safe beside a running gateway: with a writer holding the store the read sees every
    committed transaction through its ``-wal`` (:func:`gateway.storage.sqlite_uri.open_for_check`).

    Args:
        absent_ok: no file at ``path`` counts as a store that holds nothing (the caller was told the gateway
            never ran); otherwise it is refused.

    Raises:
        StorageError: ``no_store``: no file at ``path`` (a mistyped or wrong path must not pass for an empty
            store) unless ``absent_ok``; ``not_a_store``: an empty file or database, or an SQLite database that
            is no report store; what :func:`store_kind` raises for a file it cannot read (``open_failed``,
            ``corrupt``); ``read_failed``: the store cannot be read.
    """
    real = real_store_path(path)
    running = store_writer(path) is not None
    kind = store_kind(real, running=running)
    if kind == ABSENT:
        if absent_ok:
            return []
        raise StorageError("no report store at %s: a store that is not there cannot say the device %s was never "
                           "heard from (a mistyped or wrong path would pass for one); name the store of the gateway "
                           "this registry serves, or, if that gateway never ran, say so (--no-store-yet)"
                           % (path, device_id), reason="no_store")
    if kind == EMPTY:
        raise StorageError("%s is empty (no report store tables): it is not the report store of a gateway that ran, "
                           "so it cannot say the device %s was never heard from; name the gateway's own store"
                           % (path, device_id), reason="not_a_store")
    try:
        conn = open_for_check(real, running=running)
        try:
            indexed, others = _device_tables(conn)
            for table in (*indexed, *(t for t in others if t not in COVERED)):
                if conn.execute("SELECT EXISTS (SELECT 1 FROM %s WHERE device = ?)" % _quoted(table),
                                (device_id,)).fetchone()[0]:
                    return [table]
            return []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError("cannot read report store %s to check what it holds of device %s: %s"
                           % (path, device_id, exc), reason="read_failed") from exc


def _quoted(name: str) -> str:
    return '"%s"' % name.replace('"', '""')


def _device_tables(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """The tables with a ``device`` column, sorted: those with an index whose first column is ``device`` (a
    primary key's included), and the others."""
    indexed: list[str] = []
    others: list[str] = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        quoted = _quoted(str(table))
        if "device" not in {str(r[1]) for r in conn.execute("PRAGMA table_info(%s)" % quoted)}:
            continue
        leading = False
        for index in conn.execute("PRAGMA index_list(%s)" % quoted).fetchall():
            first = conn.execute("PRAGMA index_info(%s)" % _quoted(str(index[1]))).fetchone()
            if first is not None and first[2] == "device":
                leading = True
                break
        (indexed if leading else others).append(str(table))
    return indexed, others
