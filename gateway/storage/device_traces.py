"""What the report store holds of one device: the check before ``civicedge gateway devices remove``.

A device may leave the registry only when the store holds nothing of it (no report, no ACK floor, no
replay protection of removed reports, no provenance entry): its stored data and its replay protection
would otherwise name an id the registry no longer knows, and a board re-registered under that id would
have its seqs refused as reused. Every table with a ``device`` column counts, so a table added later
is checked without a change here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.errors import StorageError
from gateway.storage.sqlite_uri import open_for_check
from gateway.storage.store_files import real_store_path, store_writer


def device_traces(path: Path, device_id: str) -> list[str]:
    """The tables of the report store at ``path`` holding a row of ``device_id``, sorted; ``[]`` when none,
    or when there is no store file at ``path`` (a gateway that never ran stored nothing).

    Read-only, and safe beside a running gateway: with a writer holding the store the read sees every
    committed transaction through its ``-wal`` (:func:`gateway.storage.sqlite_uri.open_for_check`).

    Raises:
        StorageError: reason ``read_failed``: the store cannot be read (a store that cannot be read is no
            store without the device).
    """
    real = real_store_path(path)
    if not real.is_file():
        return []
    try:
        conn = open_for_check(real, running=store_writer(path) is not None)
        try:
            tables = [str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                      "ORDER BY name")]
            found = []
            for table in tables:
                quoted = '"%s"' % table.replace('"', '""')
                columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(%s)" % quoted)}
                if "device" not in columns:
                    continue
                if conn.execute("SELECT EXISTS (SELECT 1 FROM %s WHERE device = ?)" % quoted,
                                (device_id,)).fetchone()[0]:
                    found.append(table)
            return found
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError("cannot read report store %s to check what it holds of device %s: %s"
                           % (path, device_id, exc), reason="read_failed") from exc
