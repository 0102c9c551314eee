"""The copy the gateway makes of its report store when the store's file is deleted under it.

SQLite keeps the deleted file (and its ``-wal``) open: it is whole while the gateway runs and gone at the
stop. Once the store has found it gone it commits nothing more and no longer checkpoints
(gateway.storage.store), and this module copies it, on the store's own thread and through the store's own
connection, with SQLite's online backup API: a consistent snapshot as of the last commit, with what the
``-wal`` holds, by construction (no ``cp`` of two files that might change in between). The copy is
``<store>.salvaged`` (or ``<store>.salvaged-<n>``; nothing is overwritten) beside the file itself that the
gateway opened: behind a ``[storage] path`` that is a symlink, next to the file it named (where the store's
``-wal`` and ``-shm`` are, on the file system chosen for the data), so that moving the copy into place keeps
the link; when that directory is gone or not writable, beside the configured path, or in the nearest
directory above it the gateway's user can write (:func:`gateway.storage.store_files.salvage_dir`); the message
says where, or that there is none. A single
file in rollback-journal mode, mode 0600 and owned by the gateway's user (it holds personal data), written under a temporary name and
linked into place only once complete and checked (``PRAGMA quick_check``). Free space is checked first:
without room for the copy, or when writing it fails, the message gives the ``cp`` commands instead
(:func:`gateway.storage.store_files.copy_out`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sqlite3
import tempfile
from pathlib import Path

from gateway.private_dirs import fsync_dir, fsync_file
from gateway.storage.disk_space import MIB, free_bytes
from gateway.storage.schema_backup import megabytes
from gateway.storage.store_files import (NEW_STORE_ASIDE, FileIdentity, copy_out, put_back, salvage_dir,
                                         salvage_name)

log = logging.getLogger(__name__)

# Left free besides the copy: a file system filled to the last byte fails everything else on it too.
MARGIN_BYTES = 16 * MIB
# Problems of the copy's quick_check shown in the message.
SHOWN_PROBLEMS = 3


def salvage(conn: sqlite3.Connection, files: list[FileIdentity]) -> tuple[str, bool]:
    """Copy the store open on ``conn`` (its watched ``files``, from
    :func:`gateway.storage.store_files.file_identities`: the database first) into the directory
    :func:`gateway.storage.store_files.salvage_dir` chooses (beside the file itself that was opened, when it
    can), and say what was done, for :func:`gateway.storage.store_files.file_problem`'s message: where the
    copy is, what it holds and what to do next; or, when it cannot be made, why and the ``cp`` commands; and
    whether to try again later (only when there was no room: a look at the free space
    is cheap, a copy that failed part-way is not). Call on the store's thread, outside any transaction,
    once it commits nothing more.
    """
    name, db = files[0].name, files[0].opened
    where, moved = salvage_dir(files)
    try:
        size = int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(conn.execute("PRAGMA page_size")
                                                                           .fetchone()[0])
    except sqlite3.Error as exc:
        return copy_out(files, "; the gateway could not copy it itself: reading its size failed: %s" % exc), False
    free = free_bytes(where)
    if free is not None and free < size + MARGIN_BYTES:
        return copy_out(files, "; the gateway could not copy it itself: %s free on the file system of %s, the "
                        "copy needs %s and %s more is kept free: free space there first, or give the commands that "
                        "follow targets on a file system with room" % (megabytes(free), where, megabytes(size),
                                                                         megabytes(MARGIN_BYTES))), True
    try:
        dest, reports, problems = _write_copy(conn, where / db.name)
    except (sqlite3.Error, OSError) as exc:
        return copy_out(files, "; the gateway could not copy it itself: %s" % exc), False
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS]) + ("; ..." if len(problems) > SHOWN_PROBLEMS else "")
        return copy_out(files, "; the gateway copied it to %s but PRAGMA quick_check of the copy found: %s (the "
                        "store itself is damaged, or the copy is); keep that copy and copy the files out too"
                        % (dest, shown)), False
    # Beside the file itself, not the link: say so where the link is elsewhere (an operator looks beside it).
    beside = moved or ("" if db == Path(os.path.abspath(name)) else ", beside %s, the file %s leads to" % (db, name))
    log.info("report store %s: copied, with SQLite's backup API, to %s%s (%d report(s), %s, quick_check ok)",
             name, dest, beside, reports, megabytes(dest.stat().st_size))
    return (" (no name is left for the file it writes: what it held is lost when the gateway stops, but the gateway "
            "copied it, as of its last commit, to %s%s (%d report%s, %s, checked with PRAGMA quick_check: ok; mode "
            "0600, the gateway user's); it commits nothing more: stop the gateway, move aside anything left at %s "
            "%s, %s-wal and %s-shm, then move the copy into place (%smv -T -n %s %s) and start it again)"
            % (dest, beside, reports, "" if reports == 1 else "s", megabytes(dest.stat().st_size), db,
               NEW_STORE_ASIDE, db, db, put_back(db), shlex.quote(str(dest)), shlex.quote(str(db)))), False


def _write_copy(conn: sqlite3.Connection, db: Path) -> tuple[Path, int, list[str]]:
    """Back the store up into a new file next to ``db`` (the store's name in the directory chosen), check it and link it into place under
    :func:`salvage_name`; return that name, the reports it holds and what ``quick_check`` found
    (nothing: sound). A copy cut off part-way is removed (it never has the final name)."""
    fd, tmp_name = tempfile.mkstemp(prefix=db.name + ".salvaged.", suffix=".tmp", dir=db.parent)  # 0600
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        copy = sqlite3.connect(tmp_name, isolation_level=None)
        try:
            conn.backup(copy)
            # one self-contained file: the backup took the store's WAL mode along with its header
            copy.execute("PRAGMA journal_mode=DELETE")
            problems = [str(r[0]) for r in copy.execute("PRAGMA quick_check")]
            problems = [] if problems == ["ok"] else problems
            reports = int(copy.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
        finally:
            copy.close()
        fsync_file(tmp_name)
        while True:
            dest = salvage_name(db)
            try:
                os.link(tmp_name, dest)  # never over an existing file (a rename would replace it)
                break
            except FileExistsError:
                continue  # taken meanwhile: the next name
            except OSError:  # no hard links on this file system: the name was free a moment ago
                os.rename(tmp_name, dest)
                break
        fsync_dir(db.parent)
        return dest, reports, problems
    finally:
        for leftover in (tmp, Path(tmp_name + "-journal"), Path(tmp_name + "-wal"), Path(tmp_name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
