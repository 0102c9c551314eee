"""The copy of the report store made before a one-way schema migration (:mod:`gateway.storage.schema`).

A store of an older schema version is migrated at the first start of a newer gateway; older gateways
refuse it afterwards. Before that, the store as it is is copied next to itself, to
``<store file>.schema-v<old version>.bak``, with SQLite's online backup API (a consistent copy,
including what the ``-wal`` holds), mode 0600, written under a temporary name and renamed, so a copy
cut off part-way is never taken for a whole one. Rolling back: docs/gateway.md, Storage, Backups.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StorageError
from gateway.private_dirs import fsync_dir, fsync_file
from gateway.storage.disk_space import free_bytes
from gateway.systemd import StartExtender

MB = 1_000_000
# Room left besides the copy: the migration itself writes to the store's -wal (its transaction), and a
# disk filled to the last byte fails every commit afterwards.
MARGIN_BYTES = 64 * MB
CONFIG_KEY = "[storage] backup_before_migration"
# Pages per step of the copy (4 MB of 4 kB pages): between steps systemd is told the start goes on.
STEP_PAGES = 1024


def backup_path(store: Path, version: int) -> Path:
    """Where the copy of the store file ``store`` (symlinks resolved) at schema ``version`` is made."""
    return store.with_name("%s.schema-v%d.bak" % (store.name, version))


def earlier_copies(store: Path) -> list[tuple[Path, float, int]]:
    """The copies made before earlier migrations next to the store file ``store`` (symlinks resolved):
    (path, age in seconds, size), oldest version first. Reads the directory only."""
    prefix = store.name + ".schema-v"
    found = []
    try:
        names = sorted(os.listdir(store.parent))
    except OSError:
        return []
    for name in names:
        if name.startswith(prefix) and name.endswith(".bak") and name[len(prefix):-4].isdigit():
            try:
                st = os.stat(store.parent / name)
            except OSError:
                continue
            found.append((store.parent / name, max(0.0, time.time() - st.st_mtime), st.st_size))
    return found


def _age(seconds: float) -> str:
    days, hours = int(seconds // 86400), int(seconds // 3600)
    if days:
        return "%d day%s old" % (days, "" if days == 1 else "s")
    return "%d hour%s old" % (hours, "" if hours == 1 else "s") if hours else "less than an hour old"


def earlier_copies_note(store: Path) -> str:
    """What the start log and ``run --check`` say of :func:`earlier_copies` ("" when there is none): they
    hold the store as it was, values retention has since removed from it included."""
    copies = earlier_copies(store)
    if not copies:
        return ""
    one = len(copies) == 1
    return ("%s: %s before a store migration still %s the store as it was, values retention has since removed "
            "included (outside retention): delete %s once this release runs well"
            % (", ".join("%s (%s, %s)" % (p, _age(age), megabytes(size)) for p, age, size in copies),
               "the copy made" if one else "copies made", "holds" if one else "hold", "it" if one else "them"))


def remove_stale_temps(store: Path) -> list[Path]:
    """Remove copies cut off part-way (``<store>.schema-vN.bak.tmp`` and their journal) next to the store
    file ``store``: the gateway's own temporary files, each as large as the store; call only while
    holding the store's writer lock (no copy is being made). Returns what was removed."""
    prefix = store.name + ".schema-v"
    removed = []
    try:
        names = os.listdir(store.parent)
    except OSError:
        return []
    for name in names:
        if name.startswith(prefix) and name.endswith(".bak.tmp"):
            _remove(store.parent / name)
            removed.append(store.parent / name)
    return removed


def _temp_path(target: Path) -> Path:
    # One fixed name: a copy cut off by a kill is overwritten by the next attempt, not left to pile up.
    return target.with_name(target.name + ".tmp")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def megabytes(n: int) -> str:
    """``n`` bytes as ``N MB`` (decimal, rounded up: a figure to free space by)."""
    return "%d MB" % -(-n // MB)


def migration_bytes(conn: sqlite3.Connection, version: int) -> int:
    """Bytes the migration from ``version`` writes to the store's ``-wal`` beyond a few pages: from
    version 1, every page of the ``readings`` table and its indexes.

    The store runs with ``secure_delete=ON`` (so values retention removed do not stay on disk), which
    makes ``DROP TABLE readings`` zero every page it frees: each is written to the ``-wal`` (a frame of
    a page plus 24 bytes) before the checkpoint after the migration puts them in the main file. Counted
    with ``dbstat`` where this SQLite has it, else as every page in use (an upper bound).
    """
    if version != 1 or conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'readings'"
                                    ).fetchone() is None:
        return 0
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    try:
        pages = int(conn.execute("SELECT COUNT(*) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master "
                                 "WHERE tbl_name = 'readings')").fetchone()[0])
    except sqlite3.OperationalError:  # no dbstat in this SQLite build
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0]) - int(
            conn.execute("PRAGMA freelist_count").fetchone()[0])
    return pages * (page + 24)


def no_space_for_migration(store: Path, version: int, new_version: int, need: int, free: int | None,
                           cause: str = "") -> StorageError:
    """The ``no_space_for_migration`` error: the store's own migration needs ``need`` bytes free."""
    return StorageError(
        "not enough free space to migrate the report store %s from schema version %d to %d%s: the migration writes "
        "%s to its -wal (from version 1: the dropped readings table's pages, overwritten as secure_delete does, plus "
        "%s), %s is free on its file system. Free space there and start again; the store was left unchanged"
        % (store, version, new_version, cause and " (%s)" % cause, megabytes(need), megabytes(MARGIN_BYTES),
           "an unknown amount" if free is None else megabytes(free)),
        reason="no_space_for_migration")


