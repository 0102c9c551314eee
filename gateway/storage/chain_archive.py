"""Archiving the oldest provenance chain entries out of the store (``civicedge gateway archive-log``).

The chain is never trimmed by the gateway (~228 bytes per stored report, kept after retention removed the
report). :func:`archive_chain` moves its entries up to a position into a verifiable export file and only then
removes them from ``chain``, in one transaction with a row in ``chain_checkpoints`` (the last archived entry's
pos and hash, the count, the time, the file's sha256 and name):

* the file is written beside its name, synced, linked into place (never over an existing file) and its
  directory synced; it is then read back, hashed and verified against what was written. Only after that is
  the store changed, so a crash or a failed delete leaves the complete archive and the store as it was;
* the newest entry (the chain's head) always stays in ``chain``: the gateway continues from it, and so does an
  older gateway that knows nothing of checkpoints (the table needs no schema version, see schema.py);
* an export of the trimmed store starts with the checkpoint line (gateway.storage.provenance), so
  ``verify-log ARCHIVE`` and ``verify-log LIVE --after <archive head>`` together prove the whole chain.

The caller holds the store's single-writer lock: no gateway writes the store meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from gateway.errors import ProvenanceError, StorageError
from gateway.storage.provenance import (CHECKPOINTS_TABLE, ChainSummary, has_checkpoint, verify_export_summary,
                                          write_entries)


@dataclass(frozen=True)
class ArchiveResult:
    """What one archive run wrote and removed.

    Attributes:
        summary: the archive's entry count, head (the hash of its last entry) and, for a second or later
            archive, the checkpoint it continues after.
        first: pos of the first archived entry; ``upto``: of the last.
        sha256: hex SHA-256 of the archive file, as recorded in ``chain_checkpoints``.
    """

    summary: ChainSummary
    first: int
    upto: int
    sha256: str
    already: str | None = None  # the file of a checkpoint recorded at ``upto`` before (archived again after a
    # recovery merge put the entries back): no new row was recorded



def plan(conn: sqlite3.Connection, *, before: int | None = None, keep: int | None = None) -> tuple[int, int]:
    """The first and last pos to archive: those before pos ``before``, or all but the newest ``keep`` entries.

    Raises:
        StorageError: ``nothing_to_archive`` (no entry before that point is still in the store),
            ``bad_position`` (``before`` is past the head entry, which always stays), ``corrupt`` (the
            positions in ``chain`` have a gap: entries were removed other than by archive-log).
    """
    first, head, count = conn.execute("SELECT min(pos), max(pos), count(*) FROM chain").fetchone()
    if not count:
        raise StorageError("the store's provenance chain has no entries to archive", reason="nothing_to_archive")
    if count != head - first + 1:
        raise StorageError("the store's provenance chain has gaps (%d entries from pos %d to %d): entries were "
                           "removed other than by archive-log; export-log | verify-log names the first; nothing was "
                           "archived" % (count, first, head), reason="corrupt")
    if first != 1:
        start = conn.execute("SELECT prev FROM chain WHERE pos = ?", (first,)).fetchone()[0]
        if not has_checkpoint(conn, first - 1, start):
            raise StorageError(_missing_start(conn, first), reason="corrupt")
    if before is not None and before > head:
        raise StorageError("--before %d is past the chain's head entry (pos %d), which always stays in the store "
                           "(the gateway continues the chain from it): give --before %d or less"
                           % (before, head, head), reason="bad_position")
    upto = before - 1 if before is not None else head - (keep or 1)
    if upto < first:
        raise StorageError("nothing to archive: the store's chain holds pos %d to %d%s and the head entry stays"
                           % (first, head, "" if first == 1 else " (the entries before were archived)"),
                           reason="nothing_to_archive")
    _check_recorded(conn, upto)
    return first, upto


def _missing_start(conn: sqlite3.Connection, first: int) -> str:
    """Why a chain starting at pos ``first`` (> 1) with no archive recorded just before it is refused."""
    cp = conn.execute("SELECT max(pos) FROM chain_checkpoints WHERE pos < ?", (first,)).fetchone() if _has_table(
        conn) else None
    after = cp[0] if cp is not None and cp[0] is not None else 0
    if after == first - 1:  # an archive ends there, but the entry after it does not link to it
        why = ("its first entry (pos %d) does not link to the archive recorded at pos %d (a different chain, or "
               "entries replaced)" % (first, after))
    else:
        why = ("entries pos %d to %d are missing and no archive records them (%s): they were removed other than "
               "by archive-log, or lost" % (after + 1, first - 1,
                                              "the last archive ends at pos %d" % after if after else "none was made"))
    return ("the store's provenance chain starts at pos %d: %s; export-log | verify-log - names the broken link; "
            "nothing was archived (an archive would hide the gap)" % (first, why))


def _has_table(conn: sqlite3.Connection) -> bool:
    """Whether the store has the ``chain_checkpoints`` table (a store from before archive-log has not)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain_checkpoints'"
                        ).fetchone() is not None


