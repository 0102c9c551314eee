"""SQLite schema of the report store (version 4). Documented in docs/gateway.md.

Tables:
    reports   one row per accepted report; UNIQUE(device, seq) is the de-duplication key of
              retransmissions. A release (a ``win``/``hour``/``day`` report with a non-empty ``e``) for
              ``(device, type, w, l, fields of e)`` already stored is not stored (the store checks it
              through ``reports_device_w``); aggregates without ``e`` are always stored.
    readings  a VIEW: one row per released measurement (a key of ``reports.m``). Version 1 stored
              these rows in a table with two indexes; writing them was over two thirds of the
              store's cost per report, and they repeated ``reports.m``, so version 2 derives them.
    alarms    one row per alarm code of an ``alarm`` report; indexed by ``report_id`` (version 4) for
              the cascade when report-row retention removes its report.
    chain     provenance hash chain, one entry per stored report, written in the same transaction.
    outbox    MQTT messages waiting for the broker's PUBACK (only used when [mqtt] is configured).
    ack_floor per device, the highest seq acknowledged so far (every seq up to it is committed or
              was given up on); restores held ACKs at seq gaps after a restart.
    window_duplicates  version 3: one row per release not stored because that period's release
              was stored under another seq (a board whose clock was set back far releases earlier
              periods again); its seq, period, ε spend map ``e`` and frame digest, no measurement.
    retired_seqs  version 4: per device, the highest seq whose report row retention removed
              (row_retention.py): every seq up to it counts as committed, so a replayed frame of a
              removed report is never stored again. Its own version, so a gateway that does not read
              this table (version 3) refuses the store rather than store such a replay again.
    counters  persisted counters (e.g. ``outbox_dropped``, ``duplicate_windows``).
    store_stamp  one row: a random token the gateway writes anew right before each of its own checkpoints,
              on a page of its own that no other write touches, so the main file's copy of it says whose
              content the file holds (gateway.storage.store_guard: a backup copied over the running
              store is found even after another program checkpointed into it). No version of its own:
              CREATE ... IF NOT EXISTS adds it to a version 4 store, and older gateways ignore it.
    chain_checkpoints  one row per ``civicedge gateway archive-log`` run: the last archived entry's pos and
              hash, the entry count, time and the archive file's sha256 and name; those entries are no longer in
              ``chain``, which continues from the newest row (gateway.storage.chain_archive). No version of its
              own, as ``store_stamp``: archive-log always leaves the head entry in ``chain``, so an older
              gateway, which ignores the table, still continues the chain from it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from gateway.errors import StorageError
from gateway.storage.schema_backup import (CONFIG_KEY, MARGIN_BYTES, check_migration_space, earlier_copies,
                                           earlier_copies_note, make_backup, megabytes, migration_bytes,
                                           no_space_for_migration, remove_stale_temps)
from gateway.storage.disk_space import free_bytes
from gateway.storage.provenance import CHECKPOINTS_TABLE
from gateway.systemd import StartExtender

SCHEMA_VERSION = 4

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id          INTEGER PRIMARY KEY,
    device      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    zone        TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    w           INTEGER NOT NULL,
    l           INTEGER NOT NULL,
    m           TEXT    NOT NULL,
    e           TEXT    NOT NULL,
    a           TEXT    NOT NULL,
    fw          TEXT,
    received_at REAL    NOT NULL,
    gateway_id  TEXT    NOT NULL,
    link        TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS reports_w ON reports (w);
CREATE INDEX IF NOT EXISTS reports_device_w ON reports (device, w);

CREATE VIEW IF NOT EXISTS readings AS
    SELECT r.id AS report_id, r.device AS device, r.kind AS kind, r.zone AS zone, j.key AS field,
           r.w AS w, r.l AS l, j.value AS value
    FROM reports r, json_each(r.m) j;

CREATE TABLE IF NOT EXISTS alarms (
    report_id INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    device    TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    zone      TEXT    NOT NULL,
    code      TEXT    NOT NULL,
    w         INTEGER NOT NULL,
    seq       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_w ON alarms (w);
-- ON DELETE CASCADE looks up a removed report's alarms by report_id (report-row retention): without
-- this index every removed row scans the whole table (IF NOT EXISTS: a store of version 4 gets it too).
CREATE INDEX IF NOT EXISTS alarms_report ON alarms (report_id);

CREATE TABLE IF NOT EXISTS chain (
    pos     INTEGER PRIMARY KEY,
    device  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    gateway TEXT    NOT NULL,
    digest  TEXT    NOT NULL,
    prev    TEXT    NOT NULL,
    hash    TEXT    NOT NULL
);

CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    size    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS ack_floor (
    device TEXT PRIMARY KEY,
    floor  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS window_duplicates (
    device      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    w           INTEGER NOT NULL,
    l           INTEGER NOT NULL,
    e           TEXT    NOT NULL,
    kept_seq    INTEGER NOT NULL,
    digest      TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    gateway_id  TEXT    NOT NULL,
    link        TEXT    NOT NULL,
    PRIMARY KEY (device, seq)
);

CREATE TABLE IF NOT EXISTS retired_seqs (
    device TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS store_stamp (
    token BLOB NOT NULL
);
""" + CHECKPOINTS_TABLE + ";\n"


