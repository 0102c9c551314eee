"""The URIs (and the one connection) that open a report store read-only."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path


def read_only_uri(db_path: Path | str, *, one_shot: bool = False) -> str:
    """``file:`` URI opening ``db_path`` read-only (``sqlite3.connect(..., uri=True)``).

    ``as_uri()`` escapes ``?`` and ``#``, which in a hand-built ``file:PATH?mode=ro`` would end the
    file name (a store under a directory named ``a#b`` was opened as ``a``).

    A store in a directory this process cannot write to (a read-only mount, a copy on someone else's
    share) and without a ``-wal`` file (or with an empty one) is opened ``immutable=1``; see :func:`_frozen`.

    Args:
        db_path: The store file.
        one_shot: The caller made sure no writer can take the store for the life of the connection: it holds
            the store's ``<db>.lock`` shared, or the store has no lock file (see :class:`ReadHold`, the one
            place that decides it). A store whose ``-wal`` holds nothing is then opened ``immutable=1``
            wherever it is, so SQLite leaves no empty ``-wal`` and ``-shm`` beside it (a backup's store stays
            as ``civicedge gateway restore`` accepts it). Never pass True on the strength of a lock test made
            without keeping the lock: a gateway starting after the test would write under the read.
    """
    path = Path(db_path).resolve()
    uri = path.as_uri() + "?mode=ro"
    if _frozen(path):
        uri += "&immutable=1"
    elif one_shot and _wal_size(path) == 0:
        uri += "&immutable=1"
    return uri


class ReadHold:
    """How a command's one-shot read opens the store, and the shared hold on the store's single-writer lock
    (``<db>.lock``) it keeps when it needs one: the one helper behind ``export-log``/``verify-log``
    (:func:`gateway.storage.provenance.one_shot_read`) and ``routes plan`` (``ReportQueries(one_shot=True)``).

    Three cases, decided once, here:

    * **A live data directory** (the lock file is there and this user can write the directory: a gateway's
      own, running or stopped): a plain ``mode=ro`` read, with no hold (:attr:`live`). The caller makes its
      reads in ONE read transaction (a consistent snapshot: a writer's checkpoint never passes a reader's
      snapshot), so a gateway, archive-log or restore may take the store meanwhile: a slow reader
      (``export-log | less``) keeps no gateway from starting. The ``-wal``/``-shm`` SQLite uses there are the
      gateway's own files.
    * **No lock file** (a copy no gateway opened: a backup): ``immutable=1`` with no hold, so no
      ``-wal``/``-shm`` is left beside it (``gateway restore`` accepts it as it was). A gateway started on that
      very path during the read would write under it (docs/gateway.md, Provenance log).
    * **A lock file in a directory this user cannot write** (a read-only mount, another user's data directory):
      a plain read cannot make its ``-shm`` there, so the read is ``immutable=1`` (without SQLite's locks) when
      its ``-wal`` is empty, and the shared hold is kept until :meth:`release`: a writer's exclusive lock
      (``lock_store``, ``take_pid_lock``: a gateway starting, archive-log) is refused ``in_use`` meanwhile.
      When the hold is not granted (a writer holds the lock, or the lock file cannot be opened) the read is a
      plain read-only one, even if the writer has stopped since (never immutable on a second look).

    Nothing is created. Release with :meth:`release` (or use it as a context manager) after the read's
    connections are closed.

    Args:
        db_path: The store file.
        hold_live: Take the hold on a live data directory too (and read it ``immutable=1`` when granted),
            as before reads of a live store went without one; for tests of what a held lock looks like.
    """

    def __init__(self, db_path: Path | str, *, hold_live: bool = False) -> None:
        path = Path(db_path).resolve()
        self.path = path
        self._fd: int | None = None
        lock = path.with_name(path.name + ".lock")
        #: True: a gateway's own data directory, read plainly in one transaction with no hold.
        self.live = not hold_live and os.path.lexists(lock) and os.access(path.parent, os.W_OK)
        #: True: this process holds the lock shared; False: not held (a live read, a writer has it, or it
        #: cannot be opened); None: there is no lock file.
        self.granted: bool | None
        if self.live:
            self.granted = False
            self.uri = read_only_uri(path)  # plain mode=ro: the directory is writable
            return
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            self.granted = None
        except OSError:
            self.granted = False
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with a holder's LOCK_EX, even in this process
            except OSError:
                os.close(fd)
                self.granted = False
            else:
                self._fd = fd
                self.granted = True
        self.uri = read_only_uri(path, one_shot=self.granted is not False)

    def release(self) -> None:
        """Give up the shared lock (after the read's connections are closed); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "ReadHold":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def store_is_held(db_path: Path | str) -> bool | None:
    """Whether a process holds the single-writer lock (``<db>.lock``) of the store ``db_path``: a gateway,
    or a backup, restore or archive-log at work (None when this user cannot tell: a lock file it
    cannot open). No lock file: False. Creates nothing; :func:`gateway.pid_lock.lock_holder` as a yes/no
    that tells "cannot tell" apart. A snapshot: a read relying on the store staying unheld keeps a
    :class:`ReadHold` instead."""
    path = Path(db_path).resolve()
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a conflict with the holder's LOCK_EX, even in this process
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock taken
    return False


def check_uri(db_path: Path | str, *, running: bool, main_file_only: bool = False) -> str:
    """The read-only URI that looks at the store ``db_path`` without leaving files beside it.

    For the checks made before a store is opened (``gateway run`` and ``run --check``,
    :mod:`gateway.storage.store_kind`, :func:`gateway.cli.run_check.read_schema_version`). A read-only
    open of a WAL database (every store) in a directory we may write creates its ``-shm`` (32 KB) and an
    empty ``-wal``, and SQLite leaves both when it closes a read-only connection. With no gateway
    running on the store and no ``-wal`` with content (a clean stop checkpoints it into the main file
    and removes it), the main file is all there is to read, so ``immutable=1`` reads it without them.
    A ``-wal`` with content (a killed gateway's) holds commits the main file lacks: ``immutable`` would
    read around them, so that store is opened as any reader opens it (SQLite then adds a ``-shm`` if
    there is none); :func:`open_for_check` reads such a store without that ``-shm``.

    Args:
        db_path: The store file.
        running: A gateway holds the store: it is opened plainly read-only, never ``immutable=1`` (not
            even where :func:`read_only_uri` would choose it: an unwritable directory with an empty
            ``-wal``), since its main file changes under an immutable read; it already has both files.
        main_file_only: The main file alone, ``immutable=1`` whatever its ``-wal`` holds (with no gateway
            running). Not for judging a store: after a checkpoint cut off part-way (a kill, a power cut,
            a full disk) the main file alone reads as damaged while the store with its ``-wal`` is
            whole; the checks use :func:`open_for_check`.
    """
    path = Path(db_path).resolve()  # SQLite's -wal is next to the file itself, not next to a symlink to it
    if running:  # never immutable, not even as read_only_uri frees an unwritable directory's store
        return path.as_uri() + "?mode=ro"
    uri = read_only_uri(path)
    if uri.endswith("&immutable=1"):
        return uri
    if not main_file_only and _wal_size(path) != 0:  # commits in the -wal, or cannot tell
        return uri
    return uri + "&immutable=1"


def open_for_check(db_path: Path | str, *, running: bool) -> sqlite3.Connection:
    """A read-only connection to the store ``db_path`` that sees every committed transaction and leaves
    nothing beside the file: the one read the checks before an open make (:mod:`gateway.storage.store_kind`,
    ``run --check``'s schema read).

    * ``running`` (a gateway holds the store): plainly read-only (:func:`check_uri`); it already has its
      ``-wal`` and ``-shm``, and its main file changes under an immutable read.
    * No ``-wal``, or an empty one: ``immutable=1`` on the main file, which holds every commit.
    * A ``-wal`` with content (a gateway killed, or stopped with a full disk, before its last checkpoint,
      or cut off during one: the main file alone may then read as damaged): read together with that
      ``-wal``, as any SQLite reader does, but with the WAL index in this connection's memory
      (``PRAGMA locking_mode=EXCLUSIVE`` before the first read) instead of in a ``-shm`` file, and
      through the ``unix-none`` VFS, which takes no file locks (an exclusive lock cannot be taken on a
      read-only descriptor; ``immutable=1`` takes none either). So no ``-shm`` is created, the ``-wal``
      is only read (the connection is read-only: it never checkpoints or removes it), and a file that
      is then refused (another program's database, a damaged file) is left exactly as it was. It works
      in a directory we cannot write to as well.

    No case creates a file: the only ``-shm`` a check uses is a running gateway's own. Without locks a
    read can meet a writer that is no gateway (an operator's ``sqlite3`` writing the file, which holds
    no ``.lock``) mid-checkpoint, and report damage that is not there; an immutable read has the same
    limit. A ``unix-none`` connection shares no lock state with this process's other connections to
    the file, whose POSIX locks its close would drop: it is opened only before the store itself is
    (the gateway's start, the ``run --check`` command).

    Raises:
        sqlite3.Error: SQLite cannot open the file.
    """
    path = Path(db_path).resolve()  # SQLite's -wal is next to the file itself, not next to a symlink to it
    if running or _wal_size(path) == 0:
        return sqlite3.connect(check_uri(path, running=running), uri=True)
    conn = sqlite3.connect(path.as_uri() + "?mode=ro&vfs=unix-none", uri=True)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # before the first read: the WAL index in memory
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def wal_has_content(db_path: Path | str) -> bool:
    """True when the store's ``-wal`` holds pages (or its size cannot be told): commits that may not be
    in the main file yet (a gateway killed, or stopped without its checkpoint)."""
    return _wal_size(Path(db_path).resolve()) != 0


def _frozen(path: Path) -> bool:
    """True when ``path`` can only be read as an immutable file, and reading it so is safe.

    A WAL-mode database (every report store) needs its ``-shm`` index even to be read, and SQLite
    creates that file next to the database: in a directory we cannot write to, a plain ``mode=ro``
    open fails ("unable to open database file"), e.g. ``export-log`` on a backup on a read-only
    mount. ``immutable=1`` reads the file without ``-shm`` and without locks, and without looking at
    a ``-wal``, so it is used only when:

    * the directory is not writable for us (otherwise SQLite creates ``-shm`` and reads normally,
      seeing a running writer's commits), and
    * there is no ``-wal``, or an empty one. SQLite keeps a ``-wal`` while any connection has the
      database open in WAL mode (a running gateway always does, with its commits in it) and removes
      it when the last one closes cleanly, after checkpointing it into the main file; a read-only
      reader leaves an empty one behind. So an absent or empty ``-wal`` means every committed
      transaction is in the main file, which is then all there is to read. A ``-wal`` with content
      (a running writer's, or one left by a writer that was killed) holds commits the main file
      lacks: reading around it would give old data, so that case keeps the plain open (and its error).

    What remains is a writer that starts while we read; only someone who can write the directory can
    do that, and it writes its new ``-wal`` first and the main file only at a checkpoint.
    """
    if os.access(path.parent, os.W_OK):
        return False
    return _wal_size(path) == 0


def _wal_size(path: Path) -> int | None:
    """The size of ``path``'s ``-wal`` (0 when there is none; None when it cannot be told)."""
    try:
        return os.stat(path.with_name(path.name + "-wal")).st_size
    except FileNotFoundError:
        return 0
    except OSError:
        return None
