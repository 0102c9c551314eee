"""Refuse to start with no device registry when the report store already knows devices.

A registry directory moved away (or lost) while the store stayed: the start would create an empty registry,
and every frame of the devices the store holds reports and ACK floors of would be refused as from an
unknown device (their keys are gone with the registry). Both ``gateway run`` (before the registry is
created) and ``run --check`` refuse it, with the number of devices and what to do.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from pathlib import Path

from gateway.errors import RegistryError, StorageError
from gateway.storage.sqlite_uri import open_for_check
from gateway.storage.store_files import real_store_path, store_writer
from gateway.storage.store_kind import store_kind

REGISTRY_DB = "devices.sqlite"


def known_devices(path: Path) -> int:
    """How many devices the report store at ``path`` has reports or an ACK floor of; 0 for no store or a
    database without those tables.

    Read-only and leaving nothing beside the file (:func:`gateway.storage.sqlite_uri.open_for_check`):
    call it before this process opens the store itself.

    Raises:
        StorageError: the store cannot be read: first as the store's own open would refuse it
            (:func:`gateway.storage.store_kind.store_kind`: ``open_failed``, ``not_a_store``, ``corrupt``),
            else reason ``read_failed``. A store that cannot be read is no store without devices: the empty
            registry a start would create would then disable this check for good.
    """
    real = real_store_path(path)
    if not real.is_file():
        return 0
    running = store_writer(path) is not None
    try:
        conn = open_for_check(real, running=running)
        try:
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            parts = ["SELECT device FROM %s" % t for t in ("reports", "ack_floor") if t in tables]
            if not parts:
                return 0
            return int(conn.execute("SELECT COUNT(*) FROM (%s)" % " UNION ".join(parts)).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        store_kind(real, running=running)  # the refusal the store's open would give, when it finds one
        raise StorageError("cannot read report store %s to count the devices it knows, with no device registry "
                           "there yet: %s; a start would create an empty registry, which refuses every frame of "
                           "those devices; fix the store first (civicedge gateway run --check says what is wrong)"
                           % (path, exc), reason="read_failed") from exc


def check_registry_present(registry_dir: Path, store: Path, config: Path | None) -> None:
    """Refuse a missing registry (no ``devices.sqlite`` in ``registry_dir``) when the store knows devices.

    ``config``: the config file, named in the commands of the message (None: built-in defaults).

    Raises:
        RegistryError: reason ``registry_missing``, naming how many devices the store knows, the restore of
            the registry from a ``civicedge gateway backup`` directory, and how to start over on purpose.
    """
    if (registry_dir / REGISTRY_DB).exists() or (registry_dir / REGISTRY_DB).is_symlink():
        return
    devices = known_devices(store)
    if not devices:
        return  # a first start: the registry is created empty
    q = shlex.quote
    where = registry_dir
    if registry_dir.is_symlink() and not registry_dir.exists():
        # a dangling link: mkdir and mv -T onto the link itself fail ("File exists") or do nothing; the
        # commands go to where it points (SQLite and the registry follow it there too)
        where = Path(os.path.realpath(registry_dir))
    reg = q(str(where))
    # the store's directory exists (the store is in it): only the registry's own is made, the user's and 0700
    # (a dangling link's target may lack its parents too: a card not mounted, where -p makes them)
    mkdir = "" if where.is_dir() else "mkdir %s-m 0700 %s && " % ("" if where == registry_dir else "-p ", reg)
    cfg = " --config %s" % q(str(config.resolve())) if config is not None else ""
    raise RegistryError(
        "device registry %s is missing (no %s), but the report store %s holds reports or ACK floors of %d "
        "device(s): started without it, the gateway would create an empty registry and refuse every frame of "
        "those devices (unknown_device), their keys being gone with it.%s With the gateway stopped: if the registry "
        "directory was moved, move it back (mv -T -n /where/it/is %s); else restore it from the last backup (B, a "
        "civicedge gateway backup directory: %scp -a \"$B/%s\" \"$B/keys\" %s/; "
        "docs/gateway.md, Restoring a backup, step 3); only to start over on purpose without the devices' keys, "
        "register the devices anew, which creates the registry (civicedge gateway devices%s add --id ID --kind KIND "
        "--zone ZONE --location LAT,LON; each board then needs its new key), then start"
        % (registry_dir, REGISTRY_DB, store, devices,
           "" if where == registry_dir else " %s is a symlink to %s, which does not exist: if it is on a card or disk "
           "that is not mounted, mount it first; else the commands below go there (or remove the link: rm %s)."
           % (registry_dir, where, q(str(registry_dir))),
           reg, mkdir, REGISTRY_DB, reg, cfg),
        reason="registry_missing")