def apply_schema(conn: sqlite3.Connection, *, backup: bool = True) -> None:
    """Create all tables and indexes (idempotent), migrate an older store, record the schema version.

    Everything is one transaction (``conn`` must be in autocommit mode, as the store opens it): a first
    start cut off part-way (a kill, a power cut, a failed step) leaves the store exactly as it was, at
    its old version with its old tables (or, for a new store, an empty database).

    A store of an older version is first copied next to itself (``backup``; see
    :mod:`gateway.storage.schema_backup`), then a WARNING names the store, both versions and the copy,
    before anything is changed: the migration cannot be undone, and an older gateway refuses the store
    afterwards. A new store and one already at :data:`SCHEMA_VERSION` get no copy.

    Raises:
        StorageError: reason ``schema_too_new`` when the store was written by a newer gateway (its
            ``schema_version`` is above :data:`SCHEMA_VERSION`), ``schema_unknown`` when that is not a
            number, ``no_space_for_backup`` / ``backup_failed`` when the copy before a migration cannot be
            made, ``no_space_for_migration`` when the migration itself has too little room (checked first
            from what it will write, and when SQLite runs out of it); nothing is changed then.
    """
    found = stored_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        # Writing to it would record the older version over the newer one and hand the newer
        # gateway a store it believes it migrated; leave it untouched.
        raise too_new(found, _main_file(conn))
    store = _main_file(conn)
    if store.startswith("/"):
        for tmp in remove_stale_temps(Path(store)):  # under the store's lock: no copy is being made
            log.info("removed %s, a copy of the report store cut off before it was complete", tmp)
    old = found if found is not None and found < SCHEMA_VERSION else None
    writes = 0 if old is None else migration_bytes(conn, old)
    copy = None if old is None else _before_migration(conn, store, old, backup, writes)
    # A v1 store's DROP TABLE readings (every page zeroed into the -wal) is one long step with no progress
    # in between: systemd (Type=notify) is told beforehand to wait as long as writing those pages may take.
    extend = StartExtender("migrating the report store from schema version %s to %d" % (old, SCHEMA_VERSION))
    if old is not None:
        extend.send(writes=writes)
    try:
        _migrate(conn)
    except sqlite3.Error as exc:
        if old is None or getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
            raise
        raise no_space_for_migration(Path(store), old, SCHEMA_VERSION, writes + MARGIN_BYTES,
                                     free_bytes(Path(store)) if store.startswith("/") else None,
                                     "SQLite: %s" % exc) from exc
    if old is None and store.startswith("/") and earlier_copies(Path(store)):
        # Once per start: the copy keeps values retention removes from the store, and nothing else says so.
        log.warning("report store %s: %s", store, earlier_copies_note(Path(store)))
    if old is not None:
        # The migration's pages (from v1: every zeroed page of the dropped readings) are in the -wal: put
        # them in the main file and empty it now, not at the first stop, so it does not stay that large.
        extend.send("writing the migrated report store's -wal into it", writes=writes)  # one call, no progress
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # Said again once committed: the one-way step is done (the next open finds the current version).
        log.warning("report store %s upgraded from schema version %d to %d; gateways older than this one can no "
                    "longer open it (%s)", store, old, SCHEMA_VERSION,
                    "no copy of it was made" if copy is None else "the store as it was: %s" % copy)


