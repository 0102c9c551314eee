"""The steps of :meth:`gateway.registry.devices.Registry.remove` after its first check: the mark that takes the
device out of service while the removal waits (``retired``), putting its flag back when the removal stops, the
refusal of a device that was heard from, and the final deletion of its row and key file together.

The device's row is never deleted before the end: while the removal waits for a running gateway to commit what
it accepted, the row stays, retired for the removal (``retired`` =
:data:`gateway.registry.records.RETIRED_FOR_REMOVAL`: frames of a retired device are refused, never
acknowledged: its board keeps them). Only that value, as this removal set it, is put back or deleted
(another removal's mark after a reinstate is left to that removal): an operator's retire meanwhile makes the
device retired for good (``retired`` = 1) and stops the removal. A removal killed meanwhile
(SIGKILL, a power cut) leaves a visible retired device with its key file, never a lost row: run the removal
again, or reinstate the device.

Each step takes the registry's directory (for its messages) and its SQLite connection (autocommit, as the
registry opens it). Keys are never read, logged nor placed in a message: only the key file's path.
"""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from gateway.errors import RegistryError
from gateway.private_dirs import fsync_dir
from gateway.registry.records import RETIRED, RETIRED_FOR_REMOVAL, _storage

log = logging.getLogger("gateway.registry.devices")  # the registry's logger: operators filter on it

#: Waited beyond a running gateway's batch wait (``[storage] batch_ms``) before a removal checks the store again:
#: for the commit of a report the gateway accepted just before the device was retired (milliseconds on a healthy
#: disk; a disk stalled longer is the limit docs/gateway.md names). ``devices remove`` waits as much beyond the
#: registry cache; the admin API's removal waits this only without the gateway's ingest to wait on
#: (:meth:`gateway.web.source.RegistryAdmin.remove` with no ``ingest_settled``: an app not wired to an ingest).
SETTLE_MARGIN_S = 2.0


def cli_advice(device_id: str) -> str:
    """What to do instead with a device heard from, in the command line's words."""
    return ("If its board left this gateway, retire it (civicedge gateway devices retire %s); if its key is "
            "compromised, revoke it (civicedge gateway devices revoke %s)" % (device_id, device_id))


def api_advice(device_id: str) -> str:
    """What to do instead with a device heard from, in the admin API's words."""
    return ("If its board left this gateway, retire it (POST /api/admin/devices/%s/retire); if its key is "
            "compromised, revoke it (POST /api/admin/devices/%s/revoke)" % (device_id, device_id))


def keyless_advice(device_id: str, problem: str) -> str:
    """What a device taken back without a usable key (``problem``: what is wrong with its key file, naming the
    file, never a key) means and what to do, in both the command line's and the admin API's words."""
    return ("its key is not usable (%s): none of its frames can be verified (registry_unreadable) until it has one. "
            "If a removal of it was cut off after deleting its key file, remove it again (civicedge gateway devices "
            "remove -- %s, or DELETE /api/admin/devices/%s); else put its key file back (from a backup of the "
            "registry), or give its board a new key (civicedge provision ... --force --take-over, docs/field.md)"
            % (problem, shlex.quote(device_id), device_id))


def heard_from_error(device_id: str, found: Sequence[str], *, outcome: str | None = None,
                     advice: Callable[[str], str] = cli_advice) -> RegistryError:
    """The refusal (``heard_from``) of removing a device the report store holds something of (in the
    tables ``found``), with ``advice`` (retire, revoke); ``outcome``: found by the check after the wait, and
    what its registration is now (said in the message)."""
    when = " while it was being removed (%s)" % outcome if outcome is not None else ""
    return RegistryError(
        "device %s was heard from%s: the report store holds rows of it (%s); only a device never heard from is "
        "removed, so that its reports and replay protection stay with a registered id. %s"
        % (device_id, when, ", ".join(found), advice(device_id)), reason="heard_from", device_id=device_id)


@dataclass(frozen=True)
class Mark:
    """What :func:`mark_removing` changed: ``set_retired`` (the device was not retired before and is now retired
    for its removal; False: it was retired, and stays so) at ``stamp`` (its ``updated_at`` since, which
    :func:`delete_device` requires of the row; ``updated_before`` before, the same when ``set_retired`` is False).
    ``content``: the row's kind, zone, location and key version then (:func:`put_back` tells a row changed by a
    move or a key rotation, still under this mark, from one marked again by another removal, which keeps them)."""

    set_retired: bool
    stamp: float
    updated_before: float
    content: tuple[object, ...] = ()


#: The columns of :attr:`Mark.content`.
_CONTENT = "kind, zone, lat, lon, key_version"


