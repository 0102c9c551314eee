"""SQLite schema of the report store (version 1). Documented in docs/gateway.md.

Tables:
    reports   one row per accepted report; UNIQUE(device, seq) is the de-duplication key.
    readings  one row per released measurement (report field), for range queries and retention.
    alarms    one row per alarm code of an ``alarm`` report.
    chain     provenance hash chain, one entry per stored report, written in the same transaction.
    outbox    MQTT messages waiting for the broker's PUBACK (only used when [mqtt] is configured).
    ack_floor per device, the highest seq acknowledged so far (every seq up to it is committed or
              was given up on); restores held ACKs at seq gaps after a restart.
    counters  persisted counters (e.g. ``outbox_dropped``).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

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

CREATE TABLE IF NOT EXISTS readings (
    report_id INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    device    TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    zone      TEXT    NOT NULL,
    field     TEXT    NOT NULL,
    w         INTEGER NOT NULL,
    l         INTEGER NOT NULL,
    value     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_field_w ON readings (field, w);
CREATE INDEX IF NOT EXISTS readings_device_field_w ON readings (device, field, w);

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

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def apply_schema(conn: sqlite3.Connection) -> None:
    """Create all tables and indexes (idempotent) and record the schema version."""
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
    conn.commit()
