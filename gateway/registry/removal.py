"""The steps of :meth:`gateway.registry.devices.Registry.remove` after its checks: the refusal of a device
that was heard from, putting a removed row back, and deleting the key file of a removed device.

Each takes the registry's directory (for its messages) and its SQLite connection (autocommit, as the
registry opens it). Keys are never read, logged nor placed in a message: only the key file's path.
"""

from __future__ import annotations

import logging
import shlex
import sqlite3
from pathlib import Path
from typing import Any, Sequence

from gateway.errors import RegistryError
from gateway.private_dirs import fsync_dir
from gateway.registry.records import _storage

log = logging.getLogger("gateway.registry.devices")  # the registry's logger: operators filter on it

#: Waited beyond a running gateway's batch wait (``[storage] batch_ms``) before a removal checks the store again:
#: for the commit of a report the gateway accepted just before the row went (milliseconds on a healthy disk; a
#: disk stalled longer is the limit docs/gateway.md names). The admin API's removal waits this
#: (:meth:`gateway.web.source.RegistryAdmin.remove`); ``devices remove`` waits as much beyond the registry cache.
SETTLE_MARGIN_S = 2.0


def heard_from_error(device_id: str, found: Sequence[str], *, meanwhile: bool) -> RegistryError:
    """The refusal (``heard_from``) of removing a device the report store holds something of (in the
    tables ``found``), pointing to retire and revoke; ``meanwhile``: found by the check after the row was
    deleted (it was put back)."""
    when = " while it was being removed (its registration is kept as it was)" if meanwhile else ""
    return RegistryError(
        "device %s was heard from%s: the report store holds rows of it (%s); only a device never heard from is "
        "removed, so that its reports and replay protection stay with a registered id. If its board left this "
        "gateway, retire it (civicedge gateway devices retire %s); if its key is compromised, revoke it "
        "(civicedge gateway devices revoke %s)" % (device_id, when, ", ".join(found), device_id, device_id),
        reason="heard_from", device_id=device_id)


def put_back(registry: Path, conn: sqlite3.Connection, device_id: str, names: Sequence[str],
             row: tuple[Any, ...], key_path: Path, cause: BaseException) -> None:
    """Insert the deleted ``row`` (columns ``names``) of ``device_id`` again after a removal stopped by
    ``cause``, unless the id was registered again meanwhile (that registration is kept).

    Raises:
        RegistryError: ``storage_partial`` (it could not be put back: the message names the key file,
            which was kept, and how to register the device again); nothing when ``cause`` is an
            interruption (KeyboardInterrupt: it says so itself; the ERROR line names the device).
    """
    try:
        with _storage(registry, "put back device %s" % device_id, device_id):
            conn.execute("INSERT OR IGNORE INTO devices (%s) VALUES (%s)"
                         % (", ".join(names), ", ".join("?" * len(names))), row)
    except RegistryError as exc:
        log.error("could not put back the registration of device %s after its removal was stopped: %s",
                  device_id, exc)
        if not isinstance(cause, Exception):
            return
        raise RegistryError(
            "%s; and its registration could not be put back (%s): register it again with its key file, which is "
            "kept (civicedge gateway devices add --id %s --key-file %s ...)"
            % (cause, exc, device_id, shlex.quote(str(key_path))),
            reason="storage_partial", device_id=device_id) from cause
    log.warning("registry %s: the removal of device %s was stopped (%s): its registration was put back",
                registry, device_id, type(cause).__name__ if not isinstance(cause, RegistryError)
                else cause.reason)


def delete_key_file(registry: Path, conn: sqlite3.Connection, device_id: str, key_path: Path) -> None:
    """Delete the key file of the removed ``device_id`` durably (its directory synced), under the write lock
    every key change takes (``BEGIN EXCLUSIVE``) and only while the id is still absent: an ``add`` of the
    same id since the row was deleted wrote a key file of its own, which stays. An absent file is no error.

    Raises:
        RegistryError: ``storage_partial``: the row is gone, the key file could not be deleted (the
            message names it and says to delete it by hand).
    """
    try:
        with _storage(registry, "delete the key file of device %s" % device_id, device_id):
            conn.execute("BEGIN EXCLUSIVE")
            try:
                if conn.execute("SELECT 1 FROM devices WHERE id=?", (device_id,)).fetchone() is None:
                    try:
                        key_path.unlink()
                    except FileNotFoundError:
                        pass
                    fsync_dir(key_path.parent)
            finally:
                _end(conn)
    except RegistryError as exc:
        raise RegistryError(
            "device %s was removed from the registry, but its key file could not be deleted: %s; delete it by hand "
            "(rm %s)" % (device_id, exc, shlex.quote(str(key_path))), reason="storage_partial",
            device_id=device_id) from exc


def _end(conn: sqlite3.Connection) -> None:
    """End the transaction that only held the write lock (nothing was written), quietly."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:  # the connection is gone; SQLite rolls back on the next open
        log.debug("rollback failed: %s", exc)