def mark_removing(registry: Path, conn: sqlite3.Connection, device_id: str) -> Mark:
    """Retire ``device_id`` for the time of its removal (``retired`` = :data:`RETIRED_FOR_REMOVAL`, in one
    ``BEGIN EXCLUSIVE`` transaction), unless it is retired already: a running gateway refuses its frames from
    then on. The row is updated also when it is retired already (its values unchanged): the update moves the
    connection's change count, which empties the cache of a verifier reading this registry instance at once
    (a device retired by another process a moment ago may still be cached as not retired).

    Raises:
        RegistryError: ``unknown_device`` or ``revoked`` (by another process since the first check; nothing
            changed), ``storage`` (SQLite error; nothing changed).
    """
    with _storage(registry, "retire device %s for its removal" % device_id, device_id):
        conn.execute("BEGIN EXCLUSIVE")
        try:
            row = conn.execute("SELECT revoked, retired, updated_at, %s FROM devices WHERE id=?" % _CONTENT,
                               (device_id,)).fetchone()
            if row is None:
                raise RegistryError("no device %s in the registry" % device_id, reason="unknown_device",
                                    device_id=device_id)
            if row[0]:
                raise RegistryError("device %s is revoked; it is not removed (a revoked id stays revoked)"
                                    % device_id, reason="revoked", device_id=device_id)
            if not row[1]:
                stamp = time.time()
                conn.execute("UPDATE devices SET retired=?, updated_at=? WHERE id=?",
                             (RETIRED_FOR_REMOVAL, stamp, device_id))
            else:  # no value changes; see the docstring
                stamp = float(row[2])
                conn.execute("UPDATE devices SET retired=retired WHERE id=?", (device_id,))
            conn.execute("COMMIT")
        finally:
            _end(conn)
    if not row[1]:
        log.info("device %s is retired while it is being removed (if the removal is cut off, it stays retired: "
                 "remove it again, or reinstate it)", device_id)
    return Mark(set_retired=not row[1], stamp=stamp, updated_before=float(row[2]), content=tuple(row[3:]))


def put_back(registry: Path, conn: sqlite3.Connection, device_id: str, mark: Mark, *, why: str,
             interrupted: bool = False) -> str:
    """Undo :func:`mark_removing` after a removal stopped (``why``: by what, for the messages): the device
    is no longer retired unless it was before, or it is no longer retired for the removal (another process
    or request retired it for good, reinstated or removed it meanwhile), or it is retired for a removal that is
    not this one's: its row was changed since the mark with its kind, zone, location and key version as they
    were (it was reinstated and marked again by another removal, whose mark this one must not clear: that
    removal would then refuse as ``reinstated`` while the device took frames again; a row moved or re-keyed
    meanwhile is still under this removal's mark and is put back). Returns what its registration is now, in
    words.

    Raises:
        RegistryError: ``storage_partial``: its flag could not be put back (the device stays retired; the
            message says to reinstate it); not raised when ``interrupted`` (Ctrl-C, SIGTERM: the
            interruption says so itself; the ERROR line names the device).
    """
    if not mark.set_retired:
        return "it stays registered, retired as it was before"
    try:
        with _storage(registry, "put back device %s" % device_id, device_id):
            # Only the removal's own mark, unchanged since (its updated_at goes back too): a retire meanwhile
            # (RETIRED) is the operator's and stays; another removal's mark (see the docstring) stays.
            cur = conn.execute("UPDATE devices SET retired=0, updated_at=? WHERE id=? AND retired=? AND updated_at=?",
                               (mark.updated_before, device_id, RETIRED_FOR_REMOVAL, mark.stamp))
            outcome = "its registration is kept as it was"
            if not cur.rowcount:
                now = conn.execute("SELECT retired, updated_at, %s FROM devices WHERE id=?" % _CONTENT,
                                   (device_id,)).fetchone()
                if now is None:
                    outcome = "another process removed it meanwhile"
                elif now[0] == RETIRED:
                    outcome = "it was retired meanwhile (by another request or process); it stays retired"
                elif now[0] != RETIRED_FOR_REMOVAL:
                    outcome = "another process reinstated it meanwhile; it stays registered"
                elif tuple(now[2:]) != mark.content:  # moved or re-keyed under this mark: put back (compare-and-set)
                    cur = conn.execute("UPDATE devices SET retired=0 WHERE id=? AND retired=? AND updated_at=?",
                                       (device_id, RETIRED_FOR_REMOVAL, now[1]))
                    outcome = ("it was changed meanwhile (moved or its key rotated); it is no longer retired"
                               if cur.rowcount else "it was changed again while being put back; it stays as "
                               "that change left it")
                else:
                    outcome = ("it was reinstated and retired for another removal meanwhile; it stays retired for "
                               "that removal (if none is running, remove it again, or reinstate it)")
    except RegistryError as exc:
        log.error("could not put back device %s after its removal was stopped (%s): it stays retired: %s",
                  device_id, why, exc)
        if interrupted:
            return "it stays retired"
        raise RegistryError(
            "%s; and its registration could not be put back as it was (%s): it stays registered but retired, with "
            "its key file; reinstate it (civicedge gateway devices reinstate %s, or POST "
            "/api/admin/devices/%s/reinstate)" % (why, exc, device_id, device_id),
            reason="storage_partial", device_id=device_id) from exc
    log.warning("registry %s: the removal of device %s was stopped (%s): %s", registry, device_id, why, outcome)
    return outcome


