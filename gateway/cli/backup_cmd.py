"""``civicedge gateway backup DEST``: a complete, private, checked copy of a gateway's state, running or not.

The databases are copied with SQLite's online backup API from a read-only connection that holds one
read transaction for the whole copy: a consistent snapshot, while a running gateway keeps committing
(into its ``-wal``; the store's copy never blocks it). The registry and its key files are read into
memory in one read transaction, which a registry change waits for (milliseconds: :func:`_copy_registry`).
A stopped store's writer lock is held during its copy (:func:`_copy_store`). Everything is
written into a temporary directory beside DEST and renamed to DEST only once every copy passed its
check and MANIFEST.json is written, so DEST is either absent or a complete backup.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gateway.cli.common import EXIT_OK, add_config_arg, config_from, fail
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.output_guard import GatewayFiles
from gateway.pid_lock import LockHeld, take_pid_lock
from gateway.storage.lock_holders import flock_pids
from gateway.private_dirs import fsync_dir, mkdir_private
from gateway.storage.damage import damaged_error, is_corrupt, primary_code, sqlite_message
from gateway.storage.restore_marker import check_no_restore_marker
from gateway.storage.schema import stored_version
from gateway.storage.sqlite_uri import open_for_check
from gateway.storage.store_files import real_store_path, store_writer
from gateway.storage.store_kind import ABSENT, store_kind

MANIFEST = "MANIFEST.json"
FORMAT = "civicedge-gateway-backup/1"
RETENTION_FILE = "retention.json"  # as gateway.cli.run_check.RETENTION_FILE (not imported: it pulls in the web layer)
# A store at least this large is copied under a progress bar (smaller ones take well under a second).
PROGRESS_BYTES = 64 * 1024 * 1024
# Pages per backup step: the progress bar moves every few MB. The read transaction spans all steps,
# so a writer committing meanwhile never restarts the copy.
STEP_PAGES = 1024
_CHUNK = 1024 * 1024
_READONLY_ROLLBACK = 776  # SQLITE_READONLY_ROLLBACK: a hot journal a read-only connection cannot roll back

DESCRIPTION = """\
Copy everything a gateway needs to be restored into DEST, a new directory (0700; an existing
empty directory is used, a non-empty one refused; an empty mount point is filled in place, its
MANIFEST.json written last), while the gateway runs or not:

  reports.sqlite   the report store (reports, provenance chain, ACK floors, outbox), a
                   consistent snapshot taken with SQLite's backup API, read-only
  devices.sqlite   the device registry     keys/   the device keys
  retention.json   retention set through the admin API (when present)
  the config file, the [http] admin_token_file, the [mqtt] password_file and TLS files
  MANIFEST.json    version, store schema version, time, source paths, size and SHA-256 of each file

Every file is 0600, every directory 0700; nothing is printed of keys or tokens. Each database
copy is checked with PRAGMA integrity_check (tables and indexes agree) before the backup is
complete: until then it is a temporary directory beside DEST, removed on failure, so DEST never
holds half a backup.

