"""A damaged report store: how SQLite says so, how the gateway checks for it, what the operator is told.

SQLite reports a damaged file as ``SQLITE_CORRUPT`` ("database disk image is malformed", and its
extended codes such as ``SQLITE_CORRUPT_INDEX``) or ``SQLITE_NOTADB`` ("file is not a database": a
header or page overwritten). Both mean the same to the operator: the file must be recovered or
restored (docs/gateway.md, *Damaged file*); neither is a passing condition such as a busy or full
disk, so a store found damaged stays damaged for the gateway until it is restarted.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from gateway.errors import StorageError
from gateway.storage.sqlite_uri import read_only_uri

# What the operator reads next to every damage message: the docs section with the recovery recipe.
DOCS = "see docs/gateway.md, Damaged file"
# Problems PRAGMA quick_check lists at most (it stops there; the first ones say enough).
QUICK_CHECK_MAX = 10
# SQLite VM steps between two looks at QuickCheck's interrupt flag (well under a millisecond of work).
PROGRESS_STEPS = 10_000


def primary_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc`` (extended codes such as SQLITE_CORRUPT_INDEX share the low
    byte), None when it is not an SQLite error that carries one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None or not isinstance(exc, sqlite3.Error) else int(code) & 0xFF


def is_corrupt(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite finding the file damaged (SQLITE_CORRUPT or SQLITE_NOTADB, any
    extended code); busy, full, read-only and I/O errors are not."""
    return primary_code(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def sqlite_message(exc: BaseException) -> str:
    """SQLite's own words for ``exc`` with its error name (``database disk image is malformed
    (SQLITE_CORRUPT)``): never a value of the store, only the library's message."""
    name = getattr(exc, "sqlite_errorname", None)
    return "%s (%s)" % (exc, name) if name else str(exc)


def damaged_error(path: Path, exc: BaseException, what: str | None = None) -> StorageError:
    """The ``corrupt`` StorageError for SQLite's ``exc`` met on the store at ``path`` (while doing ``what``):
    the file, SQLite's words (never a stored value) and what to do."""
    return StorageError(
        "report store %s is damaged (SQLite: %s%s); stop the gateway, then recover what is readable into a new "
        "file (sqlite3 .dump) or restore the last backup (%s)"
        % (path, sqlite_message(exc), "" if what is None else ", while %s" % what, DOCS),
        reason="corrupt", sqlite=sqlite_message(exc))


def unclean_stop(path: Path) -> bool:
    """True when the store at ``path`` (the file itself, symlinks resolved) was not closed cleanly.

    A clean stop checkpoints the WAL with ``TRUNCATE`` (gateway.storage.store, ``close``), leaving no
    ``-wal`` or an empty one; a gateway that was killed, crashed or lost power leaves a ``-wal`` holding
    pages (SQLite only truncates it at that checkpoint). A clean stop during which another process was
    reading the store also leaves pages behind (logged then): a check too many, never one too few.
    Read before the store is opened; creates nothing.
    """
    try:
        return os.stat(path.with_name(path.name + "-wal")).st_size > 0
    except OSError:
        return False


class QuickCheck:
    """``PRAGMA quick_check`` of the store at ``path`` through a read-only connection of its own.

    It reads every page and checks the B-trees' structure (not index contents against the tables,
    which ``integrity_check`` adds at several times the cost): measured 1.7 s (page cache warm) to
    4.8 s (cold) for a store of 1,000,000 reports (470 MB). Safe while the gateway writes: WAL lets it
    read a snapshot (the WAL grows meanwhile: a checkpoint cannot pass a reader). :meth:`run` blocks;
    :meth:`interrupt` (any thread) stops it early.
    """

    def __init__(self, path: Path, *, max_problems: int = QUICK_CHECK_MAX) -> None:
        self.path = Path(path)
        self.max_problems = max(1, int(max_problems))
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._interrupted = False

    def run(self) -> list[str] | None:
        """Run the check.

        Returns:
            SQLite's problem lines (at most ``max_problems``), empty when the file is sound, or None when
            :meth:`interrupt` stopped it.

        Raises:
            sqlite3.Error: the check could not run; a file SQLite refuses to read at all raises an error
                :func:`is_corrupt` recognises.
        """
        conn = sqlite3.connect(read_only_uri(self.path), uri=True, check_same_thread=False)
        with self._lock:
            if self._interrupted:
                conn.close()
                return None
            self._conn = conn
        # sqlite3_interrupt stops only a statement already running: one that lands before the PRAGMA starts
        # does nothing. The flag, polled every 10,000 VM steps, stops the check wherever it lands.
        conn.set_progress_handler(lambda: 1 if self._interrupted else 0, PROGRESS_STEPS)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            rows = conn.execute("PRAGMA quick_check(%d)" % self.max_problems).fetchall()
        except sqlite3.OperationalError:
            if self._interrupted:
                return None
            raise
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        # One row may hold several lines; the "*** in database main ***" heading names no problem.
        found = [line for r in rows for line in str(r[0]).splitlines() if line and not line.startswith("***")]
        return [] if found == ["ok"] else found

    def interrupt(self) -> None:
        """Stop a running check (it returns None) or one not started yet."""
        with self._lock:
            self._interrupted = True
            if self._conn is not None:
                self._conn.interrupt()


def quick_check(path: Path, *, max_problems: int = QUICK_CHECK_MAX) -> list[str]:
    """Run :class:`QuickCheck` on ``path`` to its end: SQLite's problem lines, empty when the file is sound.

    Raises:
        sqlite3.Error: as :meth:`QuickCheck.run`.
    """
    found = QuickCheck(path, max_problems=max_problems).run()
    assert found is not None  # nothing can interrupt it
    return found


class StoreDamage:
    """The first damage found in one open store, kept until the gateway restarts (thread-safe).

    Reads on the web's threads, the store's own thread and the start-up check all report here;
    ``/healthz``, ``civicedge_store_damaged`` and the refusal to commit read it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: str | None = None
        self.found_at: float | None = None

    @property
    def problem(self) -> str | None:
        """What was found first (SQLite's words, where), or None while the store looks sound."""
        return self._found

    def report(self, problem: str) -> bool:
        """Record ``problem``; return True when it is the first one (the caller then logs it)."""
        with self._lock:
            if self._found is not None:
                return False
            self._found, self.found_at = problem, time.time()
            return True