def delete_device(registry: Path, conn: sqlite3.Connection, device_id: str, key_path: Callable[[str], Path],
                  mark: Mark) -> None:
    """Delete the row of ``device_id`` and its key file together, under one ``BEGIN EXCLUSIVE`` (the write lock
    every key change takes): the row is deleted, the key file unlinked and its directory synced, then the
    deletion committed. Only while the row is still what :func:`mark_removing` left (``mark``): there, not
    revoked, retired (for the removal when the mark set it), and not changed since (its ``updated_at`` is the
    mark's stamp: a device reinstated and marked again by another removal meanwhile, or one retired before this
    removal and reinstated and retired again, may have had frames accepted that the removal's wait did not
    cover; one this removal marked and that was reinstated and retired again is ``retired``). A key file that is
    also the key file of a registered id differing only in case (one file on a case-insensitive filesystem)
    stays. An absent key file is no error.

    Raises:
        RegistryError: ``unknown_device`` (removed by another process meanwhile), ``revoked``, ``reinstated`` or
            ``retired`` (by another process or request meanwhile, also after a reinstate; the row stays as that
            process left it), ``changed`` (the row was changed meanwhile: moved or its key rotated, which the
            caller puts back; or reinstated and marked by another removal, whose mark stays; or, retired before
            this removal, reinstated and retired again, which stays retired), ``storage`` (SQLite error)
            or ``key_file`` (the key file could not be deleted): nothing deleted, the device still retired (the
            caller puts it back); ``storage_partial`` (the key file is deleted but the row's deletion could not be
            committed: the device stays registered and retired, without its key file; the message says to remove it
            again).
    """
    path = key_path(device_id)
    with _storage(registry, "remove device %s" % device_id, device_id):
        conn.execute("BEGIN EXCLUSIVE")
        try:
            row = conn.execute("SELECT revoked, retired, updated_at FROM devices WHERE id=?",
                               (device_id,)).fetchone()
            if row is None:
                raise RegistryError("device %s was removed by another process while this removal waited" % device_id,
                                    reason="unknown_device", device_id=device_id)
            if row[0]:
                raise RegistryError("device %s was revoked by another process while it was being removed; it is not "
                                    "removed (a revoked id stays revoked)" % device_id, reason="revoked",
                                    device_id=device_id)
            if not row[1]:
                raise RegistryError("device %s was reinstated by another process while it was being removed; it is "
                                    "not removed" % device_id, reason="reinstated", device_id=device_id)
            if mark.set_retired and row[1] != RETIRED_FOR_REMOVAL:
                raise RegistryError("device %s was retired by another request or process while it was being "
                                    "removed; it is not removed and stays retired" % device_id, reason="retired",
                                    device_id=device_id)
            if float(row[2]) != mark.stamp:
                raise RegistryError("device %s was changed by another request or process while it was being removed "
                                    "(moved, its key rotated, or reinstated and retired again for another removal "
                                    "or a retire); it is not removed: remove it again" % device_id,
                                    reason="changed", device_id=device_id)
            twins = [str(r[0]) for r in conn.execute("SELECT id FROM devices WHERE id = ? COLLATE NOCASE AND id != ?",
                                                     (device_id, device_id))]
            conn.execute("DELETE FROM devices WHERE id=?", (device_id,))
            shared = [t for t in twins if _same_file(path, key_path(t))]
            if shared:
                log.warning("kept key file %s of removed device %s: it is also the key file of device %s (ids that "
                            "differ only in case share one file on this filesystem)", path, device_id, shared[0])
            else:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise RegistryError("device %s is not removed: its key file %s could not be deleted: %s"
                                        % (device_id, path, exc.strerror or exc), reason="key_file",
                                        device_id=device_id) from exc
                try:
                    fsync_dir(path.parent)
                except OSError as exc:  # the file is unlinked: the removal goes on; only its durability is unsure
                    log.warning("could not sync %s after deleting the key file of device %s: %s", path.parent,
                                device_id, exc)
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise RegistryError(
                    "the key file of device %s is deleted, but the deletion of its registry row could not be "
                    "committed (%s): it stays registered and retired, without its key; remove it again "
                    "(civicedge gateway devices remove -- %s, or DELETE /api/admin/devices/%s)"
                    % (device_id, exc, shlex.quote(device_id), device_id),
                    reason="storage_partial", device_id=device_id) from exc
        finally:
            _end(conn)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one existing file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _end(conn: sqlite3.Connection) -> None:
    """Roll back the transaction if it is still open (it failed before its COMMIT), quietly."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:  # the connection is gone; SQLite rolls back on the next open
        log.debug("rollback failed: %s", exc)
