"""``civicedge gateway restore BACKUP_DIR``: put a ``civicedge gateway backup`` back in place, checked and reversible.

The order keeps every step undoable: the backup is checked against its MANIFEST.json (SHA-256 and size of
every file, no unlisted store file) and the store's single-writer lock is taken (a running gateway refuses
the restore, and no gateway starts during it). The backup's files are copied next to their places under
temporary names; the backup's registry copy gets every registry change made since the backup carried over
through the :class:`~gateway.registry.Registry` API (revocations, key rotations, new devices, retirements,
moves). Only then are the current files moved aside (renames into ``<data_dir>/replaced-<time>/``, never
deleted, the store's ``-wal``/``-shm`` and the registry's journal with them) and the copies renamed into
place. A failure after the first move puts every moved file back.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_OK, add_config_arg, config_from, fail
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, RegistryError
from gateway.cli import restore_swap as swap_files
from gateway.cli.restore_registry import Current, LiveLock, carry_over, fingerprint, manifest_time, read_current
from gateway.private_dirs import mkdir_private
from gateway.registry import Registry
from gateway.storage.schema import SCHEMA_VERSION, stored_version
from gateway.storage.store_files import lock_store, real_store_path, store_readers, store_writer

MANIFEST = "MANIFEST.json"
FORMAT = "civicedge-gateway-backup/1"  # as gateway.cli.backup_cmd.FORMAT
RETENTION_FILE = "retention.json"
META_KEY = "restored_from"
EXIT_INTERRUPTED = 130  # as a Ctrl-C anywhere else
_CHUNK = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_NAME = re.compile(r"(keys/)?[^/\\\x00]+\Z")
# Files beside a database that SQLite would apply to it: never taken from a backup (not in its checksums).
_STORE_PREFIXES = ("reports.sqlite", "devices.sqlite")

DESCRIPTION = """\
Restore a backup made by `civicedge gateway backup` into the gateway named by --config, with the
gateway stopped:

  1. checks BACKUP_DIR: MANIFEST.json readable, every file it lists present with its size and
     SHA-256, and no store file it does not list (a -wal or -journal beside a copy would change it);
     a mismatch is refused, nothing is changed
  2. refuses while the gateway runs (it holds reports.sqlite.lock); holds that lock meanwhile, so
     no gateway starts during the restore
  3. carries every registry change made since the backup over to the restored registry: devices
     revoked since stay revoked, keys rotated since keep the current key (the board holds it),
     devices enrolled since are kept with their key, retirements, reinstatements and moves are
     kept; each carried change is printed. A change is carried only where the current record is
     newer than the backup's: restoring an older backup and then a newer one keeps the newer's
     registry (a warning names each device where the current registry looks older). The current
     registry is locked against changes from the check until the swap is done
  4. moves the current reports.sqlite, its -wal and -shm, devices.sqlite (and its -journal), keys/
     and retention.json aside into <data_dir>/replaced-<UTC time>/ (renames: nothing is deleted),
     then puts the backup's copies in place, 0600 (keys/ 0700), owned as the files they replace
     (as root: as the data directory); no place is ever left empty, <data_dir>/restore-in-progress
     marks the swap; on any failure, Ctrl-C, SIGTERM or SIGHUP the moved files are put back (exit
     130 when interrupted)
  5. records the restore in the restored store (meta row restored_from) and prints what was
     restored and what it means: reports acknowledged after the backup was made are lost (unless
     in your MQTT archive), open data and /opendata/privacy-budget.csv go back to the backup's
     state, and the provenance chain continues from the backup's head (an auditor holding a
     later head sees a fork)

The admin token is put back only when its file is missing (a token changed since is kept). The
config, the MQTT password and TLS files are never written: copy them from BACKUP_DIR by hand if
they were lost (MANIFEST.json names where each came from).

Refused before anything changes: a backup of another gateway id (unless --other-gateway), a store
schema newer than this release reads, and no --config while the default data directory does not exist.