Copying the report store never blocks a running gateway. The registry and the key files are copied
as of one moment: both are read into memory in one read transaction, then checked and written to
DEST, so a registry change made meanwhile (key rotation, enrolment, revocation, move) waits at most
the few milliseconds of that read. A stopped gateway's store is read without SQLite locks, so the
backup holds the store's single-writer lock while copying it: a gateway started meanwhile refuses
to start (in_use, naming the backup's pid); start it again once the backup is done.

Not in the backup: the store's -wal, -shm and .lock (the snapshot holds every committed report),
retention-confirm, logs, the [sim_clock] follow file, the civicedge install and service unit.

Restore: stop the gateway, then `civicedge gateway restore DEST --config gateway.toml` (checks
MANIFEST.json, moves the current files aside, carries registry changes made since over), then
`civicedge gateway run --check`. The manual steps: docs/gateway.md, Storage, "Restoring a backup"."""


class BackupError(GatewayError):
    """A backup could not be made; nothing was left at DEST.

    Attributes:
        reason: ``exists`` (DEST is not new), ``gateway_file`` (DEST is, or is the place of, one of the
            gateway's own files or directories), ``no_store`` / ``no_registry`` / ``missing`` (a source is
            absent), ``permission_denied``, ``disk_full``, ``read_failed``, ``write_failed``,
            ``copy_damaged`` (a copy failed its check), ``unfinished_write`` (a hot rollback journal),
            ``registry_wal`` (the registry is in WAL mode: its rows and key files cannot be read as of one moment).
        path: the file or directory concerned.
    """

    def __init__(self, message: str, *, reason: str, path: Path | None = None) -> None:
        super().__init__(message, reason=reason)
        self.path = path


@dataclass
class Copied:
    """One file of the backup: its name in DEST, what it is, and where it came from."""

    name: str
    what: str
    source: Path
    note: str = ""


@dataclass
class BackupResult:
    """What :func:`make_backup` wrote (``manifest`` is MANIFEST.json's content)."""

    dest: Path
    files: list[Copied] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    running: str | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``backup``."""
    p = sub.add_parser("backup", help="copy the store, registry, keys and secrets into a new directory, safely",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path, metavar="DEST",
                   help="the backup directory to create (e.g. /backup/gw/$(date +%%Y%%m%%d-%%H%%M%%S))")
    add_config_arg(p)
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    """Make the backup and print a short summary."""
    try:
        config = config_from(args, read_only=True)
        result = make_backup(config, args.dest)
    except GatewayError as exc:
        return fail(exc)
    print(summary(result))
    return EXIT_OK


def summary(result: BackupResult) -> str:
    """A few lines for the operator: where, each file (keys counted, never shown), total size, time."""
    lines = ["backup written to %s%s" % (result.dest, "" if result.running is None else
                                        " (gateway running, pid %s: a consistent snapshot)" % result.running)]
    entries = {str(e["name"]): int(e["size"]) for e in result.manifest["files"]}
    keys = [c for c in result.files if c.what == "device key"]
    for c in result.files:
        if c.what != "device key":
            lines.append("  %-16s %9s  %s%s" % (c.name, _size(entries[c.name]), c.what, c.note and ", " + c.note))
    lines.append("  %-16s %9s  %d device key file(s)" % ("keys/", _size(sum(entries[c.name] for c in keys)),
                                                          len(keys)))
    for item in result.manifest["not_copied"]:
        lines.append("  not copied: %s (%s)" % (item["source"], item["why"]))
    lines.append("%d file(s), %s, in %.1f s" % (len(entries) + 1, _size(sum(entries.values())), result.seconds))
    lines += ["warning: " + w for w in result.warnings]
    return "\n".join(lines)


def _size(n: int) -> str:
    if n < 1000:
        return "%d B" % n
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return "%.1f %s" % (value, unit)


def make_backup(config: GatewayConfig, dest: Path, *, progress_bytes: int = PROGRESS_BYTES) -> BackupResult:
    """Back up the gateway of ``config`` into the new directory ``dest``.

    Args:
        config: the gateway's config (its paths name what is copied).
        dest: the backup directory; must not exist, or be an empty directory.
        progress_bytes: a store at least this large is copied under a rich progress bar (on stderr).

    Raises:
        BackupError: see its reasons; ``dest`` is left as it was.
        StorageError: the store is not a report store or is damaged (as ``gateway run`` says); a restore
            was cut off in this data directory (``restore_in_progress``).
    """
    started = time.monotonic()
    dest = Path(os.path.abspath(dest))
    _check_not_gateway_file(config, dest)
    _check_new(dest)
    check_no_restore_marker(config.data_dir)  # a restore cut off in its swap: a mix is no backup
    store, registry_db = config.storage.path, config.registry_dir / "devices.sqlite"
    running = store_writer(store)
    if store_kind(real_store_path(store), running=running is not None) == ABSENT:
        raise BackupError("no report store at %s: nothing to back up (is --config the gateway's config?)" % store,
                          reason="no_store", path=store)
    if not _is_file(registry_db):
        raise BackupError("no device registry at %s: nothing to back up (is --config the gateway's config?)"
                          % registry_db, reason="no_registry", path=registry_db)
    extra = _named_files(config)
    # An empty DEST that is a mount point (a USB disk, a backup share) cannot be replaced by a rename, and a
    # temporary directory beside it is on another file system: the backup is written inside it instead.
    in_place = _is_mount(dest)
    moved: list[Path] = []
    try:
        mkdir_private(dest.parent)
        tmp = Path(tempfile.mkdtemp(dir=dest if in_place else dest.parent,
                                    prefix=".partial-" if in_place else ".%s.partial-" % dest.name))
    except OSError as exc:
        raise _os_error(exc, dest if in_place else dest.parent, "create the backup directory in") from exc
    result = BackupResult(dest=dest, running=running)
    try:
        schema = _copy_store(store, tmp / "reports.sqlite", running=running, progress_bytes=progress_bytes,
                             result=result)
        skipped = _copy_registry(config.registry_dir, tmp, result)
        for what, src in extra:
            name = _free_name(tmp, src.name, what)
            _copy_file(src, tmp / name)
            result.files.append(Copied(name, what, src))
        result.manifest = _manifest(config, tmp, result, schema, skipped)
        with _created(tmp / MANIFEST) as fh:
            fh.write(json.dumps(result.manifest, indent=2).encode() + b"\n")
        fsync_dir(tmp / "keys")
        fsync_dir(tmp)
        if in_place:
            _move_up(tmp, dest, moved)
        else:
            _check_new(dest)  # made meanwhile by someone else: rename would fail or replace an empty one
            os.rename(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for path in moved:  # DEST was empty: what a backup written in place moved there goes too
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        err = _os_error(exc, dest, "write the backup") if isinstance(exc, OSError) else exc
        if isinstance(err, BackupError) and err.reason == "disk_full":  # name DEST, not the removed temp dir
            raise BackupError("disk full writing the backup %s: free space on its file system (%s); the partial "
                              "backup was removed" % (dest, err), reason="disk_full", path=dest) from exc
        if err is not exc:
            raise err from exc
        raise
    try:
        fsync_dir(dest.parent)
    except OSError as exc:  # the backup is there and whole; only the rename's durability is in doubt
        result.warnings.append("cannot sync %s after the rename (%s): run sync before unplugging its disk"
                               % (dest.parent, exc.strerror or exc))
    result.seconds = time.monotonic() - started
    return result


def _is_mount(dest: Path) -> bool:
    """True when ``dest`` is an existing directory on another file system than its parent (a mount point)."""
    try:
        return dest.is_dir() and not dest.is_symlink() and os.stat(dest).st_dev != os.stat(dest.parent).st_dev
    except OSError:
        return False


def _move_up(tmp: Path, dest: Path, moved: list[Path]) -> None:
    """Move the finished backup from ``tmp`` (inside ``dest``) into ``dest``, MANIFEST.json last: a backup cut
    off part-way there has none, so it is never taken for a whole one. ``moved`` collects what is moved."""
    for name in sorted(os.listdir(tmp), key=lambda n: (n == MANIFEST, n)):
        os.rename(tmp / name, dest / name)
        moved.append(dest / name)
    os.rmdir(tmp)
    fsync_dir(dest)


def _check_not_gateway_file(config: GatewayConfig, dest: Path) -> None:
    """Refuse a ``dest`` that is one of the gateway's own files or directories, or the place of one not made
    yet (``gateway.output_guard``): an empty keys directory would be replaced by the backup, a directory made
    at the store's ``-wal``, ``.lock`` or ``retention.json`` would keep the gateway from writing it."""
    files = GatewayFiles()
    files.add_config(config)
    what = files.which(dest)
    if what is not None:
        raise BackupError("%s is %s; a backup is never written in place of the gateway's own files: give a new "
                          "directory elsewhere" % (dest, what), reason="gateway_file", path=dest)


def _check_new(dest: Path) -> None:
    try:
        if not os.path.lexists(dest):
            return
        if not dest.is_dir() or dest.is_symlink():
            raise BackupError("%s exists and is not a directory; give a new directory for the backup" % dest,
                              reason="exists", path=dest)
        if any(dest.iterdir()):
            raise BackupError("%s exists and is not empty; give a new directory for each backup (a backup is "
                              "never written over another)" % dest, reason="exists", path=dest)
    except OSError as exc:
        raise _os_error(exc, dest, "look at") from exc


def _named_files(config: GatewayConfig) -> list[tuple[str, Path]]:
    """The config file and the files it names that a restore needs; each must exist (retention.json may not)."""
    named: list[tuple[str, Path | None]] = [("config", config.source)]
    if config.http is not None:
        named.append(("admin token", config.http.admin_token_file))
    if config.mqtt is not None:
        named += [("MQTT password", config.mqtt.password_file), ("MQTT TLS CA", config.mqtt.ca_file),
                  ("MQTT TLS certificate", config.mqtt.cert_file), ("MQTT TLS key", config.mqtt.key_file)]
    out = [(what, path) for what, path in named if path is not None]
    for what, path in out:
        if not _is_file(path):
            raise BackupError("the %s file %s named by the config does not exist (or is not a file)" % (what, path),
                              reason="missing", path=path)
    retention = config.data_dir / RETENTION_FILE
    if os.path.lexists(retention):
        out.append(("retention settings", retention))
    return out


def _is_file(path: Path) -> bool:
    """``path.is_file()``, with a directory this user may not search said as such (not a traceback)."""
    try:
        return path.is_file()
    except OSError as exc:
        raise _os_error(exc, path, "look at") from exc


def _free_name(tmp: Path, name: str, what: str) -> str:
    """``name``, or ``<what>-name`` when another source file of that name is already in the backup."""
    return name if not os.path.lexists(tmp / name) else "%s-%s" % (what.replace(" ", "-"), name)


def _copy_store(store: Path, dst: Path, *, running: str | None, progress_bytes: int, result: BackupResult) -> int | None:
    """Copy the report store, check the copy (integrity_check); its schema version.

    A stopped store is read without SQLite locks (immutable, or its leftover ``-wal`` read in memory),
    so its single-writer lock is held for the copy: a gateway started meanwhile is refused (``in_use``,
    naming this process) instead of committing under the copy, which would then mix pages of two states.
    Where the lock file cannot be made (read-only media, a directory this user may not write) the main
    file's and ``-wal``'s identity, size and mtime are compared before and after, and a copy during
    which they changed is made again (as running when a gateway now holds the store)."""
    real = real_store_path(store)
    lock = None
    if running is None:
        lock, running = _lock_stopped(real)
        result.running = running
    try:
        for _ in range(3):
            before = _identity(real)
            try:
                src = open_for_check(real, running=running is not None)
            except sqlite3.Error as exc:
                raise _sqlite_error(exc, store, dst) from exc
            try:
                _backup(src, dst, source=store, progress_bytes=progress_bytes)
            finally:
                src.close()
            if running is not None or lock is not None:
                break
            now = store_writer(store)
            if now is None and _identity(real) == before:
                break
            running = result.running = now
            os.unlink(dst)
        else:
            raise BackupError("the report store %s kept changing during the copy while no gateway held it (another "
                              "program writing it?); stop that program and back up again" % store,
                              reason="read_failed", path=store)
    finally:
        if lock is not None:
            os.close(lock)
    schema, check = _check_copy(dst, "integrity_check", source=store)
    result.files.append(Copied("reports.sqlite", "report store", store,
                               "schema %s, %s" % ("none yet" if schema is None else schema, check)))
    return schema


def _lock_stopped(real: Path) -> tuple[int | None, str | None]:
    """Hold the single-writer lock of the stopped store file ``real``: (its descriptor, None); (None, the
    holder's pid) when a gateway took it since; (None, None) when the lock file cannot be opened."""
    lock_path = real.with_name(real.name + ".lock")  # as gateway.storage.store_files names it
    existed = os.path.lexists(lock_path)
    try:
        fd = take_pid_lock(lock_path, mode=0o600)
    except LockHeld as held:
        if not flock_pids(lock_path, write=True) and flock_pids(lock_path, write=False):
            # Only readers (export-log, routes plan) hold it, shared: no gateway runs, and the pid text in the
            # file is its last writer's, stale. Share their hold: it keeps a gateway out as well.
            shared = _lock_shared(lock_path)
            if shared is not None:
                return shared, None
        return None, held.holder or "unknown"
    except OSError:
        return None, None
    if not existed and os.geteuid() == 0:
        # Made by root (a backup run as root): give it to the store's owner, or the gateway could not open it.
        try:
            st = os.stat(real)
            os.fchown(fd, st.st_uid, st.st_gid)
        except OSError:
            pass
    return fd, None


def _lock_shared(lock_path: Path) -> int | None:
    """A descriptor holding ``lock_path`` shared, or None when a writer has it (or it cannot be opened)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _identity(real: Path) -> list[tuple[int, int, int, int] | None]:
    """(device, inode, size, mtime) of the store file and its ``-wal`` (None: absent)."""
    out: list[tuple[int, int, int, int] | None] = []
    for p in (real, real.with_name(real.name + "-wal")):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            out.append(None)
            continue
        except OSError as exc:
            raise _os_error(exc, p, "look at") from exc
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def _copy_registry(registry: Path, tmp: Path, result: BackupResult) -> list[dict[str, str]]:
    """Copy devices.sqlite and keys/ (regular files only: anything else is listed as not copied), both
    as of one moment, holding the registry's lock only for the milliseconds of reading them into memory.

    A key change (``rotate_key``, ``add``/``enroll`` with a key) writes the key file inside its
    registry write transaction (``BEGIN EXCLUSIVE``), committed after the file is in place. The
    registry's rows and its key files are read in one read transaction (the registry's SHARED lock):
    a key change made meanwhile waits for it, and one already under way is waited for (sqlite3's own
    5 s) before the read starts. So every key file copied is the one its copied row's ``key_version``
    was committed with. Nothing is written to DEST inside it: the check and every write and fsync to
    the backup's disk (a slow USB or network disk: seconds for many keys) come after it ended, so a
    key change waits at most those milliseconds, never the registry's 5 s busy timeout, and the
    running gateway's registry lookups are never held behind a waiting writer.
    """
    db = registry / "devices.sqlite"
    snapshot, keys, skipped = _read_registry(db, registry / "keys", tmp / "devices.sqlite")
    try:
        _backup(snapshot, tmp / "devices.sqlite", source=db, progress_bytes=-1)
    finally:
        snapshot.close()
    _, check = _check_copy(tmp / "devices.sqlite", "integrity_check", source=db)  # of the copy: milliseconds
    result.files.append(Copied("devices.sqlite", "device registry", db, check))
    try:
        os.mkdir(tmp / "keys", 0o700)
        os.chmod(tmp / "keys", 0o700)
        for name, data, source in keys:
            with _created(tmp / "keys" / name) as fout:
                fout.write(data)
            result.files.append(Copied("keys/" + name, "device key", source))
    except OSError as exc:
        raise _os_error(exc, tmp / "keys", "write the device keys into") from exc
    return skipped


def _read_registry(db: Path, keys: Path, dst: Path) -> tuple[sqlite3.Connection, list[tuple[str, bytes, Path]],
                                                              list[dict[str, str]]]:
    """The registry ``db`` copied into memory and the key files of ``keys`` read, in one read transaction
    (ended before returning): (the in-memory copy, (name, content, source) of each key file, what was not
    a regular file). ``dst`` is only named in errors.

    Raises:
        BackupError: ``registry_wal`` when the registry is in WAL mode, where a reader does not hold off a
            key change, so the copy would not be of one moment; the SQLite and file errors of a copy.
    """
    try:
        # Never immutable=1 (read_only_uri's choice for a directory we may not write): that reads without
        # locks. The registry is in rollback-journal mode (Registry sets it at every open; WAL is refused
        # below): a plain read-only open needs no file beside it.
        src = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, db, dst) from exc
    memory = sqlite3.connect(":memory:")
    try:
        mode = str(src.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode == "wal":
            raise BackupError(
                "the device registry %s is in WAL journal mode, where a key rotation or enrolment does not wait for "
                "the backup's read, so its rows and key files could not be copied as of one moment; the gateway "
                "sets it back to rollback-journal mode when it opens the registry while no other process has it "
                "open: stop what else has it open (sqlite3, another gateway), restart the gateway, then back up "
                "again" % db, reason="registry_wal", path=db)
        src.execute("BEGIN")
        # A read takes the SHARED lock, held until the rollback below; the backup API alone would take and
        # drop its own at each step, leaving the key files to be read outside it.
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        src.backup(memory)  # the registry is small: its pages in memory, no write to DEST under the lock
        return memory, *_read_keys(keys)
    except sqlite3.Error as exc:
        memory.close()
        raise _sqlite_error(exc, db, dst) from exc
    except BaseException:
        memory.close()
        raise
    finally:
        if src.in_transaction:
            src.rollback()  # releases the lock: a key change waiting for it goes on
        src.close()


def _read_keys(keys: Path) -> tuple[list[tuple[str, bytes, Path]], list[dict[str, str]]]:
    """(name, content, path) of each key file of ``keys`` (a few dozen bytes each), and what is not a regular
    file (listed, not copied)."""
    read: list[tuple[str, bytes, Path]] = []
    skipped: list[dict[str, str]] = []
    try:
        entries = sorted(os.scandir(keys), key=lambda e: e.name) if keys.is_dir() else []
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                skipped.append({"source": entry.path, "why": "not a regular file"})
                continue
            read.append((entry.name, _read_key(Path(entry.path)), Path(entry.path)))
    except OSError as exc:
        raise _os_error(exc, keys, "copy the device keys from") from exc
    return read, skipped


def _read_key(path: Path) -> bytes:
    """The content of the key file ``path``."""
    with open(path, "rb") as fh:
        return fh.read()


def _backup(src: sqlite3.Connection, dst_path: Path, *, source: Path, progress_bytes: int) -> None:
    """Copy ``src`` into the new file ``dst_path`` (0600) in one read transaction (a consistent snapshot)."""
    try:
        os.close(os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(dst_path, 0o600)  # whatever the umask
    except OSError as exc:
        raise _os_error(exc, dst_path, "create") from exc
    dst: sqlite3.Connection | None = None
    try:
        dst = sqlite3.connect(dst_path)
        src.execute("BEGIN")
        pages = int(src.execute("PRAGMA page_count").fetchone()[0])
        size = pages * int(src.execute("PRAGMA page_size").fetchone()[0])
        if 0 <= progress_bytes <= size:
            _backup_with_bar(src, dst, source)
        else:
            src.backup(dst)
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, source, dst_path) from exc
    finally:
        if src.in_transaction:
            src.rollback()
        if dst is not None:
            dst.close()


def _backup_with_bar(src: sqlite3.Connection, dst: sqlite3.Connection, source: Path) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("copying %s" % source.name), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("copy", total=None)
        page = int(src.execute("PRAGMA page_size").fetchone()[0])

        def moved(status: int, remaining: int, total: int) -> None:
            bar.update(task, total=total * page, completed=(total - remaining) * page)

        progress: Callable[[int, int, int], object] = moved
        src.backup(dst, pages=STEP_PAGES, progress=progress)


def _check_copy(path: Path, pragma: str, *, source: Path) -> tuple[int | None, str]:
    """Run ``pragma`` (quick_check or integrity_check) on the copy; its schema version (None for the
    registry or a new store) and what the check said. The copy is read immutable: nothing is created."""
    try:
        conn = sqlite3.connect(path.as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA %s" % pragma).fetchall()]
            schema = stored_version(conn) if path.name == "reports.sqlite" else None
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError("the copy of %s failed its check (%s): %s" % (source, pragma, sqlite_message(exc)),
                          reason="copy_damaged", path=source) from exc
    if rows != ["ok"]:
        raise BackupError("the copy of %s failed %s: %s; the source may be damaged (civicedge gateway run --check, "
                          "docs/gateway.md, Damaged file)" % (source, pragma, "; ".join(rows[:3])),
                          reason="copy_damaged", path=source)
    return schema, "%s ok" % pragma


class _created:
    """A new file opened for writing, 0600 whatever the umask, synced at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        self.fh = os.fdopen(fd, "wb")
        return self.fh

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
        finally:
            self.fh.close()


def _copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` (symlinks followed: a config may link to its secrets) into the new file ``dst``, 0600."""
    try:
        fin = open(src, "rb")
    except OSError as exc:
        raise _os_error(exc, src, "read") from exc
    with fin, _created(dst) as fout:
        while True:
            try:
                chunk = fin.read(_CHUNK)
            except OSError as exc:
                raise _os_error(exc, src, "read") from exc
            if not chunk:
                break
            fout.write(chunk)


def _manifest(config: GatewayConfig, tmp: Path, result: BackupResult, schema: int | None,
              skipped: list[dict[str, str]]) -> dict[str, Any]:
    from gateway.version import gateway_version

    files = []
    for c in result.files:
        digest, size = hashlib.sha256(), 0
        with open(tmp / c.name, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        files.append({"name": c.name, "what": c.what, "source": str(Path(os.path.abspath(c.source))),
                      "size": size, "sha256": digest.hexdigest()})
    return {"format": FORMAT, "civicedge_version": gateway_version(), "gateway_id": config.id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": None if config.source is None else str(Path(os.path.abspath(config.source))),
            "data_dir": str(Path(os.path.abspath(config.data_dir))),
            "registry_dir": str(Path(os.path.abspath(config.registry_dir))),
            "store_schema_version": schema, "gateway_running_pid": result.running,
            "files": files, "not_copied": skipped}


def _os_error(exc: OSError, path: Path, doing: str) -> GatewayError:
    """A BackupError naming the path: disk full, permission denied, or the OS's words."""
    where = exc.filename if exc.filename else path
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackupError("%s, writing %s" % (exc.strerror or exc, where), reason="disk_full", path=Path(where))
    if exc.errno in (errno.EACCES, errno.EPERM):
        return BackupError("permission denied: cannot %s %s (run the backup as the gateway's user, into a "
                           "directory that user may write)" % (doing, where), reason="permission_denied",
                           path=Path(where))
    return BackupError("cannot %s %s: %s" % (doing, where, exc.strerror or exc), reason="write_failed",
                       path=Path(where))


def _sqlite_error(exc: sqlite3.Error, source: Path, dst: Path) -> GatewayError:
    """SQLite's failure while copying ``source`` to ``dst``: the file concerned, never a stored value."""
    code = primary_code(exc)
    if code == sqlite3.SQLITE_FULL:
        return BackupError("SQLite: %s, copying %s" % (sqlite_message(exc), source), reason="disk_full", path=dst)
    if is_corrupt(exc):
        return damaged_error(source, exc, "backing it up") if source.name != "devices.sqlite" else BackupError(
            "%s is damaged (SQLite: %s)" % (source, sqlite_message(exc)), reason="copy_damaged", path=source)
    if getattr(exc, "sqlite_errorcode", None) == _READONLY_ROLLBACK:
        return BackupError("%s has an unfinished write (its %s-journal, left by a process stopped mid-write): a "
                           "read-only copy cannot roll it back; start the gateway (its open rolls it back, nothing "
                           "committed is lost), then back up again, the gateway running or stopped"
                           % (source, source.name), reason="unfinished_write", path=source)
    if code in (sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
        return BackupError("permission denied, or cannot open: %s (SQLite: %s); run the backup as the gateway's "
                           "user" % (source, sqlite_message(exc)), reason="permission_denied", path=source)
    return BackupError("cannot copy %s to %s: %s" % (source, dst, sqlite_message(exc)), reason="read_failed",
                       path=source)