def _before_migration(conn: sqlite3.Connection, store: str, found: int, backup: bool, writes: int) -> Path | None:
    """Check the room the migration's ``writes`` to the ``-wal`` need, copy the store (``backup``, a store
    in a file) and say, as a WARNING, what is about to happen; return the copy's name (None: none made)."""
    if store.startswith("/") and not backup:
        check_migration_space(Path(store), found, SCHEMA_VERSION, writes)
    if backup and store.startswith("/"):
        copy, size = make_backup(conn, Path(store), found, SCHEMA_VERSION, writes)
        log.warning("report store %s is at schema version %d; migrating to %d (one way: older gateways refuse it "
                    "afterwards); a copy of the store as it is now: %s (%s) — keep it until the new version runs "
                    "well, then delete it", store, found, SCHEMA_VERSION, copy, megabytes(size))
        return copy
    log.warning("report store %s is at schema version %d; migrating to %d (one way: older gateways refuse it "
                "afterwards); no copy of it is made first%s: only a backup made elsewhere runs on an older gateway",
                store, found, SCHEMA_VERSION, "" if backup else " (%s = false)" % CONFIG_KEY)
    return None


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the store to :data:`SCHEMA_VERSION` in one transaction (nothing of it stays if any step fails).

    Statement by statement, not ``executescript`` (which commits a pending transaction first): SQLite's
    DDL is transactional, so the dropped v1 table, the new tables and the version row commit together.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        _migrate_v1(conn)
        # Version 2 -> 3 only adds window_duplicates, 3 -> 4 only retired_seqs (CREATE ... IF NOT EXISTS).
        # Releases a version 2 gateway stored twice for one period stay as they are: nothing is deleted.
        for statement in _statements(SCHEMA):
            conn.execute(statement)
        _complete_window_duplicates(conn)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split an SQL script into its statements (comments go with the statement they precede)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError("incomplete SQL statement at the end of the schema: %r" % pending)
    return statements


def _complete_window_duplicates(conn: sqlite3.Connection) -> None:
    """Add ``kind`` and ``e`` to a ``window_duplicates`` table made before they were part of version 3.

    A development build of version 3 created the table without them (CREATE ... IF NOT EXISTS then
    leaves it so): every repeated release failed its whole batch and every retention pass failed.
    Rows recorded then have no spend to give: '' and '{}'.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(window_duplicates)")}
    if "kind" not in columns:
        conn.execute("ALTER TABLE window_duplicates ADD COLUMN kind TEXT NOT NULL DEFAULT ''")
    if "e" not in columns:
        conn.execute("ALTER TABLE window_duplicates ADD COLUMN e TEXT NOT NULL DEFAULT '{}'")


def _main_file(conn: sqlite3.Connection) -> str:
    """The file of ``conn``'s main database (``PRAGMA database_list``), or ``(in memory)``."""
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(file) or "(in memory)"
    return "(unknown)"


def too_new(found: int, path: object) -> StorageError:
    """The ``schema_too_new`` error for the store at ``path`` of schema version ``found``; it names a copy
    made before the migration that this gateway can run on (docs/upgrading.md, Going back)."""
    copies = [] if not str(path).startswith("/") else [
        p for p, _, _ in earlier_copies(Path(os.path.realpath(str(path))))
        if int(p.name.rsplit(".schema-v", 1)[1][:-4]) <= SCHEMA_VERSION]
    back = ("; to go back to this release, stop, put %s in its place (the store as it was before the "
            "migration: what came after is only in the newer store) and remove its -wal and -shm "
            "(docs/upgrading.md, Going back)" % copies[-1] if copies else "")
    return StorageError("the report store %s has schema version %d, newer than this gateway's %d: it was written "
                        "by a newer civicedge gateway; run that version (or a newer one) on it, or give this one "
                        "another [storage] path; the store was left unchanged%s" % (path, found, SCHEMA_VERSION, back),
                        reason="schema_too_new")


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The ``schema_version`` recorded in ``meta``, or None for a new store (no ``meta`` table or no row)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise StorageError("the report store records schema version %r, which is not a number: not a store this "
                           "gateway can open" % (row[0],), reason="schema_unknown") from None


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: drop the ``readings`` table (its rows repeat ``reports.m``; a view replaces it).

    Runs inside :func:`_migrate`'s transaction: the table is back if anything after it fails.
    Nothing is lost: every readings row was written from, and retention removed it together with,
    the same field of ``reports.m``, which the view reads.
    """
    row = conn.execute("SELECT type FROM sqlite_master WHERE name = 'readings'").fetchone()
    if row is not None and row[0] == "table":
        conn.execute("DROP TABLE readings")