Then: civicedge gateway run --config gateway.toml --check, and start the gateway.
Manual steps, when this command cannot be used: docs/gateway.md, Storage, "Restoring a backup"."""


class RestoreError(GatewayError):
    """A restore was refused or failed; the gateway's files are as they were.

    Attributes:
        reason: ``bad_backup`` (no or unreadable MANIFEST.json, a file missing, unlisted or not a file),
            ``checksum_mismatch``, ``in_use`` (the gateway runs), ``cross_device`` (a file to move aside is
            on another file system than the data directory), ``registry`` (a change since the backup could
            not be carried over), ``write_failed`` / ``disk_full`` / ``permission_denied``.
        path: the file concerned.
    """

    def __init__(self, message: str, *, reason: str, path: Path | None = None) -> None:
        super().__init__(message, reason=reason)
        self.path = path


@dataclass
class Backup:
    """A checked backup: its directory, MANIFEST.json (and its SHA-256), its files by what they are."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    store: str = ""
    registry: str = ""
    keys: list[str] = field(default_factory=list)
    retention: str | None = None
    token: str | None = None
    others: list[dict[str, Any]] = field(default_factory=list)
    left_by_readers: list[str] = field(default_factory=list)  # an empty -wal, a -shm: tolerated, not restored
    listed: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (size, SHA-256) from MANIFEST.json


@dataclass
class RestoreResult:
    """What :func:`restore` did, for the summary."""

    backup: Backup
    aside: Path | None = None
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    carried: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reports: int = 0
    newest: float | None = None
    recorded: bool = False
    keys_in_place: int = 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``restore``."""
    p = sub.add_parser("restore", help="put a backup back in place (gateway stopped), checked, reversible",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backup", type=Path, metavar="BACKUP_DIR", help="a directory written by civicedge gateway backup")
    add_config_arg(p)
    p.add_argument("--other-gateway", action="store_true",
                   help="restore a backup made by a gateway with another id (refused otherwise: replay windows, "
                        "provenance and MQTT topics are per gateway)")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore and print the summary."""
    try:
        config = config_from(args)
        if args.config is None and not config.data_dir.is_dir():
            raise RestoreError("no --config given and the built-in default data directory %s does not exist: nothing "
                               "was changed; give the gateway's config (civicedge gateway restore %s --config "
                               "/etc/civicedge/gateway.toml) so the backup goes where that gateway reads it"
                               % (config.data_dir, args.backup), reason="no_config", path=config.data_dir)
        print("restoring into %s (config %s)" % (config.data_dir, "built-in defaults" if args.config is None
                                                   else args.config), flush=True)
        result = restore(config, args.backup, other_gateway=args.other_gateway)
    except GatewayError as exc:
        code = fail(exc)
        return EXIT_INTERRUPTED if exc.reason == "interrupted" else code
    print(summary(result, args.config))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- checking


def check_backup(path: Path) -> Backup:
    """Read BACKUP_DIR's MANIFEST.json and check every file against it.

    Raises:
        RestoreError: ``bad_backup`` or ``checksum_mismatch``, naming the file.
    """
    path = Path(os.path.abspath(path))
    mpath = path / MANIFEST
    if not path.is_dir():
        raise RestoreError("%s is not a directory (give the directory civicedge gateway backup wrote)" % path,
                           reason="bad_backup", path=path)
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise RestoreError("%s has no MANIFEST.json: not a complete civicedge gateway backup (a backup cut off part-way "
                           "has none)" % path, reason="bad_backup", path=mpath) from None
    except OSError as exc:
        raise RestoreError("cannot read %s: %s" % (mpath, exc.strerror or exc), reason="bad_backup", path=mpath) from exc
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RestoreError("%s is not valid JSON (%s): the backup cannot be checked" % (mpath, exc),
                           reason="bad_backup", path=mpath) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
        raise RestoreError("%s is not a civicedge gateway backup manifest (format %r, expected %r)"
                           % (mpath, manifest.get("format") if isinstance(manifest, dict) else None, FORMAT),
                           reason="bad_backup", path=mpath)
    backup = Backup(path, manifest, hashlib.sha256(raw).hexdigest())
    listed: set[str] = set()
    for entry in manifest["files"]:
        name = _entry(entry, mpath)
        if name in listed:
            raise RestoreError("%s lists %s twice: not a manifest civicedge gateway backup wrote" % (mpath, name),
                               reason="bad_backup", path=mpath)
        listed.add(name)
        if name.startswith("keys/") and os.path.islink(path / "keys"):
            raise RestoreError("%s is a symlink: a backup holds copies only" % (path / "keys"), reason="bad_backup",
                               path=path / "keys")
        _check_file(path / name, entry)
        backup.listed[name] = (entry["size"], entry["sha256"])
        what = entry["what"]
        if what == "report store":
            backup.store = name
        elif what == "device registry":
            backup.registry = name
        elif what == "device key" and name.startswith("keys/"):
            backup.keys.append(name)
        elif what == "retention settings":
            backup.retention = name
        elif what == "admin token":
            backup.token = name
        else:
            backup.others.append(entry)
    for needed, what in ((backup.store, "report store"), (backup.registry, "device registry")):
        if not needed:
            raise RestoreError("%s lists no %s: not a gateway backup" % (mpath, what), reason="bad_backup", path=mpath)
    backup.left_by_readers = _refuse_unlisted(path, listed)
    return backup


