"""The registry's records on disk: the ``devices`` table of ``devices.sqlite``, the files a registry
directory holds, :class:`DeviceRecord`, and how a failed SQLite call becomes a :class:`RegistryError`.

Layout of the registry directory (mode 0700)::

    devices.sqlite      metadata: id, kind, zone, lat, lon, revoked, key_version, timestamps, retired (0600)
    keys/<id>.key       the device's 32-byte key as 64 hex chars + newline (0600)
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gateway.errors import RegistryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    zone        TEXT NOT NULL,
    lat         TEXT NOT NULL,
    lon         TEXT NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    key_version INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    retired     INTEGER NOT NULL DEFAULT 0
);
"""
# Columns added after the first registries were made: (name, definition) for ``ALTER TABLE ... ADD COLUMN``,
# which fills the existing rows with the default. A registry without one is upgraded when the gateway (or
# ``devices add``) opens it, or by the first change that needs it; until then it reads as that default.
_ADDED_COLUMNS = (("retired", "INTEGER NOT NULL DEFAULT 0"),)
#: Values of the ``retired`` column. Any non-zero value is retired (frames refused): every reader that reads it
#: as a truth value (the verifier, the BLE link, the listings) refuses both. :data:`RETIRED`: by an operator
#: (``retire``); :data:`RETIRED_FOR_REMOVAL`: by a removal while it waits, the only value its put-back and its
#: final deletion act on, so an operator's retire meanwhile (which turns it into :data:`RETIRED`) is never undone.
RETIRED = 1
RETIRED_FOR_REMOVAL = 2


@dataclass(frozen=True)
class DeviceRecord:
    """A registered device (never carries its key).

    Attributes:
        id: device id. kind: a kind of the privacy policy (``streetlight``, ``bin``, ...). zone: city zone. lat, lon: decimal strings.
        revoked: frames from a revoked device are rejected. key_version: bumps on each rotation.
        key_path: file holding the key (0600).
        retired: the board left this gateway (moved to another one, or taken out of service): its frames
            are refused, never acknowledged, and it is not counted silent; its key and past reports are kept,
            and :meth:`Registry.reinstate` takes it back. Also true while :meth:`Registry.remove` waits (the
            column holds :data:`RETIRED_FOR_REMOVAL` then: see ``removing``).
        removing: retired only for a removal that is running or was cut off (column ``retired`` =
            :data:`RETIRED_FOR_REMOVAL`): refused as any retired device, but a refused removal puts it back,
            and :meth:`Registry.retire` makes it retired for good (:data:`RETIRED`).
    """

    id: str
    kind: str
    zone: str
    lat: str
    lon: str
    revoked: bool
    key_version: int
    created_at: float
    updated_at: float
    key_path: Path
    retired: bool = False
    removing: bool = False


_REGISTRY_FILES = frozenset({"keys", "devices.sqlite", "devices.sqlite-journal", "devices.sqlite-wal",
                             "devices.sqlite-shm"})
_COLUMNS = frozenset({"id", "kind", "zone", "lat", "lon", "revoked", "key_version", "created_at", "updated_at"})


def _check_place_of(path: Path, db: Path, create: bool) -> None:
    """Refuse a registry directory ``path`` that is a file, a missing registry (``create`` off), or a
    directory holding other files than a registry's (:data:`_REGISTRY_FILES`; ``db`` is its
    ``devices.sqlite``); OSError from the lookups is left to the caller (``Registry._check_place``)."""
    if path.exists() and not path.is_dir():
        raise RegistryError("registry path %s is not a directory" % path, reason="not_a_directory")
    if not create and not db.is_file():
        raise RegistryError("no registry at %s (`civicedge gateway devices add` creates one)" % path,
                            reason="no_registry")
    if create and not db.exists() and path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in _REGISTRY_FILES)
        if others:
            raise RegistryError(
                "%s is not a registry (no devices.sqlite) and holds other files (%s); give the registry's own "
                "directory (a gateway's is <data_dir>/registry) or a new one" % (path, ", ".join(others[:3])),
                reason="no_registry")


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of ``exc`` (extended codes share its low byte), None when unknown."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _locked(exc: sqlite3.Error) -> bool:
    """True when another connection held the registry past the busy timeout (worth a retry)."""
    code = _sqlite_code(exc)
    if code is None:  # raised without a code (not by SQLite itself): its message says it
        return "locked" in str(exc) or "busy" in str(exc)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _read_only(exc: sqlite3.Error) -> bool:
    """True when SQLite refused a write because the registry cannot be written: a read-only file, directory
    (no journal can be made next to it) or mount (``SQLITE_READONLY`` and its extended codes)."""
    return _sqlite_code(exc) == sqlite3.SQLITE_READONLY


def _disk_hint(exc: sqlite3.Error) -> str:
    """`` (...)`` naming the disk for a full disk or an I/O error; ``""`` for other errors."""
    if _sqlite_code(exc) not in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return ""
    return " (the disk holding the registry is full or failing; nothing was changed: free space or see the system log)"


#: What a read-only registry means, for the messages that meet one.
_READ_ONLY = ("the registry is read-only (a read-only mount, or no write permission on devices.sqlite or its "
              "directory for this user)")


def _storage_error(registry: Path, what: str, exc: sqlite3.Error, device_id: str | None) -> RegistryError:
    """The ``RegistryError`` for a failed SQLite call: ``permissions`` when the registry is read-only (no
    retry helps), ``storage`` otherwise, with the retry hint only for a lock."""
    if _read_only(exc):
        return RegistryError("cannot %s in registry %s: %s: %s; make it writable for this user"
                             % (what, registry, exc, _READ_ONLY), reason="permissions", device_id=device_id)
    hint = " (another process may hold the registry; retry)" if _locked(exc) else _disk_hint(exc)
    return RegistryError("cannot %s in registry %s: %s%s" % (what, registry, exc, hint), reason="storage",
                         device_id=device_id)


@contextmanager
def _storage(registry: Path, what: str, device_id: str | None = None) -> Iterator[None]:
    """Turn SQLite and file errors into ``RegistryError`` (reason ``storage``; ``permissions`` for a
    read-only registry): the CLI prints one ``error:`` line, the admin API answers 503."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _storage_error(registry, what, exc, device_id) from exc
    except OSError as exc:
        raise RegistryError("cannot %s in registry %s: %s" % (what, registry, exc), reason="storage",
                            device_id=device_id) from exc
