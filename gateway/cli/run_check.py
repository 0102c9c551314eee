"""What ``civicedge gateway run --check`` verifies beyond the config file itself.

``run`` refuses to start on a store that is not a database, a registry that is not one, an unreadable
``retention.json`` and an HTTP port another process holds; ``--check`` looks at each of them the way
start-up does, without creating, migrating or writing anything, so "config OK" means ``run`` starts.
(A stopped gateway's store is read ``immutable``, so not even SQLite's ``-wal``/``-shm`` are left
behind; a ``-wal`` with content, a killed gateway's, is read with it, its index kept in memory so
that no ``-shm`` is created either: :func:`gateway.storage.sqlite_uri.open_for_check`.)
A gateway already running on the same store (the usual case: edit the config, check it, restart the
service) is not an error for the check: each line says what belongs to it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any, Mapping

from gateway.config import GatewayConfig
from gateway.config.model import MqttConfig
from gateway.errors import RegistryError, StorageError, TransportError
from gateway.storage.lock_holders import flocks
from gateway.storage.sqlite_uri import open_for_check, read_only_uri, wal_has_content
from gateway.storage.restore_marker import check_no_restore_marker
from gateway.storage.store_devices import check_registry_present
from gateway.storage.store_files import check_store_free, real_store_path, store_writer
from gateway.storage.store_kind import ABSENT, EMPTY, store_kind
from gateway.storage.wal_index import check_wal_present
from gateway.web.hosts import host_port

RETENTION_FILE = "retention.json"

def store_holder(path: Path) -> str | None:
    """The pid of the gateway that holds the store at ``path`` (None when none does).

    Every other reason ``run`` would refuse the store before opening it (hard links, a symlinked
    ``-wal``/``-shm``, another user's files) is still an error here.

    Raises:
        StorageError: reason ``hard_linked``, ``symlinked`` or ``not_owned``.
    """
    try:
        check_store_free(path)
    except StorageError as exc:
        if exc.reason != "in_use":
            raise
        return store_writer(path) or "unknown"
    return None


def check_store_file(path: Path, *, running: bool = True) -> str:
    """Say what ``run`` will find at the store ``path``: the check the store itself makes before it
    changes anything (:func:`gateway.storage.store_kind.store_kind`), so both refuse alike.

    ``running`` False says no gateway holds the store (:func:`store_holder` is None): the file is
    then read without locks and without a ``-shm`` (with its ``-wal`` when that holds commits), so
    the check leaves nothing behind. True (the default, when unknown) opens it as any reader does.

    Raises:
        StorageError: reason ``corrupt`` when SQLite finds the file damaged, ``open_failed`` when it
            is not an SQLite database (or cannot be read), ``not_a_store`` when it is a database of
            something else: as :func:`gateway.storage.store_kind.store_kind` says.
    """
    kind = store_kind(path, running=running)  # the same check, and error, as the store's own open
    if kind == ABSENT:
        return "no store yet: created at start"
    if kind == EMPTY:
        return "empty database: initialised at start"
    return "readable"


def unchecked_wal_note(path: Path) -> str:
    """What ``run --check`` adds for a stopped store whose ``-wal`` holds pages ("" when it holds none)."""
    if not wal_has_content(path):
        return ""
    return (", with commits in %s-wal not yet in the main file (the last stop could not checkpoint them: a kill, a "
            "power cut, a full disk, a reader at close): start checkpoints them; until then keep both files together "
            "and back up both" % path.name)


def read_schema_version(path: Path) -> int | None:
    """The schema version of the store at ``path`` (None: no store yet), read without changing anything:
    no migration, and through :func:`gateway.storage.sqlite_uri.open_for_check`, so a stopped gateway's
    store is read with the commits its ``-wal`` holds and left without a new ``-wal``/``-shm``.

    Raises:
        StorageError: ``schema_too_new``, ``schema_unknown`` or ``read_failed``, as ``run`` would fail;
            and what :func:`store_holder` raises.
    """
    from gateway.storage.schema import SCHEMA_VERSION, stored_version, too_new

    if not path.exists():
        return None
    try:
        conn = open_for_check(path, running=store_holder(path) is not None)
    except sqlite3.Error as exc:
        raise StorageError("cannot read the report store %s: %s" % (path, exc), reason="read_failed") from exc
    try:
        found = stored_version(conn)
    except sqlite3.Error as exc:
        raise StorageError("cannot read the report store %s: %s" % (path, exc), reason="read_failed") from exc
    finally:
        conn.close()
    if found is not None and found > SCHEMA_VERSION:
        raise too_new(found, path)
    return found


def migration_note(config: GatewayConfig) -> str:
    """What ``run --check`` adds to the store line for a store of an older schema version ("" for a new
    store or one at the current version): the start migrates it one way, and first copies it next to
    itself (where, and the room it needs), unless ``[storage] backup_before_migration`` is false.

    Raises:
        StorageError: ``no_space_for_backup`` when the copy would not fit, ``no_space_for_migration``
            when the migration would not (without the copy; ``run`` refuses to start then), and what
            :func:`read_schema_version` raises.
    """
    from gateway.storage.schema import SCHEMA_VERSION
    from gateway.storage.schema_backup import (CONFIG_KEY, check_migration_space, megabytes, no_space_error,
                                               plan_backup)
    found = read_schema_version(config.storage.path)
    if found is None or found >= SCHEMA_VERSION:
        return ""
    note = ("; schema version %d: migrated to %d at start, one way (older gateways refuse it afterwards)"
            % (found, SCHEMA_VERSION))
    real = real_store_path(config.storage.path)
    writes = _migration_writes(config.storage.path, found)
    if not config.storage.backup_before_migration:
        check_migration_space(real, found, SCHEMA_VERSION, writes)
        return note + "; no copy of it is made first (%s = false): keep the backup made elsewhere" % CONFIG_KEY
    plan = plan_backup(real, found, writes)
    if not plan.enough:
        raise no_space_error(plan, SCHEMA_VERSION)
    free = "" if plan.free is None else ", %s free" % megabytes(plan.free)
    return note + "; a copy of the store as it is now is made first: %s (needs %s%s)" % (
        plan.target, megabytes(plan.need), free)


def _earlier_copies_note(path: Path) -> str:
    """``; <copy> ...`` for each copy made before an earlier migration (it is outside retention), or ""."""
    from gateway.storage.schema_backup import earlier_copies_note

    note = earlier_copies_note(real_store_path(path))
    return "; " + note if note else ""


def _migration_writes(path: Path, found: int) -> int:
    """What the migration from ``found`` writes to the store's -wal (gateway.storage.schema_backup.migration_bytes)."""
    from gateway.storage.schema_backup import migration_bytes

    try:
        conn = open_for_check(path, running=store_holder(path) is not None)
        try:
            return migration_bytes(conn, found)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError("cannot read the report store %s: %s" % (path, exc), reason="read_failed") from exc


def check_registry(registry_dir: Path) -> str:
    """Open ``devices.sqlite`` read-only and check it is a device registry, as ``run`` would open it.

    Also says what ``run`` will write to it: the columns an older registry lacks, added at start
    ("upgraded at start (adds column retired)"). A registry this user cannot write (a read-only mount,
    a file or directory without write permission) is a warning on the line: the gateway runs, but every
    registry change made through it (the admin API's enrol, revoke, retire, ...) fails; an older one
    is then used as it is, without the upgrade (nothing retired), as ``run`` does with a WARNING.

    Raises:
        RegistryError: reason ``not_a_directory``, ``corrupt`` (not a registry database) or
            ``permissions`` (cannot be read).
    """
    from gateway.registry.devices import _ADDED_COLUMNS, _COLUMNS  # the columns the registry checks at open

    if registry_dir.exists() and not registry_dir.is_dir():
        raise RegistryError("registry path %s is not a directory" % registry_dir, reason="not_a_directory")
    db = registry_dir / "devices.sqlite"
    if not db.exists():
        return "no registry yet: created at start"
    try:
        conn = sqlite3.connect(read_only_uri(db), uri=True)
        try:
            rows = conn.execute("PRAGMA table_info(devices)").fetchall()
            count = conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0] if rows else 0
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        raise RegistryError("cannot open registry %s: %s" % (registry_dir, exc), reason="permissions") from exc
    except sqlite3.Error as exc:
        raise RegistryError("%s is not a device registry database (corrupt or another kind of file): %s; restore "
                            "the registry directory from a backup" % (db, exc), reason="corrupt") from exc
    columns = {str(r[1]) for r in rows}
    missing = sorted(_COLUMNS - columns)
    if missing:
        what = "it has no devices table" if not rows else "its devices table lacks %s" % ", ".join(missing)
        raise RegistryError("%s is not a device registry database (%s)" % (db, what), reason="corrupt")
    added = [name for name, _ in _ADDED_COLUMNS if name not in columns]
    upgrade = "adds column%s %s" % ("s" if len(added) > 1 else "", ", ".join(added))
    # access() says EROFS for a read-only mount, also to root; the directory takes the rollback journal.
    unwritable = [str(p) for p in (db, registry_dir) if not os.access(p, os.W_OK)]
    line = "%d device(s)" % count
    if added and not unwritable:
        line += "; upgraded at start (%s)" % upgrade
    if unwritable:
        line += ("; warning: cannot be written by this user (%s: read-only mount or permissions): the gateway runs, "
                 "but registering, moving, revoking, retiring or re-keying a device (admin API, devices commands) "
                 "fails" % ", ".join(unwritable))
    if unwritable and added:
        # As run: a read-only registry cannot hold a retirement, so it is used without the column.
        line += ("; made by a version before 0.2.0 and not upgraded (%s): used as it is, no device retired; "
                 "retiring or reinstating needs a writable registry" % upgrade)
    return line


