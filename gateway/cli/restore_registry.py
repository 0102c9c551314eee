"""The registry side of ``civicedge gateway restore``: reading the live registry, carrying its changes over to the
backup's copy, and holding it unchanged through the swap.

A change is carried over only when the live record is newer than the backup's (``updated_at``, for keys also
``key_version``): restoring an older backup first and a newer one next (a new host) must not put the older
backup's state back over the newer one's. Revocations are the exception: a revoked id stays revoked.

``devices`` commands write the registry with SQLite's write lock (key changes in ``BEGIN EXCLUSIVE``, the key
file written before the COMMIT), so :class:`LiveLock` holding ``BEGIN EXCLUSIVE`` on the live ``devices.sqlite``
keeps every writer out; a fingerprint of its rows and key files says whether anything changed since it was read.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.errors import RegistryError
from gateway.registry import Registry
from gateway.registry.devices import DeviceRecord, same_place

Current = dict[str, tuple[DeviceRecord, "bytes | None"]]
DB = "devices.sqlite"
BUSY_MS = 10_000


def manifest_time(value: Any) -> float | None:
    """The manifest's ``created_at`` (``%Y-%m-%dT%H:%M:%SZ``) as a Unix time, None when absent or malformed."""
    try:
        return float(calendar.timegm(time.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def read_current(registry_dir: Path) -> tuple[Current | None, str | None]:
    """Every device of the live registry with its key (None: unreadable), or (None, why) without a readable one."""
    if not (registry_dir / DB).exists():
        return None, "no current registry at %s" % registry_dir
    try:
        reg = Registry(registry_dir, create=False)
    except RegistryError as exc:
        return None, "the current registry cannot be read (%s)" % exc
    try:
        devices: Current = {}
        for rec in reg.list():
            try:
                key: bytes | None = reg.key(rec.id)
            except RegistryError:
                key = None
            devices[rec.id] = (rec, key)
        return devices, None
    except RegistryError as exc:
        return None, "the current registry cannot be read (%s)" % exc
    finally:
        reg.close()


def fingerprint(registry_dir: Path, conn: sqlite3.Connection | None = None) -> str:
    """SHA-256 over the live registry's rows and key files (name, size, mtime, content); "absent" without one.

    ``PRAGMA data_version`` only tells a connection about other connections' commits since *it* last read,
    so it cannot compare two moments seen by two connections: the rows themselves are compared.
    """
    db = registry_dir / DB
    if not db.exists():
        return "absent"
    h = hashlib.sha256()
    own = conn is None
    c = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, isolation_level=None) if conn is None else conn
    try:
        if own:
            c.execute("PRAGMA busy_timeout=%d" % BUSY_MS)
        for row in c.execute("SELECT * FROM devices ORDER BY id"):
            h.update(repr(row).encode("utf-8"))
    except sqlite3.Error as exc:
        h.update(("unreadable %s" % exc).encode("utf-8"))
    finally:
        if own:
            c.close()
    keys = registry_dir / "keys"
    try:
        names = sorted(os.listdir(keys))
    except OSError:
        names = []
    for name in names:
        p = keys / name
        try:
            st = os.lstat(p)
            data = p.read_bytes() if os.path.isfile(p) else b""
        except OSError:
            continue
        h.update(("%s %d %d " % (name, st.st_size, st.st_mtime_ns)).encode("utf-8") + hashlib.sha256(data).digest())
    return h.hexdigest()


class LiveLock:
    """``BEGIN EXCLUSIVE`` on the live ``devices.sqlite``: no ``devices`` command writes it while held."""

    def __init__(self, registry_dir: Path) -> None:
        self.registry_dir = registry_dir
        self.conn: sqlite3.Connection | None = None

    def acquire(self) -> None:
        """Take the lock (waits up to 10 s for a writer to finish); nothing when there is no live registry.

        Raises:
            RegistryError: ``storage`` when the registry stays locked by another process.
        """
        db = self.registry_dir / DB
        if not db.exists():
            return
        conn = sqlite3.connect(str(db), isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=%d" % BUSY_MS)
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.Error as exc:
            conn.close()
            raise RegistryError("cannot lock the current registry %s against changes during the swap (%s): a "
                                "`devices` command or the admin API may be writing it; nothing was changed, run the "
                                "restore again" % (db, exc), reason="storage") from exc
        self.conn = conn

    def fingerprint(self) -> str:
        """The live registry's fingerprint, read under the lock."""
        return fingerprint(self.registry_dir, self.conn)

    def release(self) -> None:
        """End the transaction (nothing was written in it) and close."""
        if self.conn is not None:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.conn.close()
            self.conn = None


def carry_over(restored: Registry, current: Current,
               backup_created: float | None = None) -> tuple[list[str], list[str]]:
    """Apply to the backup's registry ``restored`` every change the live registry holds that is newer than it.

    Args:
        restored: the staged copy of the backup's registry.
        current: the live registry's devices and keys (:func:`read_current`).
        backup_created: when the backup was made (its manifest), to tell a device added since from one
            that the live registry has and the backup lost.

    Returns:
        (one line per carried change, warnings).

    Raises:
        RegistryError: a change could not be made (nothing of the restore is in place yet).
    """
    carried: list[str] = []
    warnings: list[str] = []
    for dev, (cur, ckey) in sorted(current.items()):
        old = restored.lookup(dev)
        if old is None:
            if ckey is None:
                warnings.append("device %s was added since the backup but its current key cannot be read: not "
                                "carried over (enrol it again)" % dev)
                continue
            restored.add(dev, kind=cur.kind, zone=cur.zone, lat=cur.lat, lon=cur.lon, key=ckey)
            if _retired(cur) and not cur.revoked:
                restored.retire(dev)
            if cur.revoked:
                restored.revoke(dev)
            state = " (revoked)" if cur.revoked else " (retired)" if _retired(cur) else ""
            since = ("added since the backup" if backup_created is None or cur.created_at > backup_created
                     else "in the current registry (registered %s) but not in the backup" % _utc(cur.created_at))
            carried.append("device %s: %s: kept, with its current key%s (registered and key version start again "
                           "now: was registered %s, key version %d)" % (dev, since, state, _utc(cur.created_at),
                                                                        cur.key_version))
            continue
        carried += _changes(restored, old, cur, ckey, warnings)
    for rec in restored.list():
        if rec.id not in current:
            if rec.removing and not rec.revoked:  # a removal's temporary mark (see _retired)
                restored.reinstate(rec.id)
            warnings.append("device %s is in the backup but not in the current registry: restored from the backup%s "
                            "(check it: civicedge gateway devices show %s)"
                            % (rec.id, ", not retired (it was retired for a removal then)" if rec.removing else "",
                               rec.id))
    return carried, warnings


def _retired(rec: DeviceRecord) -> bool:
    """Whether ``rec`` is retired for good: retired for a removal (``removing``) is a removal's temporary mark,
    which a restore does not carry (the removal that set it is not running on the restored registry: kept, it
    would refuse the device's frames for good)."""
    return rec.retired and not rec.removing


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _older(dev: str, what: str, cur: DeviceRecord, old: DeviceRecord) -> str:
    return ("device %s: %s, but the current registry's record (changed %s) is older than the backup's (changed %s): "
            "kept the backup's (the current registry looks older than the backup for this device)"
            % (dev, what, _utc(cur.updated_at), _utc(old.updated_at)))


def _changes(restored: Registry, old: DeviceRecord, cur: DeviceRecord, ckey: bytes | None,
             warnings: list[str]) -> list[str]:
    """Carry the newer changes of one device (in the order the API allows: a revoked device changes no more)."""
    dev, out = cur.id, list[str]()
    if old.revoked:
        if not cur.revoked:
            warnings.append("device %s is revoked in the backup but not in the current registry: kept revoked (a "
                            "revoked id stays revoked)" % dev)
        return out
    newer = cur.updated_at > old.updated_at
    try:
        bkey: bytes | None = restored.key(dev)
    except RegistryError:
        bkey = None
    if ckey is None:
        warnings.append("the current key of device %s cannot be read: the backup's key is restored" % dev)
    elif bkey != ckey:
        if cur.key_version > old.key_version or (cur.key_version == old.key_version and newer):
            restored.rotate_key(dev, key=ckey)
            out.append("device %s: key rotated since the backup: kept the current key (the board holds it)" % dev)
        else:
            warnings.append("device %s: key differs, but the current registry's key version %d is older than the "
                            "backup's %d: kept the backup's key (the current registry looks older than the backup "
                            "for this device)" % (dev, cur.key_version, old.key_version))
    if cur.kind != old.kind:
        warnings.append("device %s is a %s now and a %s in the backup: kept the backup's kind" % (dev, cur.kind, old.kind))
    placed = cur.zone != old.zone or not same_place((cur.lat, cur.lon), (old.lat, old.lon))
    if not cur.revoked and placed:
        if newer:
            restored.move(dev, lat=cur.lat, lon=cur.lon, zone=cur.zone)
            out.append("device %s: moved since the backup: kept zone %s at %s,%s" % (dev, cur.zone, cur.lat, cur.lon))
        else:
            warnings.append(_older(dev, "its place differs (zone %s at %s,%s now, zone %s at %s,%s in the backup)"
                                   % (cur.zone, cur.lat, cur.lon, old.zone, old.lat, old.lon), cur, old))
    if old.removing and not cur.revoked:  # the backup was taken during a removal's wait
        if _retired(cur):
            restored.retire(dev)
            out.append("device %s: retired for a removal in the backup, retired now: kept retired" % dev)
        else:
            restored.reinstate(dev)
            out.append("device %s: retired for a removal in the backup (a removal's temporary mark): restored as "
                       "not retired%s" % (dev, " (it is retired for a removal now too: remove it again once the "
                                               "gateway runs)" if cur.removing else ""))
    elif _retired(cur) != old.retired and not cur.revoked:
        if not newer:
            state = ("retired in the backup and not now" if old.retired else "not retired in the backup and retired now")
            warnings.append(_older(dev, "is " + state, cur, old))
        elif _retired(cur):
            restored.retire(dev)
            out.append("device %s: retired since the backup: kept retired" % dev)
        else:
            restored.reinstate(dev)
            out.append("device %s: reinstated since the backup: kept reinstated" % dev)
    if cur.revoked:
        restored.revoke(dev)
        note = "" if newer else " (its current record is older than the backup's, but a revoked id stays revoked)"
        out.append("device %s: revoked since the backup: kept revoked (its frames stay refused)%s" % (dev, note))
    return out
