"""The device registry: :class:`Registry`, stored in a private directory (mode 0700) holding
``devices.sqlite`` and ``keys/<id>.key`` (layout: :mod:`gateway.registry.records`).

Keys are never logged, printed or placed in exceptions; only their file path is shown.
Other tools (provisioning, the web admin API) use this class directly::

    reg = Registry(Path("data/registry"))
    rec = reg.add("sl-001", kind="streetlight", zone="centre", lat="52.37", lon="4.89")
    key = reg.key("sl-001")          # bytes, for writing /identity.json on the device

The parts the class is built on live beside it: key files in :mod:`gateway.registry.key_files`, the
database's table and errors in :mod:`gateway.registry.records`, value checks in
:mod:`gateway.registry.values`, the steps of a removal in :mod:`gateway.registry.removal`. Their names stay
importable from here, where other code imported them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import os
import shlex
import sqlite3
import stat
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from gateway.errors import RegistryError
from gateway.private_dirs import fsync_dir, mkdir_private
from gateway.protocol.frame import valid_device_id
# Names other code imports from here ("X as X": re-exported), then what the class uses.
from gateway.registry.key_files import KEY_LEN as KEY_LEN, generate_key as generate_key
from gateway.registry.key_files import key_fingerprint as key_fingerprint, read_key_file as read_key_file
from gateway.registry.records import _ADDED_COLUMNS as _ADDED_COLUMNS, _COLUMNS as _COLUMNS
from gateway.registry.records import DeviceRecord as DeviceRecord
from gateway.registry.records import RETIRED as RETIRED, RETIRED_FOR_REMOVAL as RETIRED_FOR_REMOVAL
from gateway.registry.values import MAX_DECIMALS as MAX_DECIMALS, decimal_text as decimal_text
from gateway.registry.values import same_decimal as same_decimal, same_place as same_place
from gateway.registry.values import unsigned_zero as unsigned_zero, validate_device as validate_device
from gateway.registry.key_files import (_SECURED_WARNINGS, _check_key, _key_file_problem, _key_mode_problem,
                                        _secure_key_file_outcome)
from gateway.registry.removal import (cli_advice, delete_device, heard_from_error, keyless_advice, mark_removing,
                                      put_back)
from gateway.registry.records import _READ_ONLY, _SCHEMA, _check_place_of, _disk_hint, _locked, _read_only, _storage
from gateway.registry.values import _validate_device
from gateway.registry.zones import normalize_zone

log = logging.getLogger(__name__)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path`` with mode 0600 from the first byte, durably: the file is
    fsynced before the rename and its directory after it (a power cut must not keep a committed row
    whose new directory entry was lost). The temp file is removed when anything fails."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def _mode(path: Path) -> int:
    """The permission bits of ``path`` (of its target when it is a symlink: what chmod changes)."""
    return stat.S_IMODE(os.stat(path).st_mode)


def _tighten(path: Path, mode: int, changed: list[str]) -> None:
    """Set ``path`` to ``mode`` when it differs, noting ``name 0755 -> 0700`` in ``changed``.

    A chmod to the mode a path already has is skipped: nothing to say, and nothing to refuse when
    another user owns it."""
    old = _mode(path)
    if old != mode:
        os.chmod(path, mode)
        changed.append("%s %04o -> %04o" % (path.name, old, mode))


def _check_expectation(device_id: str, expect_key: bytes | None, expect_key_sha256: bytes | None) -> bool:
    """Whether a key change is a compare-and-swap; refuses both expectations at once or a digest of the
    wrong length (``bad_value``): a malformed one would never match, and a silent ``conflict`` misleads."""
    if expect_key is not None and expect_key_sha256 is not None:
        raise RegistryError("pass expect_key or expect_key_sha256, not both", reason="bad_value", device_id=device_id)
    if expect_key_sha256 is not None and len(expect_key_sha256) != hashlib.sha256().digest_size:
        raise RegistryError("expect_key_sha256 must be a SHA-256 digest (32 bytes), not %d bytes"
                            % len(expect_key_sha256), reason="bad_value", device_id=device_id)
    return expect_key is not None or expect_key_sha256 is not None


def _holds(held: bytes, expect_key: bytes | None, expect_key_sha256: bytes | None) -> bool:
    """Whether the key ``held`` is the one expected (by value or by SHA-256 digest), in constant time."""
    if expect_key is not None:
        return hmac.compare_digest(held, expect_key)
    return expect_key_sha256 is not None and hmac.compare_digest(hashlib.sha256(held).digest(), expect_key_sha256)


def _names(names: list[str], first: int = 3) -> str:
    """``a, b, c and 4 more``: a log line names a few, never hundreds."""
    shown = ", ".join(names[:first])
    return shown if len(names) <= first else "%s and %d more" % (shown, len(names) - first)


def _read_if_present(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when there is no such file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


#: Source of the :attr:`Registry.version` markers taken inside a write transaction (each one new).
_UNSETTLED = itertools.count(1)

class Registry:
    """The device registry.

    Args:
        path: registry directory; created with mode 0700 if absent.
        create: when False (read-only and per-device commands) an absent registry is an error
            instead of being created, so a mistyped path does not leave an empty registry behind.
            When True (the gateway, ``devices add``) the registry is also secured: its directories
            are set to 0700, ``devices.sqlite`` to 0600 and every key file this user owns that
            group or others may use to 0600; each change is logged as a WARNING (it means someone
            or something widened them). Opened with ``create`` False, nothing is changed:
            :meth:`key_mode_problem` says when a key file is too open.

    Raises:
        RegistryError: reason ``no_registry`` (``create`` is False and there is no registry at
            ``path``, or ``path`` holds other files and no registry), ``not_a_directory`` (``path`` or a parent is a file), ``corrupt``
            (``devices.sqlite`` is not a registry database), ``permissions`` (the directory or
            database cannot be created, opened or secured).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.keys_dir = self.path / "keys"
        db = self.path / "devices.sqlite"
        try:  # Path.exists/is_file raise PermissionError (not False) in a directory we may not search
            self._check_place(db, create)
        except PermissionError as exc:
            raise RegistryError("cannot open registry %s: %s (the registry directory must be readable by the user "
                                "running this command)" % (self.path, exc), reason="permissions") from exc
        changed: list[str] = []
        try:
            if create:
                for d in (self.path, self.keys_dir):
                    mkdir_private(d)
                    _tighten(d, 0o700, changed)
                if not db.exists():
                    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
                _tighten(db, 0o600, changed)
        except (FileExistsError, NotADirectoryError) as exc:
            # mkdir(exist_ok=True) says "File exists" when a file sits where a directory belongs.
            blocker = next((p for p in (self.keys_dir, self.path, *self.path.parents)
                            if p.exists() and not p.is_dir()), exc.filename)
            raise RegistryError("cannot create registry %s: %s is not a directory" % (self.path, blocker),
                                reason="not_a_directory") from exc
        except OSError as exc:
            raise RegistryError("cannot open registry %s: %s" % (self.path, exc), reason="permissions") from exc
        finally:
            if changed:  # also when a later chmod failed: these changes were made
                log.warning("registry %s: permissions set to owner-only: %s", self.path,
                            ", ".join(changed))
        self._conn = self._connect(db, create=create)
        self._key_cache: dict[str, tuple[int, bytes]] = {}
        self._secure_keys = create
        if create:
            self._tighten_key_files()

    def _tighten_key_files(self) -> None:
        """Set every key file this user owns that group or others may use to 0600, with one WARNING
        naming them (a key copied in by hand keeps the copy's 0644: anyone on the host could then
        forge the device's frames). Files of other owners and symlinks are not changed (a chmod
        through a link would change whatever it points to): a WARNING says so."""
        try:
            entries = sorted(os.scandir(self.keys_dir), key=lambda e: e.name)
        except OSError as exc:
            log.warning("registry %s: cannot list the key files to check their permissions: %s", self.path, exc)
            return
        self._warn_secured([_secure_key_file_outcome(entry.path) for entry in entries])

    def _warn_secured(self, outcomes: list[tuple[str, str, str]]) -> None:
        """One WARNING per outcome of securing key files (``(what, name, detail)`` from
        :func:`_secure_key_file_outcome`) that needs one: one file is named with its mode, several
        are counted and the first few named."""
        for what, (one, several) in _SECURED_WARNINGS.items():
            files = [(name, detail) for w, name, detail in outcomes if w == what]
            if len(files) == 1:
                log.warning("registry %s: key file %s " + one, self.path, *files[0])
            elif files:
                log.warning("registry %s: %d key file(s) " + several, self.path, len(files),
                            _names(["%s (%s)" % f for f in files]))

    def _check_place(self, db: Path, create: bool) -> None:
        """Refuse a registry path that is a file, a missing registry (``create`` off), or a directory
        holding other files (e.g. a gateway's data_dir given for its data_dir/registry).

        Raises:
            RegistryError: as above, or reason ``bad_path`` for a path that cannot be looked up (a name
                too long, a symlink loop: ``Path.exists`` raises these).
            PermissionError: a directory on the way may not be searched (the caller says so).
        """
        try:
            _check_place_of(self.path, db, create)
        except PermissionError:
            raise
        except OSError as exc:
            raise RegistryError("cannot open registry %s: %s" % (self.path, exc.strerror or exc),
                                reason="bad_path") from exc

    def _connect(self, db: Path, *, create: bool) -> sqlite3.Connection:
        """Open ``db`` and check it holds the devices table (created when ``create`` is set)."""
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=5000")
            if create:
                conn.executescript(_SCHEMA)
            columns_seen = int(conn.execute("PRAGMA data_version").fetchone()[0])  # before the columns: see _select
            columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(devices)")}
        except sqlite3.OperationalError as exc:
            # Cannot open, read-only, locked: the file may be fine, the access is not.
            self._close_quietly(conn)
            raise RegistryError("cannot open registry %s: %s" % (self.path, exc), reason="permissions") from exc
        except sqlite3.Error as exc:
            self._close_quietly(conn)
            raise RegistryError("%s is not a device registry database (corrupt or another kind of file): %s"
                                % (db, exc), reason="corrupt") from exc
        missing = sorted(_COLUMNS - columns)
        if missing:
            conn.close()
            what = "it has no devices table" if not columns else "its devices table lacks %s" % ", ".join(missing)
            raise RegistryError("%s is not a device registry database (%s)" % (db, what), reason="corrupt")
        self._rollback_journal(conn)
        self._columns = columns
        self._columns_seen = columns_seen
        if create:
            try:
                self._add_columns(conn, read_only_ok=True)
            except RegistryError:
                conn.close()
                raise
        return conn

    def _add_columns(self, conn: sqlite3.Connection, *, read_only_ok: bool = False) -> None:
        """Upgrade a registry made by an older version: add the columns of :data:`_ADDED_COLUMNS` it lacks
        (existing rows get the default: not retired), all in one ``BEGIN IMMEDIATE`` transaction.

        With ``read_only_ok`` (the gateway's open) a registry that cannot be written is left as it is with
        one WARNING: it cannot hold a retirement, so the missing column reads as "nothing retired", as
        0.1.0 ran on it; only retire and reinstate need the column.

        Two processes may open an older registry at once (a gateway starting beside a ``devices``
        command): the columns are read again under the write lock and only those still missing are
        added, so the second finds the first one's upgrade done instead of failing on "duplicate column
        name" (taken as done too, after the columns are read again). Nothing changes unless all is added.

        Raises:
            RegistryError: ``storage`` (another process held the registry locked for longer than the busy
                timeout: retry; or another SQLite error, e.g. disk full or I/O error), ``permissions`` (it
                cannot be written: read-only file, directory or mount; only without ``read_only_ok``).
        """
        if all(name in self._columns for name, _ in _ADDED_COLUMNS):
            return
        added: list[str] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._columns = self._read_columns(conn)  # as of the lock: another process may have upgraded
                for name, definition in _ADDED_COLUMNS:
                    if name in self._columns:
                        continue
                    try:
                        conn.execute("ALTER TABLE devices ADD COLUMN %s %s" % (name, definition))
                    except sqlite3.OperationalError as exc:
                        if "duplicate column name" not in str(exc):
                            raise
                        if name not in self._read_columns(conn):
                            raise
                        continue  # added meanwhile after all: what this upgrade wanted
                    added.append(name)
                    self._columns = self._columns | {name}
                conn.execute("COMMIT")
            except BaseException:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error as exc:  # the connection is gone; SQLite rolls back on the next open
                    log.debug("rollback failed: %s", exc)
                raise
        except sqlite3.Error as exc:
            self._columns = self._columns - set(added)
            missing = ", ".join(n for n, _ in _ADDED_COLUMNS if n not in self._columns)
            if _read_only(exc):
                if read_only_ok:
                    log.warning("registry %s was made by a version before 0.2.0 (no column %s) and cannot be "
                                "upgraded: %s (%s); the gateway uses it as it is (no device retired), but "
                                "retiring or reinstating a device needs a writable registry", self.path, missing,
                                _READ_ONLY, exc)
                    return
                raise RegistryError("cannot upgrade registry %s (add column %s, made by a version before 0.2.0): "
                                    "%s: %s; retire and reinstate need a writable registry"
                                    % (self.path, missing, exc, _READ_ONLY), reason="permissions") from exc
            if _locked(exc):
                raise RegistryError("cannot upgrade registry %s (add column %s): %s (another process holds it; "
                                    "retry)" % (self.path, missing, exc), reason="storage") from exc
            raise RegistryError("cannot upgrade registry %s (add column %s): %s%s"
                                % (self.path, missing, exc, _disk_hint(exc)), reason="storage") from exc
        for name in added:
            log.info("registry %s: upgraded (added column %s)", self.path, name)

    @staticmethod
    def _read_columns(conn: sqlite3.Connection) -> set[str]:
        """The devices table's columns as the database has them now (another process may have added some)."""
        return {str(row[1]) for row in conn.execute("PRAGMA table_info(devices)")}

    def _select(self) -> str:
        """The columns :meth:`_record` reads, in its order; a registry not upgraded yet reads as not retired.

        While ``retired`` is missing (an instance opened without ``create`` on an older registry, or any on
        a read-only one) another process may upgrade the registry, and its retirements must be seen: the
        columns are read again when ``PRAGMA data_version`` says another connection committed a change
        since they were read, so a frame's lookup pays that cheap PRAGMA and not a ``table_info`` per call.
        """
        if "retired" not in self._columns:
            with _storage(self.path, "read the registry's columns"):
                seen = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
                if seen != self._columns_seen:
                    self._columns = self._read_columns(self._conn)
                    self._columns_seen = seen
        retired = "retired" if "retired" in self._columns else "0"
        return "id, kind, zone, lat, lon, revoked, key_version, created_at, updated_at, %s" % retired

    def _rollback_journal(self, conn: sqlite3.Connection) -> None:
        """Put the registry in rollback-journal mode (``DELETE``; SQLite's default, a no-op when it is in it).

        A key change's ``BEGIN EXCLUSIVE`` waits for readers only in that mode, which is what lets a backup
        read the rows and the key files as of one moment; WAL (persistent, e.g. set by hand) lets a writer
        commit under a reader. Leaving WAL needs the database to itself: while another process has it open
        SQLite says "database is locked" at once. That is no reason to fail the open (a gateway must start
        beside a running ``devices`` command): it stays in WAL with a WARNING, and ``gateway backup``
        refuses it until an open that has it to itself.
        """
        try:
            mode = str(conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:  # locked, or read-only: the registry works as it is
            try:
                mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            except sqlite3.Error:
                mode = "unknown"
            if mode != "wal":
                return  # rollback-journal already (the change was a no-op that met a lock)
            log.warning("registry %s is in WAL journal mode and could not be set back to rollback-journal mode (%s: "
                        "another process has it open); it works, but `gateway backup` refuses it until the next open "
                        "with nothing else holding it (restart the gateway then)", self.path, exc)
            return
        if mode != "delete":
            log.warning("registry %s: journal mode %s, not rollback-journal (delete)", self.path, mode)

    @staticmethod
    def _close_quietly(conn: sqlite3.Connection | None) -> None:
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the registry database."""
        self._conn.close()

    @property
    def changes(self) -> int:
        """Rows changed through this instance so far: a cache of records/keys is stale when it moves."""
        return self._conn.total_changes

    @property
    def version(self) -> tuple[int, int, int]:
        """A cheap marker of the registry's rows (no row is read): it differs whenever a row may have changed
        since it was last taken, through this instance (:attr:`changes`) or any other connection to the same
        file, e.g. a ``civicedge gateway devices`` command in another process (SQLite's ``PRAGMA
        data_version``). While this instance is inside a write transaction (which may still roll back) it
        is a value never seen before, so nothing is cached against rows that may not stay.

        Raises:
            RegistryError: ``storage`` (the database cannot be read).
        """
        with _storage(self.path, "read the registry's version"):
            data_version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        return self._conn.total_changes, data_version, next(_UNSETTLED) if self._conn.in_transaction else 0

    def key_path(self, device_id: str) -> Path:
        """Return where the key of ``device_id`` is stored."""
        return self.keys_dir / ("%s.key" % device_id)

    def add(self, device_id: str, *, kind: str, zone: str, lat: str, lon: str, key: bytes | None = None) -> DeviceRecord:
        """Register a device and store its key (generated when ``key`` is None).

        Raises:
            RegistryError: ``bad_value`` (id, kind, zone, lat/lon), ``bad_key`` (not 32 bytes, one byte
                repeated, or the key of another registered device), ``exists`` (also for an id that
                differs from a registered one only in case); ``storage`` (SQLite or file error, e.g. the
                registry stayed locked: nothing was registered, no key file is left), ``storage_partial``
                (as ``storage``, but a key file without a row may be left).
        """
        zone = normalize_zone(zone)  # "Su\u0308dstadt" is stored, listed and filtered as "Südstadt"
        validate_device(device_id, kind=kind, zone=zone, lat=lat, lon=lon)
        if key is None:
            key = generate_key()  # 256 fresh random bits: no need to compare with the other keys
        else:
            _check_key(device_id, key)
            self._refuse_shared_key(device_id, key)
        with _storage(self.path, "read device %s" % device_id, device_id):
            twin = self._conn.execute("SELECT id FROM devices WHERE id = ? COLLATE NOCASE AND id != ?",
                                      (device_id, device_id)).fetchone()
        if twin is not None:
            # keys/SL-1.key and keys/sl-1.key are one file on a case-insensitive copy of the registry.
            raise RegistryError("device %s is registered; ids that differ only in case are not allowed (%s)"
                                % (twin[0], device_id), reason="exists", device_id=device_id, field="device_id")
        now = time.time()

        def insert() -> None:
            try:
                self._conn.execute(
                    "INSERT INTO devices (id, kind, zone, lat, lon, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (device_id, kind, zone, lat, lon, now, now),
                )
            except sqlite3.IntegrityError as exc:
                raise RegistryError("device %s is already registered" % device_id, reason="exists",
                                    device_id=device_id) from exc

        # All or nothing: the row is committed only once its key file is in place, and a failed add
        # removes the key file it wrote. A crash or power cut before the COMMIT rolls the row back
        # (SQLite's journal does at the next open); at worst a key file without a row is left, which a
        # later add overwrites.
        self._commit_with_key(device_id, key, insert, keep_previous=False, what="register device %s" % device_id)
        self._key_cache.pop(device_id, None)
        log.info("registered device %s (kind %s, zone %s)", device_id, kind, zone)
        return self.get(device_id)

    def enroll(self, device_id: str, *, kind: str, zone: str, lat: str, lon: str, key: bytes,
               replace: bool = False, expect_key: bytes | None = None,
               expect_key_sha256: bytes | None = None) -> str:
        """Register a device with the key its provisioning tool generated; idempotent.

        ``expect_key`` (with ``replace``): replace the key only while the device is still registered with
        ``expect_key``, checked under the write lock (compare-and-swap): a tool undoing its own registration
        never overwrites a key another tool registered meanwhile (a take-over, a key rotation).
        ``expect_key_sha256``: the same with the SHA-256 digest (32 bytes) of the expected key, for a caller
        that must not send the key itself (the admin API); at most one of the two.

        Returns:
            ``added`` (new device), ``unchanged`` (already registered exactly so, same key) or
            ``replaced`` (registered with another key and ``replace`` set: the key is rotated to ``key``).

        Raises:
            RegistryError: ``bad_value`` / ``bad_key`` (as :meth:`add`, also when ``replace`` would give the
                device another device's key); ``conflict`` (registered with
                another key and ``replace`` not set, or with another key than ``expect_key``, or revoked or
                retired meanwhile; with ``expect_key`` an id not registered is ``unknown_device``, never
                added); ``moved`` (registered with another kind, or with another zone or location: enrolling
                never moves a device, :meth:`move` does); ``revoked`` (a revoked id stays revoked: provision
                the board under a new id); ``retired`` (enrolling never takes a retired device back:
                :meth:`reinstate` does).
        """
        zone = normalize_zone(zone)  # a board or tool sending NFD enrols into the same zone
        rec = self.lookup(device_id) if valid_device_id(device_id) else None
        # A device stored with a zone from before the zone-edge rule ("north ") enrolls again unchanged.
        _validate_device(device_id, kind=kind, zone=zone, lat=lat, lon=lon,
                         zone_stored=rec is not None and rec.zone == zone)
        _check_key(device_id, key)
        expecting = _check_expectation(device_id, expect_key, expect_key_sha256)
        if rec is None and expecting:
            raise RegistryError("device %s is no longer registered; it is not registered again with the key it "
                                "had" % device_id, reason="unknown_device", device_id=device_id)
        if rec is None:
            self.add(device_id, kind=kind, zone=zone, lat=lat, lon=lon, key=key)
            return "added"
        if rec.revoked:
            raise RegistryError("device %s is revoked; provision the board under a new id" % device_id,
                                reason="revoked", device_id=device_id)
        if rec.retired:
            # Enrolling never takes a retired board back by accident (its frames would be acknowledged here
            # again, away from the gateway that serves it now): reinstating it is its own step.
            raise RegistryError(
                "device %s is retired from this gateway (moved to another gateway or taken out of service); if the "
                "board is back, reinstate it first (`civicedge gateway devices reinstate %s --registry %s`, or POST "
                "/api/admin/devices/%s/reinstate), then enroll it again"
                % (device_id, device_id, shlex.quote(str(self.path.absolute())), device_id),
                reason="retired", device_id=device_id)
        if rec.kind != kind:
            raise RegistryError(
                "device %s is registered as a %s, not a %s; one id is one board of one kind: provision this board "
                "under a new id" % (device_id, rec.kind, kind), reason="moved", device_id=device_id)
        if rec.zone != zone or not same_place((rec.lat, rec.lon), (lat, lon)):
            # The hint is a command that runs as printed: this registry (absolute, as it may be read
            # from another directory or over the admin API) and the place that was asked for.
            move_cmd = "civicedge gateway devices move %s --registry %s --location %s,%s --zone %s" % (
                device_id, shlex.quote(str(self.path.absolute())), lat, lon, shlex.quote(zone))
            raise RegistryError(
                "device %s is registered as %s in zone %r at %s,%s; a device cannot move by enrolling it again: "
                "keep the registered zone and location, or move it explicitly on the gateway's host (`%s`) or "
                "through the admin API (POST /api/admin/devices/%s/move with %s), then enroll it again"
                % (device_id, rec.kind, rec.zone, rec.lat, rec.lon, move_cmd, device_id,
                   json.dumps({"lat": lat, "lon": lon, "zone": zone})),
                reason="moved", device_id=device_id)
        problem = self.key_problem(device_id)
        if problem is None and hmac.compare_digest(self.key(device_id), key):
            return "unchanged"
        if not replace:
            if problem is not None:
                # A registration without a usable key (an interrupted registration of an older
                # version, a key file removed by hand): no board can report under it; moving the id
                # to this board is a take-over as for another board's key.
                raise RegistryError("device %s is registered but has no usable key (%s); replace its key to "
                                    "register this one" % (device_id, problem), reason="conflict",
                                    device_id=device_id)
            raise RegistryError("device %s is already registered with another key" % device_id, reason="conflict",
                                device_id=device_id)
        self.rotate_key(device_id, key=key, expect_key=expect_key, expect_key_sha256=expect_key_sha256)
        return "replaced"

    def get(self, device_id: str) -> DeviceRecord:
        """Return the record of ``device_id``.

        Raises:
            RegistryError: reason ``unknown_device``.
        """
        rec = self.lookup(device_id)
        if rec is None:
            raise RegistryError("no device %s in the registry" % device_id, reason="unknown_device", device_id=device_id)
        return rec

    def lookup(self, device_id: str) -> DeviceRecord | None:
        """Return the record of ``device_id`` or None."""
        with _storage(self.path, "read device %s" % device_id, device_id):
            row = self._conn.execute("SELECT %s FROM devices WHERE id=?" % self._select(), (device_id,)).fetchone()
        return None if row is None else self._record(row)

    def list(self) -> list[DeviceRecord]:
        """Return all devices, sorted by id."""
        with _storage(self.path, "list the devices"):
            rows = self._conn.execute("SELECT %s FROM devices ORDER BY id" % self._select()).fetchall()
        return [self._record(r) for r in rows]

    def revoke(self, device_id: str) -> DeviceRecord:
        """Mark a device revoked: its frames are rejected from now on.

        Raises:
            RegistryError: ``unknown_device``; ``already_revoked`` (as the admin API's 409), so a
                repeated revoke does not pass for a new one.
        """
        # One conditional UPDATE: two concurrent revokes cannot both report success.
        with _storage(self.path, "revoke device %s" % device_id, device_id):
            cur = self._conn.execute("UPDATE devices SET revoked=1, updated_at=? WHERE id=? AND revoked=0",
                                     (time.time(), device_id))
        if cur.rowcount == 0:
            self.get(device_id)  # unknown_device if there is none
            raise RegistryError("device %s is already revoked" % device_id, reason="already_revoked",
                                device_id=device_id)
        # INFO: a requested action, not a problem (the CLI prints its own result line); the admin API
        # logs its audit line at WARNING, which the quiet gateway keeps.
        log.info("revoked device %s", device_id)
        return self.get(device_id)

    def retire(self, device_id: str) -> DeviceRecord:
        """Mark a device retired: its board left this gateway (moved to another gateway, or taken out of
        service). Not a revocation: the key file stays (:meth:`reinstate` needs it), its past reports stay
        stored and published, it is no longer counted silent, and its frames are refused (reason
        ``retired``) and never acknowledged, so a board still in reach keeps its reports for the gateway
        that serves it now.

        Raises:
            RegistryError: ``unknown_device``; ``revoked`` (a revoked id stays revoked); ``already_retired``
                (as the admin API's 409, so a repeated retire does not pass for a new one); ``permissions``
                (the registry is read-only, also one of an older version that cannot be upgraded); ``storage``
                (also: another process held it locked longer than the busy timeout while upgrading it).
        """
        self.get(device_id)  # unknown_device
        if "retired" not in self._columns:  # opened without create (the CLI) on a registry not upgraded yet
            self._add_columns(self._conn)
        # One conditional UPDATE: two concurrent retires cannot both report success, nor a revoke slip under it.
        with _storage(self.path, "retire device %s" % device_id, device_id):
            # Also a device retired only for a removal that waits (RETIRED_FOR_REMOVAL): retired for good
            # now, which that removal then leaves as it is (it puts back and deletes only its own mark).
            cur = self._conn.execute("UPDATE devices SET retired=?, updated_at=? WHERE id=? AND revoked=0 AND "
                                     "retired!=?", (RETIRED, time.time(), device_id, RETIRED))
        if cur.rowcount == 0:
            rec = self.get(device_id)
            if rec.revoked:
                raise RegistryError("device %s is revoked; a revoked id stays revoked and is not retired" % device_id,
                                    reason="revoked", device_id=device_id)
            raise RegistryError("device %s is already retired" % device_id, reason="already_retired",
                                device_id=device_id)
        log.info("retired device %s", device_id)
        return self.get(device_id)

    def reinstate(self, device_id: str) -> DeviceRecord:
        """Take a retired device back: its frames (under the key it kept) are accepted again. Also one retired
        only for a removal (running: that removal then stops, ``reinstated``; or cut off). A device without a
        usable key (a removal cut off after deleting its key file, a key file lost) is taken back all the same
        (the field tools' repair re-keys it once reinstated), with a WARNING saying so and what to do
        (:func:`gateway.registry.removal.keyless_advice`): none of its frames can be verified meanwhile.

        Raises:
            RegistryError: ``unknown_device``; ``revoked`` (a revoked id stays revoked); ``not_retired``
                (the device is not retired: nothing to take back); ``storage``.
        """
        rec = self.get(device_id)
        if rec.revoked:
            raise RegistryError("device %s is revoked; a revoked id stays revoked and is not reinstated (provision "
                                "the board under a new id)" % device_id, reason="revoked", device_id=device_id)
        if "retired" not in self._columns or not rec.retired:
            raise RegistryError("device %s is not retired" % device_id, reason="not_retired", device_id=device_id)
        with _storage(self.path, "reinstate device %s" % device_id, device_id):
            cur = self._conn.execute("UPDATE devices SET retired=0, updated_at=? WHERE id=? AND revoked=0 AND "
                                     "retired!=0", (time.time(), device_id))
        if cur.rowcount == 0:
            if self.get(device_id).revoked:  # revoked by another process meanwhile
                return self.reinstate(device_id)
            raise RegistryError("device %s is not retired" % device_id, reason="not_retired", device_id=device_id)
        log.info("reinstated device %s", device_id)
        problem = self.key_problem(device_id)
        if problem is not None:
            log.warning("reinstated device %s: %s", device_id, keyless_advice(device_id, problem))
        return self.get(device_id)

    def remove(self, device_id: str, *, traces: Callable[[str], Sequence[str]],
               settle_s: float | Callable[[], float] = 0.0, wait: Callable[[float], None] = time.sleep,
               advice: Callable[[str], str] = cli_advice,
               guard: Callable[[], AbstractContextManager[object]] = nullcontext) -> DeviceRecord:
        """Take a device that was never heard from out of the registry (a typo'd id, a board never
        installed) with its key file; return the record it had.

        ``traces(device_id)`` names what the report store holds of the device (its tables, e.g.
        :func:`gateway.storage.device_traces.device_traces`); anything there refuses the removal
        (``heard_from``, with ``advice``: retire or revoke it): its reports and replay protection stay with a
        registered id.

        The order is what keeps it safe beside a running gateway, which may still commit a frame of the device
        that it accepted before: the store is checked, the device retired (committed: from then on a gateway
        refuses its frames, within its registry cache), ``settle_s`` waited through ``wait`` (the gateway's
        registry cache and a commit of what it accepted meanwhile; a callable is asked after the device is
        retired, so a gateway started in between is waited for), and the store checked again. Found then, or
        stopped by anything (an error, Ctrl-C, a signal that ``wait`` turns into an exception), the device's
        flag is put back as it was. Only after that are the row and the key file deleted, together, under the
        registry's write lock (:func:`gateway.registry.removal.delete_device`), and only while the row is as
        the removal left it. The row is never gone before the end: a removal killed meanwhile leaves the device
        registered and retired, with its key file. While it waits, the device is retired for the removal
        (:data:`RETIRED_FOR_REMOVAL`); a :meth:`retire` meanwhile makes it retired for good and stops the removal
        (``retired``), and only the removal's own mark is put back. ``guard()`` is held around the final
        deletion: the command line blocks its signals there (the key file is unlinked before the row's deletion
        commits; stopped in between, the row would stay without its key).

        Raises:
            RegistryError: ``unknown_device``; ``revoked`` (a revoked id stays revoked: its row is what refuses
                the id for good); ``heard_from`` (the store holds something of it); ``reinstated`` (by another
                process during the wait); ``retired`` (retired for good by another request or process during the wait:
                it stays retired, also after a reinstate); ``changed`` (its row changed during the wait: moved or key
                rotated, put back; reinstated and marked by another removal, whose mark stays; retired before,
                reinstated and retired again, which stays retired); ``storage`` (SQLite error); ``key_file`` (the
                key file could not be deleted); nothing changed for any of these (the device's flag is put back,
                but for another removal's mark or retire). ``storage_partial``: the device stays retired (its flag
                could not be put back, or its key file is deleted but the row's deletion could not be committed);
                the message says what to do.
            StorageError: what ``traces`` raises (after the device was retired: its flag is put back).
        """
        rec = self.get(device_id)
        if rec.revoked:  # its row is the record that the id must never be accepted again
            raise RegistryError("device %s is revoked; it is not removed (a revoked id stays revoked)" % device_id,
                                reason="revoked", device_id=device_id)
        found = traces(device_id)
        if found:
            raise heard_from_error(device_id, found, advice=advice)
        if "retired" not in self._columns:  # opened without create (the CLI) on a registry not upgraded yet
            self._add_columns(self._conn)
        mark = mark_removing(self.path, self._conn, device_id)
        try:
            seconds = settle_s() if callable(settle_s) else settle_s
            if seconds > 0:
                wait(seconds)
            found = traces(device_id)
        except Exception as exc:
            put_back(self.path, self._conn, device_id, mark,
                     why="the removal of device %s was stopped: %s" % (device_id, exc))
            raise
        except BaseException as exc:  # Ctrl-C, or a signal turned into an exception: put back, then stop
            put_back(self.path, self._conn, device_id, mark, interrupted=True,
                     why="interrupted (%s)" % (type(exc).__name__ if not str(exc) else exc))
            raise
        if found:
            outcome = put_back(self.path, self._conn, device_id, mark,
                               why="device %s was heard from while it was being removed" % device_id)
            raise heard_from_error(device_id, found, outcome=outcome, advice=advice)
        try:
            with guard():
                delete_device(self.path, self._conn, device_id, self.key_path, mark)
        except RegistryError as exc:
            # Nothing deleted: not left retired by this removal (put_back touches only its own mark).
            if exc.reason in ("storage", "key_file", "revoked", "changed"):
                put_back(self.path, self._conn, device_id, mark, why=str(exc))
            raise
        finally:
            self._key_cache.pop(device_id, None)
        log.info("removed device %s (never heard from) and its key file", device_id)
        return rec

    def move(self, device_id: str, *, lat: str, lon: str, zone: str | None = None) -> tuple[DeviceRecord, bool]:
        """Correct or change where a registered device is: its location and, when given, its zone.

        The explicit way to move a device (a mistyped ``--location``, a bin put elsewhere): :meth:`enroll`
        refuses a registration that differs (``moved``) so that a re-enrolment never moves one by accident.
        Only the registry row changes: the key and key version stay, and stored reports keep the zone
        they were stored with; reports from now on carry the new zone.

        Returns:
            The record and whether it changed (False: already there, the same point written alike or
            otherwise, e.g. ``52.370`` for ``52.37``; nothing is written then).

        Raises:
            RegistryError: ``bad_value`` (zone, lat/lon, as :meth:`add`); ``unknown_device``; ``revoked``
                (a revoked id stays revoked: nothing to move); ``storage``.
        """
        rec = self.get(device_id)
        new_zone = rec.zone if zone is None else normalize_zone(zone)
        _validate_device(device_id, kind=rec.kind, zone=new_zone, lat=lat, lon=lon, zone_stored=zone is None)
        if rec.revoked:
            raise RegistryError("device %s is revoked; it is not moved (a revoked id stays revoked)" % device_id,
                                reason="revoked", device_id=device_id)
        if new_zone == rec.zone and same_place((rec.lat, rec.lon), (lat, lon)):
            return rec, False
        with _storage(self.path, "move device %s" % device_id, device_id):
            cur = self._conn.execute(
                "UPDATE devices SET zone=?, lat=?, lon=?, updated_at=? WHERE id=? AND revoked=0",
                (new_zone, lat, lon, time.time(), device_id))
        if cur.rowcount == 0:  # revoked (or removed) by another process meanwhile
            return self.move(device_id, lat=lat, lon=lon, zone=zone)
        log.info("moved device %s from zone %s at %s,%s to zone %s at %s,%s", device_id, rec.zone, rec.lat, rec.lon,
                 new_zone, lat, lon)
        return self.get(device_id), True

    def rotate_key(self, device_id: str, *, key: bytes | None = None, expect_key: bytes | None = None,
                   expect_key_sha256: bytes | None = None) -> Path:
        """Replace the device's key (generated when ``key`` is None); return the key file path.

        ``expect_key``: only while the device's key file holds it, read under the write lock (another
        tool's change in between makes this a ``conflict``, nothing changed). ``expect_key_sha256``: the
        same, given as the SHA-256 digest (32 bytes) of the expected key; at most one of the two.

        The device keeps its old key until it is re-provisioned, so its frames fail HMAC until then.

        Raises:
            RegistryError: ``unknown_device``; ``revoked`` (a revoked id stays revoked: a new key would
                serve nothing, provision the board under a new id); ``bad_key`` (as :meth:`add`);
                ``storage`` (SQLite or file error: the old key and version are kept); ``storage_partial``
                (the row kept the old version but the old key file could not be put back); ``conflict``
                (``expect_key`` given and the device holds another key, or none usable); ``bad_value``
                (both expectations given, or a digest that is not 32 bytes).
        """
        expecting = _check_expectation(device_id, expect_key, expect_key_sha256)
        if self.get(device_id).revoked:
            raise RegistryError("device %s is revoked; its key is not rotated (a revoked id stays revoked: "
                                "provision the board under a new id)" % device_id, reason="revoked",
                                device_id=device_id)
        if key is None:
            new_key = generate_key()
        else:
            new_key = key
            _check_key(device_id, new_key)
            self._refuse_shared_key(device_id, new_key)
        # The row is updated in a transaction committed after the key file is replaced (atomically):
        # interrupted, the device keeps a whole key file, old or new, and its row; failed (COMMIT
        # refused, disk error), the old key file is put back.

        def change() -> None:
            if expecting:
                # Under BEGIN EXCLUSIVE: every key change holds it, so the file read is the key now.
                try:
                    held: bytes | None = read_key_file(self.key_path(device_id), regular_only=True)
                except RegistryError:
                    held = None
                row = self._conn.execute("SELECT revoked, retired FROM devices WHERE id=?", (device_id,)).fetchone()
                if row is None or any(row) or held is None or not _holds(held, expect_key, expect_key_sha256):
                    raise RegistryError("device %s changed meanwhile (another take-over, a key rotation or a "
                                        "revocation); its key is left as it is" % device_id, reason="conflict",
                                        device_id=device_id)
            self._update(device_id, "UPDATE devices SET key_version=key_version+1, updated_at=? WHERE id=?")

        self._commit_with_key(device_id, new_key, change, keep_previous=True,
                              what="rotate the key of device %s" % device_id)
        log.info("rotated the key of device %s", device_id)
        return self.key_path(device_id)

    def _commit_with_key(self, device_id: str, key: bytes, change: Callable[[], None], *, keep_previous: bool,
                         what: str) -> None:
        """Run ``change`` (SQL) and write the key file of ``device_id`` in one transaction, committed only
        after the key file is in place.

        ``BEGIN EXCLUSIVE`` takes the write lock up front: in SQLite's rollback-journal mode (the
        registry's) a reader's SHARED lock would otherwise make the COMMIT wait, then fail, after the key
        file was already replaced. If anything fails once the key file was touched, the previous key
        file is put back (``keep_previous``) or the new one removed, so the registry and its key files
        never disagree: a gateway must not switch to a key the board does not hold.

        Raises:
            RegistryError: ``storage`` (SQLite or file error; nothing changed), ``storage_partial`` (and the
                previous key file could not be put back), or what ``change`` raises.
        """
        path = self.key_path(device_id)
        touched = False
        previous: bytes | None = None
        try:
            with _storage(self.path, what, device_id):
                self._conn.execute("BEGIN EXCLUSIVE")
                change()
                previous = _read_if_present(path) if keep_previous else None
                touched = True
                _write_private(path, key.hex().encode("ascii") + b"\n")
                self._conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if touched:
                self._restore_key(path, previous, device_id, exc)
            raise
        finally:
            self._key_cache.pop(device_id, None)

    def _restore_key(self, path: Path, previous: bytes | None, device_id: str, cause: BaseException) -> None:
        """Put back the key file ``previous`` (None: remove the one written) after a failed change."""
        try:
            if previous is not None:
                _write_private(path, previous)
            elif path.exists():
                path.unlink()
                fsync_dir(path.parent)
        except OSError as exc:
            log.error("could not put back the key file of device %s after a failed change: %s", device_id, exc)
            if not isinstance(cause, Exception):
                return  # an interruption says so itself
            raise RegistryError(
                "%s; and the previous key file could not be put back (%s): %s may hold a key the registry row does "
                "not record" % (cause, exc.strerror, path), reason="storage_partial", device_id=device_id) from cause

    def key(self, device_id: str) -> bytes:
        """Return the device key (re-read when its file changes).

        Raises:
            RegistryError: ``unknown_device`` or ``bad_key``.
        """
        path = self.key_path(device_id)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError as exc:
            raise RegistryError("no key stored for device %s" % device_id, reason="unknown_device",
                                device_id=device_id) from exc
        cached = self._key_cache.get(device_id)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        if self._secure_keys and self.key_mode_problem(device_id) is not None:
            # A key file replaced by hand while the gateway runs: secured as at open (never through
            # a symlink, never another user's file). chmod leaves the mtime, so this runs once per
            # new file.
            self._warn_secured([_secure_key_file_outcome(path)])
        key = read_key_file(path, regular_only=True)
        self._key_cache[device_id] = (mtime, key)
        return key

    def key_problem(self, device_id: str) -> str | None:
        """Return what is wrong with the stored key of ``device_id``, or None when it is usable.

        The text names the key file, never its content. A device whose key is unusable cannot
        authenticate a single frame.
        """
        problem = _key_file_problem(self.key_path(device_id))
        if problem is not None:
            return problem
        try:
            self.key(device_id)
        except RegistryError as exc:
            return str(exc)
        return None

    def key_mode_problem(self, device_id: str) -> str | None:
        """Return why the key file of ``device_id`` is too open (group or others may read or write
        it, or its target when it is a symlink), or None when it is not (or is absent or not a
        regular file: :meth:`key_problem` says so).

        Opened with ``create`` (the gateway) such files are set to 0600, but never through a
        symlink nor another user's file; this tells a read-only look (``devices show``) what the
        gateway would fix or what to fix by hand.
        """
        return _key_mode_problem(self.key_path(device_id))

    def _refuse_shared_key(self, device_id: str, key: bytes) -> None:
        """Raise ``bad_key`` when another registered device (revoked ones too) already has ``key``.

        Per-device keys are what lets one device be revoked without the others; the key files
        are the truth (they can be replaced by hand), so they are compared, through the cache.
        """
        with _storage(self.path, "read the devices", device_id):
            others = self._conn.execute("SELECT id FROM devices WHERE id != ? ORDER BY id", (device_id,)).fetchall()
        for (other,) in others:
            try:
                theirs = self.key(str(other))
            except RegistryError:
                continue  # a missing or unreadable key file holds no key to share
            if hmac.compare_digest(theirs, key):
                raise RegistryError("device %s already has this key; every device needs its own key" % other,
                                    reason="bad_key", device_id=device_id, field="key")

    def _rollback(self) -> None:
        """Roll back the open transaction (if any), quietly: the caller re-raises what stopped it."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the connection is gone; SQLite rolls back on the next open
            log.debug("rollback failed: %s", exc)

    def _update(self, device_id: str, sql: str) -> None:
        cur = self._conn.execute(sql, (time.time(), device_id))
        if cur.rowcount == 0:
            raise RegistryError("no device %s in the registry" % device_id, reason="unknown_device", device_id=device_id)

    def _record(self, row: tuple[Any, ...]) -> DeviceRecord:
        dev = str(row[0])
        return DeviceRecord(
            id=dev, kind=str(row[1]), zone=str(row[2]), lat=str(row[3]), lon=str(row[4]), revoked=bool(row[5]),
            key_version=int(row[6]), created_at=float(row[7]), updated_at=float(row[8]), key_path=self.key_path(dev),
            retired=bool(row[9]), removing=row[9] == RETIRED_FOR_REMOVAL,
        )
