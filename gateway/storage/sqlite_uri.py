"""The URI that opens a report store read-only."""

from __future__ import annotations

import os
from pathlib import Path


def read_only_uri(db_path: Path | str) -> str:
    """``file:`` URI opening ``db_path`` read-only (``sqlite3.connect(..., uri=True)``).

    ``as_uri()`` escapes ``?`` and ``#``, which in a hand-built ``file:PATH?mode=ro`` would end the
    file name (a store under a directory named ``a#b`` was opened as ``a``).

    A store in a directory this process cannot write to (a read-only mount, a copy on someone else's
    share) and without a ``-wal`` file (or with an empty one) is opened ``immutable=1``; see :func:`_frozen`.
    """
    path = Path(db_path).resolve()
    uri = path.as_uri() + "?mode=ro"
    if _frozen(path):
        uri += "&immutable=1"
    return uri


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
    try:
        return os.stat(path.with_name(path.name + "-wal")).st_size == 0
    except FileNotFoundError:
        return True
    except OSError:  # cannot tell: the plain open decides
        return False