def check_retention_file(path: Path, policy: Mapping[str, Any]) -> str:
    """Read ``retention.json`` (the admin API's retention overrides) with start-up's own parser
    (:func:`gateway.web.retention.parse_retention_file`) and say what is wrong in plain words:
    which entry, which key, which value.

    Raises:
        StorageError: reason ``bad_retention_file``.
    """
    from gateway.web.retention import RetentionFileError, parse_retention_file, policy_retention, read_retention_bytes

    if not path.exists():
        return "no retention overrides"

    def bad(what: str) -> StorageError:
        return StorageError("retention settings file %s %s; fix it or remove it (the admin API writes it: "
                            "PUT /api/admin/retention)" % (path, what), reason="bad_retention_file")

    try:
        # As start-up reads it: regular only, bounded (a FIFO there hung --check; /dev/zero read until the OOM
        # killer). Decoded by the parser: a BOM skipped, a Windows-1252 file named as such.
        content = read_retention_bytes(path)
    except OSError as exc:
        raise bad("cannot be read (%s)" % (exc.strerror or exc)) from exc
    try:
        entries = parse_retention_file(content, policy_retention(policy))
    except RetentionFileError as exc:
        raise bad(str(exc)) from None
    return "%d retention override(s)" % len(entries)


def check_http_port(listen: str, port: int, holder: str | None) -> str:
    """Bind (and release) the HTTP address as the server will; a port already held by ``holder`` (the
    gateway running on this store) is reported, not refused.

    Raises:
        TransportError: reason ``open_failed`` when the address cannot be bound.
    """
    if port == 0:
        return "any free port"
    try:
        infos = socket.getaddrinfo(listen, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TransportError("cannot serve HTTP on %s: %s" % (host_port(listen, port), exc.strerror),
                             reason="open_failed", link="http") from exc
    for family, type_, proto, _canon, addr in infos:
        with socket.socket(family, type_, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and holder is not None and _listens_on(holder, port):
                    return "in use by the running gateway (pid %s)" % holder
                gateway = _gateway_listening(port) if exc.errno == errno.EADDRINUSE and holder is None else None
                stores = _held_store_locks(gateway) if gateway is not None else []
                if gateway is not None and not stores:
                    # A release before 0.2.0 takes no lock file, so the store names no holder: the check
                    # before an upgrade runs while that gateway still serves (docs/upgrading.md, step 4).
                    return ("in use by a civicedge gateway (pid %s) that holds no store lock: an older release;"
                            " free once it stops" % gateway)
                by = " (by another process; free it or set [http] port)"
                if gateway is not None:  # a current gateway on another store (a demo left running): run fails
                    by = " (by another civicedge gateway, pid %s, on the store %s; stop it or set [http] port)" % (
                        gateway, ", ".join(stores))
                raise TransportError("cannot serve HTTP on %s: %s%s" % (
                    host_port(listen, port), exc.strerror, "" if exc.errno != errno.EADDRINUSE else by),
                    reason="open_failed", link="http") from exc
    return "free"


def http_exposure_note(config: GatewayConfig) -> str:
    """What ``run --check`` adds to the http line when other machines can reach ``[http] listen``: the
    warning start-up logs (:func:`gateway.web.exposure.exposure_warning`), or "" for a loopback address."""
    from gateway.web.exposure import exposure_warning

    http = config.http
    if http is None:
        return ""
    warning = exposure_warning(http.listen, http.port, admin_token=http.admin_token_file is not None)
    return "" if warning is None else "; warning: " + warning


def _listens_on(pid: str, port: int) -> bool:
    """True when process ``pid`` has a listening TCP socket on ``port`` (Linux /proc; False when unknown)."""
    inodes = _listening_inodes(port)
    return bool(inodes) and _holds_socket(pid, inodes)


def _gateway_listening(port: int) -> str | None:
    """The pid of a ``civicedge gateway run`` process listening on ``port`` (``civicedge demo`` runs its
    gateway as such a child), or None (none, another program, or /proc does not let this user see it).
    Whether it is an older release that takes no store lock is :func:`_held_store_locks`'s to say."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path("/proc/%s/cmdline" % pid).read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode("utf-8", "replace") for a in argv]
        runs = "gateway" in words and "run" in words[words.index("gateway"):]
        ours = any("civicedge" in w or w == "hil.cli.main" for w in words)
        if runs and ours and _holds_socket(pid, inodes):
            return pid
    return None


def _held_store_locks(pid: str) -> list[str]:
    """The stores whose single-writer lock (``<db>.lock``, :func:`gateway.storage.store_files.lock_store`)
    process ``pid`` holds, for a message: each a lock file it has open that the kernel lists as its exclusive
    ``flock`` (``/proc/locks``, matched by inode among that pid's own locks: not by device too, which btrfs's
    ``stat`` gives as a subvolume's, not the one ``/proc/locks`` names, so a gateway there would pass as "older"), named as ``/proc/PID/fd`` shows it with control characters
    escaped (a newline in a path must not break the one-line error). Empty when none, or when /proc does not
    let this user see its descriptors.

    Not the pid text in the lock file, nor the file reopened by its name: a gateway in another pid namespace
    (a container) writes its own pid there ("1"), its file name may be another mount namespace's or deleted,
    and opening a name could block (a FIFO named ``*.lock``). ``stat`` on ``/proc/PID/fd/N`` reaches the open
    file itself without opening anything."""
    exclusive = {f.inode for f in flocks() if f.write and f.pid == pid}
    if not exclusive:
        return []
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        return []
    stores = set()
    for fd in fds:
        try:
            target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            st = os.stat("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            continue
        name = target[:-len(" (deleted)")] if target.endswith(" (deleted)") else target
        if not name.startswith("/") or not name.endswith(".lock") or st.st_ino not in exclusive:
            continue  # a socket, a pipe, another lock (not a store's), a lock it does not hold
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name[:-len(".lock")])
        stores.add(shown + (" (its lock file deleted)" if name != target else ""))
    return sorted(stores)


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the listening TCP sockets on ``port`` (Linux /proc/net; empty when unknown)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, column 9 the socket inode
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _holds_socket(pid: str, inodes: set[str]) -> bool:
    """True when process ``pid`` has one of the sockets ``inodes`` open (False when unknown)."""
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def check_mqtt(mqtt: MqttConfig) -> str:
    """The upstream, checked without contacting the broker: its host resolves (as ``http.listen`` is
    resolved), the TLS files load. The password file was read with the config.

    Raises:
        TransportError: reason ``open_failed`` when the TLS files cannot be used (``run`` would never connect).
    """
    from gateway.upstream.mqtt import tls_context

    parts = []
    try:
        ipaddress.ip_address(mqtt.host)
        parts.append("address")
    except ValueError:
        try:
            infos = socket.getaddrinfo(mqtt.host, mqtt.port, type=socket.SOCK_STREAM)
            parts.append("resolves to %s" % ", ".join(sorted({str(i[4][0]) for i in infos})))
        except (socket.gaierror, UnicodeError) as exc:
            why = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
            # not refused: run starts and retries the broker with backoff; said so the typo is seen now
            parts.append("does NOT resolve (%s): the upstream retries until it does" % why)
    if mqtt.tls:
        try:
            tls_context(mqtt)
        except (OSError, ValueError) as exc:
            raise TransportError("cannot use the TLS files of [mqtt]: %s" % exc,
                                 reason="open_failed", link="mqtt") from exc
        parts.append("TLS (%s%s)" % ("CA %s" % mqtt.ca_file if mqtt.ca_file else "system CAs",
                                     ", client certificate %s" % mqtt.cert_file if mqtt.cert_file else ""))
    if mqtt.username is not None:
        parts.append("user %r%s" % (mqtt.username, " with password_file" if mqtt.password is not None else ""))
    parts.append("broker not contacted")
    return "; ".join(parts)


def open_data_licence_line(config: GatewayConfig) -> str:
    """The ``opendata licence`` line of ``run --check``: the licence as it will be published (its SPDX
    id in the list's exact case, and its URL); what is likely wrong with it is
    :func:`gateway.config.licence.licence_warning`, said besides."""
    from gateway.web.opendata import OpenDataMeta

    licence = config.open_data_licence
    url = OpenDataMeta.of(config.open_data).licence_url()
    return "opendata licence: %s" % (licence if url is None or url == licence else "%s (%s)" % (licence, url))


def policy_warning_lines(policy: Mapping[str, Any], source: Path | None = None) -> list[str]:
    """``privacy policy <file>: warning: ...``, one line per :class:`gateway.policy_check.PolicyWarning` of
    ``policy`` (none for the shipped one): what the gateway and the boards take but the operator should know
    (an ε per release whose noise outgrows the firmware's padding too often).

    Raises:
        ConfigError: ``policy`` is refused (:func:`gateway.policy_check.check_policy`).
    """
    from gateway.policy_check import check_policy

    where = "privacy policy" if source is None else "privacy policy %s" % source
    return ["%s: warning: %s" % (where, warning.message) for warning in check_policy(policy, source=source)]


def check_for_run(config: GatewayConfig, policy: Mapping[str, Any] | None = None) -> list[str]:
    """Everything ``run`` opens at start, checked read-only; one line per item for the operator (and one per
    warning about the privacy policy, :func:`policy_warning_lines`).

    Raises:
        GatewayError: the first thing ``run`` would refuse (StorageError, RegistryError, TransportError).
    """
    lines = []
    check_no_restore_marker(config.data_dir)  # as the start refuses it: a restore cut off in its swap
    holder = store_holder(config.storage.path)
    if holder is None:  # as the start refuses it, before anything reads the file: a -shm whose -wal is gone
        check_wal_present(config.storage.path, real_store_path(config.storage.path))
    store = check_store_file(config.storage.path, running=holder is not None)
    if holder is not None:
        store += "; in use by the running gateway (pid %s): restart it to apply this config" % holder
    elif store == "readable":
        store += unchecked_wal_note(config.storage.path)
    store += migration_note(config)  # "" for a new store or one at the current version
    store += _earlier_copies_note(config.storage.path)
    lines.append("store %s: %s" % (config.storage.path, store))
    # as the start refuses it: no registry (it would be created empty) while the store knows devices
    check_registry_present(config.registry_dir, config.storage.path, config.source)
    lines.append("registry %s: %s" % (config.registry_dir, check_registry(config.registry_dir)))
    source = None
    if policy is None:
        from gateway.resources import load_policy, policy_path

        policy = load_policy()
        source = policy_path()
    lines.extend(policy_warning_lines(policy, source))
    retention = config.data_dir / RETENTION_FILE  # applied whatever [http] says: checked either way
    lines.append("%s: %s" % (retention, check_retention_file(retention, policy)))
    if config.http is not None:
        lines.append("http %s: %s%s" % (host_port(config.http.listen, config.http.port),
                                           check_http_port(config.http.listen, config.http.port, holder),
                                           http_exposure_note(config)))
    if config.mqtt is not None:
        lines.append("mqtt %s: %s" % (host_port(config.mqtt.host, config.mqtt.port), check_mqtt(config.mqtt)))
    if config.http is not None:
        lines.append(open_data_licence_line(config))
    return lines