def _entry(entry: Any, mpath: Path) -> str:
    """The checked name of one MANIFEST.json entry (a plain name or ``keys/NAME``: never a path out)."""
    ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("what"), str)
          and isinstance(entry.get("sha256"), str) and _HEX64.match(entry["sha256"]) is not None
          and isinstance(entry.get("size"), int))
    if not ok or not _NAME.match(entry["name"]) or entry["name"] in (".", "..", "keys/.", "keys/.."):
        raise RestoreError("%s has a malformed file entry: %.200s" % (mpath, json.dumps(entry)),
                           reason="bad_backup", path=mpath)
    return str(entry["name"])


def _check_file(path: Path, entry: dict[str, Any]) -> None:
    """Raise unless ``path`` is a regular file with the entry's size and SHA-256."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RestoreError("%s is listed in MANIFEST.json but missing from the backup" % path,
                           reason="bad_backup", path=path) from None
    except OSError as exc:
        raise RestoreError("cannot read %s: %s" % (path, exc.strerror or exc), reason="bad_backup", path=path) from exc
    if not stat.S_ISREG(st.st_mode):
        raise RestoreError("%s is not a regular file (a symlink or something else): a backup holds copies only"
                           % path, reason="bad_backup", path=path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise RestoreError("cannot read %s: %s" % (path, exc.strerror or exc), reason="bad_backup", path=path) from exc
    if st.st_size != entry["size"] or digest.hexdigest() != entry["sha256"]:
        raise RestoreError("%s does not match MANIFEST.json (size %d, listed %d; SHA-256 %s, listed %s): the backup was "
                           "altered or damaged since it was made; nothing was restored, use another backup"
                           % (path, st.st_size, entry["size"], digest.hexdigest()[:16] + "...", entry["sha256"][:16]
                              + "..."), reason="checksum_mismatch", path=path)


def _refuse_unlisted(path: Path, listed: set[str]) -> list[str]:
    """Refuse a store file or key file the manifest does not list (e.g. a ``-wal`` made by opening the copy).

    An empty ``-wal`` and a ``-shm`` of a listed database (what a read-only SQLite reader, an older
    ``export-log --db`` or ``sqlite3``, leaves beside it) are not refused: an empty ``-wal`` holds no
    commit, the ``-shm`` is only an index of the ``-wal``, and the restore copies the listed file alone,
    whose checksum covers every change. A ``-wal`` with content is refused (it may hold changes).

    Returns:
        The names tolerated so (not restored, left in place).
    """
    found = [n for n in os.listdir(path) if n.startswith(_STORE_PREFIXES)]
    if (path / "keys").is_dir():
        found += ["keys/" + n for n in os.listdir(path / "keys")]
    extra = sorted(n for n in found if n not in listed)
    empty = [n for n in extra if _reader_leftover(path, n, listed)]
    extra = [n for n in extra if n not in empty]
    if extra:
        raise RestoreError("%s holds %s, not listed in MANIFEST.json (a -wal, -shm or -journal appears when a copy is "
                           "opened with sqlite3 and may hold changes the checksums do not cover): nothing was "
                           "restored; use an untouched backup, or move that file out of it if you know it is empty"
                           % (path, ", ".join(extra[:5])), reason="bad_backup", path=path / extra[0])
    return empty


def _reader_leftover(path: Path, name: str, listed: set[str]) -> bool:
    """True when ``name`` is a listed database's empty ``-wal``, or its ``-shm`` with no ``-wal`` or an empty
    one beside it: regular files only."""
    base, suffix = name[:-4], name[-4:]
    if suffix not in ("-wal", "-shm") or base not in listed:
        return False
    for file, must_be_empty in ((name, suffix == "-wal"), (base + "-wal", True)):
        try:
            st = os.lstat(path / file)
        except FileNotFoundError:
            if file == name:
                return False
            continue  # a -shm without its -wal
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or (must_be_empty and st.st_size != 0):
            return False
    return True


# --------------------------------------------------------------------------------------------- restoring


def _missing(paths: list[Path]) -> list[Path]:
    """The directories among ``paths`` and their parents that do not exist yet, outermost first."""
    out: list[Path] = []
    for path in paths:
        d = path
        chain = []
        while not os.path.lexists(d) and d.parent != d:
            chain.append(d)
            d = d.parent
        out += [c for c in reversed(chain) if c not in out]
    return out


def restore(config: GatewayConfig, backup_dir: Path, *, other_gateway: bool = False) -> RestoreResult:
    """Restore ``backup_dir`` into the gateway of ``config`` (see the module docstring).

    Args:
        other_gateway: restore a backup whose gateway id is not ``config.id`` (refused otherwise).

    Raises:
        RestoreError: see its reasons; the gateway's files are as they were.
        StorageError: the store's lock file cannot be made (``open_failed``), the store is hard-linked.
    """
    backup = check_backup(backup_dir)
    check_compatible(config, backup, other_gateway=other_gateway)
    result = RestoreResult(backup)
    if backup.left_by_readers:
        result.notes.append("the backup holds %s, left by a program that read its copy: no changes in them (no -wal "
                            "with content), not restored, left in place" % ", ".join(backup.left_by_readers))
    store = config.storage.path
    holder = store_writer(store)
    if holder is not None:
        raise _running(store, holder)
    real = real_store_path(store)
    # As root, everything made here gets the owner of the data directory (or its nearest existing parent):
    # the service user must be able to open what the restore leaves, not only what it replaced.
    owner = _owner(config.data_dir)
    created = _missing([real.parent, config.data_dir, config.registry_dir])
    lock_path = real.with_name(real.name + ".lock")
    new_lock = not os.path.lexists(lock_path)
    try:
        lock = lock_store(store, real)
    except GatewayError as exc:
        if exc.reason == "in_use":
            writer = store_writer(store)
            readers = store_readers(store) if writer is None else None
            if readers is not None:  # held shared only: no gateway, a one-shot read (export-log, routes plan)
                raise RestoreError("report store %s is being read by another civicedge command (%s), which holds its "
                                   "lock shared while it reads: restore again when it ends; nothing was changed"
                                   % (store, readers), reason="in_use", path=store) from None
            raise _running(store, writer or "unknown") from None
        raise
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    staged: list[Path] = []
    live = LiveLock(config.registry_dir)
    try:
        for d in (config.data_dir, config.registry_dir):
            try:
                mkdir_private(d)
            except OSError as exc:
                raise RestoreError("cannot create %s: %s" % (d, exc.strerror or exc), reason=_os_reason(exc),
                                   path=d) from exc
        for p in created + ([lock_path] if new_lock else []):
            if os.path.lexists(p):
                swap_files.chown(p, owner)
        places = _stage_store(config, backup, real, stamp, result, staged)
        places += _stage_registry_locked(config, backup, stamp, result, staged, live)
        _swap(config, real, stamp, places, result, owner)
    finally:
        live.release()
        for p in staged:
            if os.path.lexists(p):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else os.unlink(p)
        os.close(lock)
    return result


def check_compatible(config: GatewayConfig, backup: Backup, *, other_gateway: bool) -> None:
    """Refuse, before anything changes, a backup of a newer store schema or (unless asked) of another gateway.

    Raises:
        RestoreError: ``schema_too_new`` or ``other_gateway``.
    """
    m = backup.manifest
    listed = m.get("store_schema_version")
    found = _copy_schema(backup.path / backup.store)
    for what, version in (("MANIFEST.json says its store has", listed), ("its store copy records", found)):
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise RestoreError("backup %s was made by a newer civicedge: %s schema version %d, this release reads up "
                               "to %d; the gateway would refuse the restored store (schema_too_new); nothing was "
                               "changed: upgrade civicedge first, then restore" % (backup.path, what, version,
                                                                                  SCHEMA_VERSION),
                               reason="schema_too_new", path=backup.path / backup.store)
    gid = m.get("gateway_id")
    if isinstance(gid, str) and gid != config.id and not other_gateway:
        raise RestoreError("backup %s is of gateway %r, this config is gateway %r: nothing was changed. Replay "
                           "windows and ACK floors, the provenance chain's gateway id and the MQTT topics are per "
                           "gateway, so a restore normally goes into the same gateway id; set [gateway] id = %r in "
                           "the config, or give --other-gateway if you mean to restore another gateway's data here"
                           % (backup.path, gid, config.id, gid), reason="other_gateway", path=backup.path)


def _copy_schema(db: Path) -> int | None:
    """The schema version recorded in the backup's store copy (read-only, nothing written next to it)."""
    try:
        conn = sqlite3.connect(db.as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            return stored_version(conn)
        finally:
            conn.close()
    except (sqlite3.Error, GatewayError) as exc:
        raise RestoreError("cannot read the backup's store %s: %s" % (db, exc), reason="bad_backup", path=db) from exc


def _running(store: Path, holder: str) -> RestoreError:
    return RestoreError("report store %s is in use by the running gateway (pid %s): stop it and wait until it has "
                        "exited (systemctl stop civicedge-gateway), then restore; nothing was changed"
                        % (store, holder), reason="in_use", path=store)


_NO_CURRENT = ("%s: the backup's registry is restored as it is; devices revoked or keys rotated since the backup "
               "cannot be checked: revoke and rotate them again")


def _stage_store(config: GatewayConfig, backup: Backup, real: Path, stamp: str, result: RestoreResult,
                 staged: list[Path]) -> list[tuple[Path, Path]]:
    """Copy the backup's store, retention.json and (when missing) admin token beside their places."""
    b = backup.path
    places: list[tuple[Path, Path]] = []
    tmp_store = real.with_name(".%s.restore-%s" % (real.name, stamp))
    staged.append(tmp_store)
    _copy(b / backup.store, tmp_store, owner_of=real, listed=backup.listed[backup.store])
    result.recorded = _record(tmp_store, backup, result)
    result.reports, result.newest = _count(tmp_store)
    places.append((tmp_store, real))
    return places + _stage_small(config, backup, stamp, result, staged)


def _stage_registry_locked(config: GatewayConfig, backup: Backup, stamp: str, result: RestoreResult,
                           staged: list[Path], live: LiveLock) -> list[tuple[Path, Path]]:
    """Stage the backup's registry with the live changes carried over, and return holding ``live``'s lock.

    The live registry is read, the carry-over made on the staged copy, then the live registry locked and
    compared with what was read: a change made meanwhile (a ``devices revoke`` while the store was copied)
    means the carry-over is made again, up to three times.
    """
    for attempt in range(3):
        before = fingerprint(config.registry_dir)
        current, why = read_current(config.registry_dir)
        reg_dir = config.registry_dir / (".restore-%s-%d" % (stamp, attempt))
        staged.append(reg_dir)
        carried, warnings = _stage_registry(config, backup, reg_dir, current)
        try:
            live.acquire()
        except RegistryError as exc:
            raise RestoreError(str(exc), reason="registry_busy", path=config.registry_dir) from exc
        if live.fingerprint() == before:
            result.carried, result.warnings = carried, result.warnings + warnings
            if why is not None:
                result.warnings.append(_NO_CURRENT % why)
            return [(reg_dir / "devices.sqlite", config.registry_dir / "devices.sqlite"),
                    (reg_dir / "keys", config.registry_dir / "keys")]
        live.release()
        shutil.rmtree(reg_dir)
        result.notes.append("the current registry changed while the restore read it: its changes were carried over "
                            "again")
    raise RestoreError("the current registry %s kept changing during the restore (a `devices` command or the admin "
                       "API writing it): nothing was changed; run the restore again when nothing else writes the "
                       "registry" % config.registry_dir, reason="registry_busy", path=config.registry_dir)


def _stage_registry(config: GatewayConfig, backup: Backup, reg_dir: Path,
                    current: Current | None) -> tuple[list[str], list[str]]:
    """Copy the backup's registry into ``reg_dir`` and carry ``current``'s newer changes over to it."""
    b = backup.path
    _mkdir(reg_dir, owner_of=config.registry_dir)
    _mkdir(reg_dir / "keys", owner_of=config.registry_dir / "keys")
    _copy(b / backup.registry, reg_dir / "devices.sqlite", owner_of=config.registry_dir / "devices.sqlite",
          listed=backup.listed[backup.registry])
    for name in backup.keys:
        _copy(b / name, reg_dir / name, owner_of=config.registry_dir / name, listed=backup.listed[name])
    if current is None:
        return [], []
    try:
        reg = Registry(reg_dir, create=False)
    except RegistryError as exc:
        raise RestoreError("the backup's registry cannot be opened: %s" % exc, reason="registry") from exc
    try:
        out = carry_over(reg, current, manifest_time(backup.manifest.get("created_at")))
    except RegistryError as exc:
        raise RestoreError("a registry change made since the backup could not be carried over (%s); nothing was "
                           "restored" % exc, reason="registry") from exc
    finally:
        reg.close()
    _tighten_tree(reg_dir)
    return out


def _stage_small(config: GatewayConfig, backup: Backup, stamp: str, result: RestoreResult,
                 staged: list[Path]) -> list[tuple[Path, Path]]:
    """retention.json and the admin token (only when its file is missing)."""
    b = backup.path
    places: list[tuple[Path, Path]] = []
    retention = config.data_dir / RETENTION_FILE
    if backup.retention is not None:
        tmp = retention.with_name(".%s.restore-%s" % (RETENTION_FILE, stamp))
        staged.append(tmp)
        _copy(b / backup.retention, tmp, owner_of=retention, listed=backup.listed[backup.retention])
        places.append((tmp, retention))
    elif os.path.lexists(retention):
        result.notes.append("the backup has no retention.json (retention was the policy's then): the current one is "
                            "moved aside")
    token = config.http.admin_token_file if config.http is not None else None
    if backup.token is not None and token is not None:
        if os.path.lexists(token):
            if _digest(token) != _digest(b / backup.token):
                result.notes.append("admin token %s changed since the backup: the current one is kept" % token)
        else:
            tmp = token.with_name(".%s.restore-%s" % (token.name, stamp))
            staged.append(tmp)
            _copy(b / backup.token, tmp, owner_of=token, listed=backup.listed[backup.token])
            places.append((tmp, token))
    for entry in backup.others:
        src = Path(str(entry.get("source", "")))
        if not os.path.lexists(src):
            result.notes.append("%s %s is missing; the backup's copy is %s (not restored by this command: copy it "
                                "into place, 0600)" % (entry["what"], src, b / entry["name"]))
    return places


def _swap(config: GatewayConfig, real: Path, stamp: str, staged: list[tuple[Path, Path]], result: RestoreResult,
          owner: tuple[int, int] | None) -> None:
    """Move the current files aside, then the staged copies into place; on failure or interrupt put everything back."""
    reg = config.registry_dir
    aside = config.data_dir / ("replaced-%s" % stamp)
    aside_reg = aside / "registry" if reg != config.data_dir else aside
    by_place = {place: tmp for tmp, place in staged}
    # Side files first: a -wal or -journal left beside a replaced database would be applied to it.
    order = [real.with_name(real.name + s) for s in ("-wal", "-shm", "-journal")] + [real]
    order += [reg / ("devices.sqlite" + s) for s in ("-journal", "-wal", "-shm")] + [reg / "devices.sqlite", reg / "keys"]
    order.append(config.data_dir / RETENTION_FILE)
    order += [place for place in by_place if place not in order]
    places = [swap_files.Place(p, by_place.get(p), (aside_reg if p.parent == reg else aside) / p.name) for p in order
              if p in by_place or os.path.lexists(p)]
    current = [p.place for p in places if os.path.lexists(p.place)]
    if current:
        _same_fs(current, config.data_dir)
    marker = config.data_dir / swap_files.MARKER
    if os.path.lexists(marker):
        result.warnings.append("%s was there: an earlier restore was cut off during its swap (%s); this restore "
                               "replaced the files as they were" % (marker, _head(marker)))
    info = {"backup": str(result.backup.path), "data_dir": str(config.data_dir), "aside": str(aside)}
    try:
        sw = swap_files.swap(places, [aside, aside_reg] if current else [],
                             [real.parent, reg, reg / "keys", config.data_dir, aside, aside_reg], config.data_dir,
                             info, owner)
    except BaseException as exc:
        problems: list[str] = getattr(exc, "rollback_problems", [])
        if isinstance(exc, (KeyboardInterrupt, swap_files.Interrupted)):
            name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else str(exc)
            if problems:
                raise RestoreError("restore interrupted (%s) during the swap and could not be rolled back fully: %s; "
                                   "files moved aside are in %s; %s stays until this is sorted out"
                                   % (name, "; ".join(problems), aside, marker), reason="interrupted") from exc
            raise RestoreError("restore interrupted (%s) during the swap; rolled back: every moved file is back in "
                               "its place%s, nothing was restored" % (name, _removed(aside, current)),
                               reason="interrupted") from exc
        if not isinstance(exc, OSError):
            raise
        where = exc.filename or ""
        if problems:
            raise RestoreError("restore failed (%s: %s) and could not be rolled back fully: %s; files moved aside are "
                               "in %s; %s stays until this is sorted out" % (where, exc.strerror or exc,
                                                                             "; ".join(problems), aside, marker),
                               reason=_os_reason(exc), path=Path(where) if where else None) from exc
        raise RestoreError("restore failed: %s: %s; rolled back: every moved file is back in its place%s, nothing was "
                           "restored" % (where, exc.strerror or exc, _removed(aside, current)),
                           reason=_os_reason(exc), path=Path(where) if where else None) from exc
    result.moved = sw.moved
    result.aside = aside if current else None
    result.keys_in_place = sum(1 for n in os.listdir(reg / "keys") if n.endswith(".key"))


def _head(marker: Path) -> str:
    try:
        return marker.read_text(encoding="utf-8", errors="replace")[:300].replace("\n", " ")
    except OSError as exc:
        return "unreadable: %s" % (exc.strerror or exc)


def _removed(aside: Path, current: list[Path]) -> str:
    return " (%s removed)" % aside if current and _rmdir_empty(aside) else ""


def _rmdir_empty(aside: Path) -> bool:
    """Remove the rolled-back, empty aside directory (and its empty registry/); True when it is gone."""
    try:
        if (aside / "registry").is_dir():
            os.rmdir(aside / "registry")
        os.rmdir(aside)
        return True
    except OSError:
        return False


def _same_fs(paths: list[Path], data_dir: Path) -> None:
    dev = os.stat(data_dir).st_dev
    for p in paths:
        if os.lstat(p).st_dev != dev:
            raise RestoreError("%s is on another file system than the data directory %s: it cannot be moved aside by a "
                               "rename; nothing was changed; restore by hand (docs/gateway.md, Restoring a backup)"
                               % (p, data_dir), reason="cross_device", path=p)


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission_denied"
    return "write_failed"


# ------------------------------------------------------------------------------------------------ files


def _owner(ref: Path) -> tuple[int, int] | None:
    """(uid, gid) of ``ref``, else of its nearest existing directory."""
    p = ref
    while True:
        try:
            st = os.lstat(p)
            return st.st_uid, st.st_gid
        except OSError:
            if p.parent == p:
                return None
            p = p.parent


def _chown(fd_or_path: int | Path, owner_of: Path) -> None:
    """As root, give the new file the owner of what it replaces (the gateway's user), not root."""
    if os.geteuid() != 0:
        return
    owner = _owner(owner_of)
    if owner is None:
        return
    if isinstance(fd_or_path, int):
        os.fchown(fd_or_path, *owner)
    else:
        os.chown(fd_or_path, *owner, follow_symlinks=False)


def _copy(src: Path, dst: Path, *, owner_of: Path, listed: tuple[int, str]) -> None:
    """Copy ``src`` into the new file ``dst``: 0600, owned as ``owner_of``, synced; what was copied must have
    ``listed``'s size and SHA-256 (MANIFEST.json's).

    :func:`check_backup` checked the file earlier, but a backup may change between that check and this copy (an
    operator's ``sqlite3`` session left open on the backup's store shows as the empty ``-wal`` and ``-shm`` restore
    tolerates, and its commit or last close checkpoints into the file), so the bytes copied are hashed as they are
    read. Every copy is staged before anything is swapped into place (:func:`_swap`), so a mismatch here
    leaves the gateway's files as they were.

    Raises:
        RestoreError: ``checksum_mismatch`` (the backup changed during the restore), or an OS error's reason.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            _chown(fd, owner_of)
            with open(src, "rb") as fin:
                for chunk in iter(lambda: fin.read(_CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RestoreError("cannot copy %s to %s: %s; nothing was changed" % (src, dst, exc.strerror or exc),
                           reason=_os_reason(exc), path=dst) from exc
    if (size, digest.hexdigest()) != listed:
        raise RestoreError("the backup changed during the restore: %s no longer matches MANIFEST.json (size %d, listed "
                           "%d; SHA-256 %s, listed %s), a program wrote it after it was checked (an sqlite3 session "
                           "still open on the backup?); nothing was restored: end that program, check the backup "
                           "(it is no longer the one made) and restore again"
                           % (src, size, listed[0], digest.hexdigest()[:16] + "...", listed[1][:16] + "..."),
                           reason="checksum_mismatch", path=src)


def _mkdir(path: Path, *, owner_of: Path) -> None:
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)
        _chown(path, owner_of)
    except OSError as exc:
        raise RestoreError("cannot create %s: %s; nothing was changed" % (path, exc.strerror or exc),
                           reason=_os_reason(exc), path=path) from exc


def _tighten_tree(reg_dir: Path) -> None:
    """Key files written by the Registry API while carrying changes over: 0600, owned as the others."""
    for p in [reg_dir / "devices.sqlite", *sorted((reg_dir / "keys").iterdir())]:
        os.chmod(p, 0o600)
        _chown(p, reg_dir)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ store


def _record(db: Path, backup: Backup, result: RestoreResult) -> bool:
    """Write meta ``restored_from`` into the staged store copy (not in use by anyone); False when it has no meta."""
    value = json.dumps({"backup": str(backup.path), "backup_created_at": backup.manifest.get("created_at"),
                        "manifest_sha256": backup.manifest_sha256,
                        "restored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, sort_keys=True)
    try:
        conn = sqlite3.connect(db)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
                result.notes.append("the backup's store has no meta table (no reports yet): the restore is not "
                                    "recorded in it")
                return False
            with conn:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META_KEY, value))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RestoreError("cannot write the restore record into the copy %s: %s; nothing was changed" % (db, exc),
                           reason="write_failed", path=db) from exc
    for suffix in ("-wal", "-shm", "-journal"):  # the last close checkpointed the copy's -wal into it
        side = db.with_name(db.name + suffix)
        if os.path.lexists(side):
            os.unlink(side)
    return True


def _count(db: Path) -> tuple[int, float | None]:
    """(reports, newest received_at) of the staged store copy."""
    try:
        conn = sqlite3.connect(db.as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='reports'").fetchone() is None:
                return 0, None
            n, newest = conn.execute("SELECT count(*), max(received_at) FROM reports").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RestoreError("cannot read the backup's store %s: %s" % (db, exc), reason="bad_backup", path=db) from exc
    return int(n), None if newest is None else float(newest)


# ---------------------------------------------------------------------------------------------- summary


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def summary(result: RestoreResult, config: Path | None) -> str:
    """What was restored, where the old files went, what it means and what to run next."""
    b = result.backup
    created = str(b.manifest.get("created_at", "unknown"))
    lines = ["restored backup %s (made %s, MANIFEST.json SHA-256 %s)" % (b.path, created, b.manifest_sha256),
             "  report store: %d report(s), newest received %s" % (result.reports, "none" if result.newest is None
                                                                    else _utc(result.newest)),
             "  device registry and %d device key file(s) in place (%d from the backup)%s"
             % (result.keys_in_place, len(b.keys), ", retention.json" if b.retention else "")]
    if result.aside is not None:
        lines.append("the replaced files were moved (not deleted) to %s:" % result.aside)
        lines += ["  %s" % src for src, _ in result.moved]
    else:
        lines.append("there were no current files to move aside")
    if result.carried:
        lines.append("registry changes made since the backup, carried over:")
        lines += ["  " + c for c in result.carried]
    lines += ["note: " + n for n in result.notes]
    lines.append("note: %s" % ("the restore is recorded in the store (meta %s)" % META_KEY if result.recorded
                               else "the restore is not recorded in the store"))
    lines += ["warning: " + w for w in result.warnings]
    cfg = "" if config is None else " --config %s" % config
    if result.newest is not None and time.time() - result.newest > 86400:
        lines.append("note: the newest restored report is %.1f days old: at its start the gateway may hold retention "
                     "(its clock looks far ahead of the stored data: clock_ahead); see civicedge gateway retention%s, "
                     "and once the clock is right release it with civicedge gateway retention%s --confirm"
                     % ((time.time() - result.newest) / 86400, cfg, cfg))
    lines += [
        "what this means:",
        "  - reports acknowledged after %s are lost (the boards deleted them at their ACK) unless your MQTT "
        "archive holds them" % created,
        "  - open data and /opendata/privacy-budget.csv go back to the backup's state",
        "  - the provenance chain continues from the backup's head: an auditor holding a later head sees a fork; "
        "tell them the restore time and this backup",
        "next: civicedge gateway run%s --check, then start the gateway"
        % ("" if config is None else " --config %s" % config),
    ]
    return "\n".join(lines)