def check_migration_space(store: Path, version: int, new_version: int, migration: int) -> None:
    """Refuse the migration (no copy made) when the store's file system has less than ``migration`` bytes
    (:func:`migration_bytes`) and the margin free. A migration that writes only a few pages (``migration``
    0: from version 2 or 3) is not refused ahead: SQLite running out of room is still said as
    ``no_space_for_migration``.

    Raises:
        StorageError: ``no_space_for_migration``.
    """
    need, free = migration + MARGIN_BYTES, free_bytes(store)
    if migration and free is not None and free < need:
        raise no_space_for_migration(store, version, new_version, need, free)


@dataclass(frozen=True)
class BackupPlan:
    """The copy a migration of ``store`` from ``version`` makes, and the room it needs.

    Attributes:
        store: the store file (symlinks resolved). version: its schema version now.
        target: the copy's name. need: bytes that must be free (the store, its ``-wal``, what the migration
            writes to the ``-wal`` (:func:`migration_bytes`), a margin). migration: that last part.
        free: bytes free on the store's file system (a stale temporary copy counted as free: it is
            removed first); None when it cannot be read (then the copy is tried).
        earlier: size of an earlier copy of the same name (replaced once the new one is whole), or 0.
    """

    store: Path
    version: int
    target: Path
    need: int
    free: int | None
    earlier: int
    migration: int = 0

    @property
    def enough(self) -> bool:
        """True when the copy fits (or the free space cannot be read)."""
        return self.free is None or self.free >= self.need


def plan_backup(store: Path, version: int, migration: int = 0) -> BackupPlan:
    """Measure the copy :func:`make_backup` would make of ``store`` (read-only), with ``migration`` bytes
    the migration after it writes (:func:`migration_bytes`)."""
    target = backup_path(store, version)
    need = _size(store) + _size(Path(str(store) + "-wal")) + migration + MARGIN_BYTES
    free = free_bytes(store)
    if free is not None:
        free += _size(_temp_path(target))
    return BackupPlan(store, version, target, need, free, _size(target), migration)


def no_space_error(plan: BackupPlan, new_version: int) -> StorageError:
    """The ``no_space_for_backup`` error: how much is needed and the two ways out."""
    earlier = ("; the earlier copy %s (%s) can go: the store is still at version %d"
               % (plan.target, megabytes(plan.earlier), plan.version) if plan.earlier else "")
    return StorageError(
        "not enough free space to copy the report store %s before migrating it from schema version %d to %d "
        "(one way: older gateways refuse it afterwards): the copy %s needs %s free (the store and its -wal plus "
        "%s%s), %s is free on its file system. Free space there%s, or make a backup elsewhere (docs/gateway.md, "
        "Storage, Backups) and set %s = false; the store was left unchanged"
        % (plan.store, plan.version, new_version, plan.target, megabytes(plan.need), megabytes(MARGIN_BYTES),
           "" if not plan.migration else ", and %s the migration writes to the -wal" % megabytes(plan.migration),
           "an unknown amount" if plan.free is None else megabytes(plan.free), earlier, CONFIG_KEY),
        reason="no_space_for_backup")


def make_backup(conn: sqlite3.Connection, store: Path, version: int, new_version: int,
                migration: int = 0) -> tuple[Path, int]:
    """Copy the store open on ``conn`` (its file ``store``, at schema ``version``) to its backup name;
    return that name and the copy's size in bytes. An earlier copy of that name is replaced.

    Raises:
        StorageError: ``no_space_for_backup`` when the file system has too little room (checked first,
            and when the copy runs out of it), ``backup_failed`` when the copy cannot be written. The
            store is unchanged either way, and no partial copy is left.
    """
    target = backup_path(store, version)
    tmp = _temp_path(target)
    _remove(tmp)
    plan = plan_backup(store, version, migration)
    if not plan.enough:
        raise no_space_error(plan, new_version)
    try:
        # Created 0600 before SQLite opens it: the copy holds every device's reports.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        dst = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            # In steps, each telling systemd to wait on (Type=notify): a multi-GB copy outlasts its start timeout.
            conn.backup(dst, pages=STEP_PAGES,
                        progress=StartExtender("copying the report store to %s before migrating it" % target.name))
            # The copy keeps the store's WAL flag in its header: any open (even read-only) would then add
            # a -wal and -shm beside it. A rollback-journal file is whole in itself; a gateway opening it
            # as its store puts it back in WAL mode.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except (OSError, sqlite3.Error) as exc:
        _remove(tmp)
        full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
            isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)
        if full:
            raise no_space_error(plan_backup(store, version, migration), new_version) from exc
        raise StorageError("cannot copy the report store %s to %s before migrating it from schema version %d to %d: "
                           "%s; the store was left unchanged. Fix that, or make a backup elsewhere (docs/gateway.md, "
                           "Storage, Backups) and set %s = false"
                           % (store, target, version, new_version, exc, CONFIG_KEY), reason="backup_failed") from exc
    return target, _size(target)


def _remove(tmp: Path) -> None:
    for name in (tmp, *(Path(str(tmp) + end) for end in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