def _check_recorded(conn: sqlite3.Connection, upto: int) -> None:
    """Refuse an archive up to ``upto`` when a checkpoint at ``upto`` records another hash than the entry there
    (a fork); the same hash (its entries put back by a recovery merge, archived again) is fine: the row stays.

    Raises:
        StorageError: ``corrupt``.
    """
    recorded = _recorded(conn, upto)
    if recorded is None:
        return
    here = conn.execute("SELECT hash FROM chain WHERE pos = ?", (upto,)).fetchone()
    if here is not None and here[0] != recorded[0]:
        raise StorageError("the store's chain entry at pos %d has hash %s, but the archive recorded at that pos (%s) "
                           "ends at hash %s: the chain forked from the archived one (entries replaced, or merged from "
                           "another store); nothing was archived: export-log | verify-log - and verify-log %s say "
                           "which is sound" % (upto, here[0], recorded[1], recorded[0], recorded[1]), reason="corrupt")


def _recorded(conn: sqlite3.Connection, pos: int) -> tuple[str, str] | None:
    """``(hash, file)`` of the checkpoint recorded at ``pos``, or None."""
    if not _has_table(conn):
        return None
    row = conn.execute("SELECT hash, file FROM chain_checkpoints WHERE pos = ?", (pos,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def archive_chain(conn: sqlite3.Connection, target: Path, *, first: int, upto: int) -> ArchiveResult:
    """Write the entries ``first``..``upto`` of ``conn``'s chain to the new file ``target``, then remove them.

    ``conn`` is a writer connection in autocommit mode (``isolation_level=None``) of a store whose lock the
    caller holds; :func:`plan` gave ``first`` and ``upto``.

    Raises:
        StorageError: ``exists`` (``target`` appeared meanwhile: nothing was written over it),
            ``write_failed`` (the file could not be written or did not read back as written: the store
            is unchanged; or the removal failed: the archive is complete and the store unchanged), and
            what :func:`gateway.storage.provenance.iter_chain` raises for a damaged entry.
    """
    summary = _write_file(conn, target, upto)
    sha256, read_back = _read_back(target)
    if read_back != summary or summary.count != upto - first + 1:
        raise StorageError("the archive %s does not read back as written (%s, not %s): the store was not changed; "
                           "check the disk, remove the file and archive again" % (target, read_back, summary),
                           reason="write_failed")
    try:
        already = _trim(conn, summary, upto, sha256, target)
    except sqlite3.Error as exc:
        raise StorageError("the archive %s is complete (%d entries, head %s, sha256 %s), but removing its entries "
                           "from the store failed: %s; the store was left unchanged (its chain still holds them): "
                           "keep or delete the file and archive again"
                           % (target, summary.count, summary.head, sha256, exc), reason="write_failed") from exc
    return ArchiveResult(summary=summary, first=first, upto=upto, sha256=sha256, already=already)


def _write_file(conn: sqlite3.Connection, target: Path, upto: int) -> ChainSummary:
    """Write the export up to ``upto`` beside ``target``, sync it, link it into place (never over a file)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".%s." % target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            conn.execute("BEGIN")  # one snapshot for the whole file
            try:
                summary = write_entries(conn, fh, upto)
            finally:
                conn.execute("ROLLBACK")
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)
        except OSError as exc:  # vfat without `quiet` refuses chmod: the file's mode is then the mount's
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
        try:
            os.link(tmp, target)  # fails on an existing file: an archive is never written over
        except FileExistsError:
            raise _appeared(target) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            # A file system without hard links (FAT on a USB stick): a rename, after a last look (a file made
            # in between these two calls would be replaced; only the -o check before guards it).
            if os.path.lexists(target):
                raise _appeared(target) from None
            os.rename(tmp, target)
        _sync_dir(target.parent)
    except OSError as exc:
        raise StorageError("cannot write the archive %s: %s; the store was not changed"
                           % (target, exc.strerror or exc), reason="write_failed") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return summary


def _appeared(target: Path) -> StorageError:
    return StorageError("%s exists (made while the archive was written); nothing was written over it and the store "
                        "was not changed: give a new file name" % target, reason="exists")


def _sync_dir(directory: Path) -> None:
    """Make a new name in ``directory`` durable (its entries synced)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_back(target: Path) -> tuple[str, ChainSummary]:
    """The sha256 of ``target`` and its verified summary, from one read of the file."""
    digest = hashlib.sha256()

    def lines(fh: IO[bytes]) -> Iterator[str]:  # streamed: an archive may hold millions of entries
        for raw in fh:
            digest.update(raw)
            yield raw.decode("utf-8")

    try:
        with target.open("rb") as fh:
            summary = verify_export_summary(lines(fh))
    except OSError as exc:
        raise StorageError("cannot read the archive %s back: %s; the store was not changed" % (target, exc),
                           reason="write_failed") from exc
    except (UnicodeDecodeError, ProvenanceError) as exc:  # the file is not what was written
        raise StorageError("the archive %s does not verify as written (%s): the store was not changed; check the "
                           "disk, remove the file and archive again" % (target, exc), reason="write_failed") from exc
    return digest.hexdigest(), summary


def _trim(conn: sqlite3.Connection, summary: ChainSummary, upto: int, sha256: str, target: Path) -> str | None:
    """In one transaction: remove the archived entries and record the checkpoint (after a last look that the
    entries are still those written); return the file of the same checkpoint recorded before, if any."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT count(*), (SELECT hash FROM chain WHERE pos = ?) FROM chain WHERE pos <= ?",
                           (upto, upto)).fetchone()
        if tuple(row) != (summary.count, summary.head):
            raise sqlite3.DatabaseError("the chain changed while the archive was written (%d entries up to pos %d, "
                                        "head %s)" % (row[0], upto, row[1]))
        conn.execute("DELETE FROM chain WHERE pos <= ?", (upto,))
        conn.execute(CHECKPOINTS_TABLE)
        recorded = _recorded(conn, upto)
        if recorded is None:
            conn.execute("INSERT INTO chain_checkpoints (pos, hash, count, archived_at, sha256, file) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (upto, summary.head, summary.count, time.time(), sha256,
                                                       str(target)))
        elif recorded[0] != summary.head:  # plan() looked; a last look in the transaction that deletes
            raise sqlite3.DatabaseError("an archive recorded at pos %d ends at hash %s, not %s"
                                        % (upto, recorded[0], summary.head))
        # else: the same archive again (its entries put back by a recovery merge): already recorded
        conn.execute("COMMIT")
        return None if recorded is None else recorded[1]
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
