"""The URIs that open a report store read-only."""

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
    there is none).

    Args:
        db_path: The store file.
        running: A gateway holds the store: it is opened plainly read-only, never ``immutable=1`` (not
            even where :func:`read_only_uri` would choose it: an unwritable directory with an empty
            ``-wal``), since its main file changes under an immutable read; it already has both files.
        main_file_only: The caller asks what the main file answers alone when it has an answer (the
            store's table names, which a ``-wal`` adds only right after the store was created): with no
            gateway running it is read ``immutable=1`` whatever its ``-wal`` holds, and the caller
            asks again through the URI without this flag when the main file had no answer.
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
