"""Read API over the report store, for the web surface, routes planner and tools.

Opens the database read-only (WAL lets readers run while the gateway writes), one connection per
thread that uses it (a :class:`ReportQueries` may be shared by worker threads). All times are
unix seconds; ranges are half-open ``[start, end)`` on the period start ``w``. Each method reads in
one snapshot of the store; :meth:`ReportQueries.snapshot` puts several in one.

What the methods return lives in :mod:`gateway.storage.read_models`, the open-data reads' statements in
:mod:`gateway.storage.open_data_reads`; both are importable from here too.

Example:
    q = ReportQueries(Path("data/reports.sqlite"))
    q.latest_per_device(kind="bin")
    q.readings(field="fill", start=t0, end=t1, zone="north")
    with q.snapshot():  # both from one state of the store
        q.hourly_aggregates(field="mot", start=t0, end=t1)
        q.alarms(start=t0, end=t1)
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from gateway.errors import StorageError
from gateway.storage import open_data_reads
from gateway.storage.committed_seq import highest_committed_seq as highest_committed_seq
from gateway.storage.damage import StoreDamage, damaged_error, is_corrupt, sqlite_message
# The SQL of the open-data reads, where tests and tools have looked for it (its home: open_data_reads).
from gateway.storage.open_data_reads import _DEVICE_REPORTED_SQL as _DEVICE_REPORTED_SQL
from gateway.storage.open_data_reads import _OLDEST_W_SQL as _OLDEST_W_SQL
from gateway.storage.open_data_reads import _RANGE_NEWEST_SQL as _RANGE_NEWEST_SQL
# The read API's values and constants, importable from here as before the split (their home: read_models).
from gateway.storage.read_models import DATA_VERSION_COUNTER as DATA_VERSION_COUNTER
from gateway.storage.read_models import MAX_ID as _MAX_ID
from gateway.storage.read_models import VALUE_REPORT_TYPES as VALUE_REPORT_TYPES
from gateway.storage.read_models import VALUE_TYPES_SQL as _VALUE_TYPES_SQL
from gateway.storage.read_models import (
    AlarmRecord as AlarmRecord,
    DaySpend as DaySpend,
    DeviceActivity as DeviceActivity,
    DeviceHourAggregate as DeviceHourAggregate,
    HourlyAggregate as HourlyAggregate,
    RangeStamp as RangeStamp,
    Reading as Reading,
    ReadingKey as ReadingKey,
    ReleasedValue as ReleasedValue,
    ReportChanges as ReportChanges,
    RowsStamp as RowsStamp,
    StoredReport as StoredReport,
)
from gateway.storage.read_transaction import one_read_transaction
from gateway.storage.sqlite_uri import ReadHold, read_only_uri
from gateway.storage.statement_clock import CLOCK_EVERY_STEPS, StatementClock
from gateway.storage.statement_clock import STATEMENT_LIMIT_S as STATEMENT_LIMIT_S

_REPORT_COLS = "device, seq, kind, zone, type, w, l, m, e, a, fw, received_at, gateway_id, link"
# The ``readings`` view restricted to the value reports: what hourly means and sums are made of. An
# alarm report's values (a fire alarm's temperature) are not one more sample of the period they fall
# in: they are sent at once, over a minute, whenever the alarm fires. The view keeps every report's
# values (``/api/readings`` shows the alarm's too); this filters in the query, so the stored schema is
# unchanged. Flattened by SQLite: the (device, w) and (w) indexes serve it as they serve the view.
_VALUE_READINGS = """(SELECT r.id AS report_id, r.device AS device, r.kind AS kind, r.zone AS zone, j.key AS field,
    r.w AS w, r.l AS l, j.value AS value
    FROM reports r, json_each(r.m) j WHERE r.type IN (%s))""" % _VALUE_TYPES_SQL
# The values of the value reports, plus one row with a NULL value per field a value report withheld:
# named in its ε map ``e`` but absent from ``m`` (noise drawn, the noisy count below k; docs/protocol.md
# §2). A release refused for a spent budget leaves no report, so it is not here. One pass over the
# reports (a UNION ALL of ``m`` and ``e`` would read every row twice): the keys of ``e`` merged under
# those of ``m``, for the few reports whose ``e`` is not empty (the store writes an empty one as {}).
_VALUES_AND_WITHHELD = """(SELECT r.id AS report_id, r.device AS device, r.kind AS kind, r.zone AS zone,
    j.key AS field, r.w AS w, r.l AS l,
    CASE WHEN r.e = '{}' OR json_type(r.m, '$."' || j.key || '"') IS NOT NULL THEN j.value END AS value
    FROM reports r, json_each(CASE WHEN r.e = '{}' THEN r.m ELSE json_patch(r.e, r.m) END) j
    WHERE r.type IN (%s))""" % _VALUE_TYPES_SQL
# Two queries of the same thing: per device and field released in the reports with ids in
# (?1, ?2], candidates for its newest value (id, w, l, seq, value; the caller keeps the newest by
# period start, then seq). Both scan only that id range (NOT INDEXED: the planner would walk the
# whole (device, w) index instead).
#
# Few new reports (a refresh): every value they released; picking in Python beats any grouping.
_RELEASED_FLAT_SQL = """
SELECT r.device, j.key, r.id, r.w, r.l, r.seq, j.value
FROM reports r NOT INDEXED, json_each(r.m) j
WHERE r.id > ?1 AND r.id <= ?2 AND r.type IN (%(types)s)
""" % {"types": _VALUE_TYPES_SQL}
# Many (the first read of a store): one row per pair. Grouping every value by (device, field)
# sorts them all (2-3 times the cost of the rest of the read), so take the distinct pairs only,
# then per pair walk down the device's (device, w) index to the first report holding the field, a
# few rows however old the field's newest value is (a 6-hourly count, a field the newest windows
# did not release), and take the highest seq at that period start. (One walk ordered by w and seq
# would not stop early: a partial sort ends a group only at the next row passing the WHERE.) A key
# that a JSON path cannot quote (none passes the policy gate) is left out.
_RELEASED_WALK_SQL = """
WITH pairs AS (
    SELECT DISTINCT r.device AS device, j.key AS field
    FROM reports r NOT INDEXED, json_each(r.m) j
    WHERE r.id > ?1 AND r.id <= ?2 AND r.type IN (%(types)s)),
newest AS (
    SELECT p.device AS device, p.field AS field, '$."' || p.field || '"' AS path,
        CASE WHEN instr(p.field, '"') = 0 THEN (
            SELECT r.w FROM reports r
            WHERE r.device = p.device AND r.id > ?1 AND r.id <= ?2 AND r.type IN (%(types)s)
              AND json_type(r.m, '$."' || p.field || '"') IS NOT NULL
            ORDER BY r.w DESC LIMIT 1) END AS w
    FROM pairs p)
SELECT x.device, x.field, r.id, r.w, r.l, r.seq, json_extract(r.m, x.path)
FROM (
    SELECT n.device AS device, n.field AS field, n.path AS path, (
        SELECT r.id FROM reports r
        WHERE r.device = n.device AND r.w = n.w AND r.id > ?1 AND r.id <= ?2 AND r.type IN (%(types)s)
          AND json_type(r.m, n.path) IS NOT NULL
        ORDER BY +r.seq DESC LIMIT 1) AS id
    FROM newest n) x
JOIN reports r ON r.id = x.id
""" % {"types": _VALUE_TYPES_SQL}
# From this many new reports on, the walk is the cheaper: the flat read costs per value, the walk
# per (device, field) pair, plus how far back its newest value lies (a late re-send).
_RELEASED_WALK_FROM = 2000
# SQLite binds at most 32766 parameters; lists of ids are read in slices well below that.
_ID_SLICE = 500

_LATEST_FIELD_SQL = """
WITH d(device) AS (SELECT value FROM json_each(?)),
last(device, id, zero_w) AS (
  SELECT d.device,
    (SELECT r.id FROM reports r WHERE r.device = d.device AND r.w >= ? AND r.w < ? AND r.kind = ?
       AND json_type(r.m, ?) IN ('integer', 'real') ORDER BY r.w DESC, r.seq DESC LIMIT 1),
    (SELECT r.w FROM reports r WHERE r.device = d.device AND r.w >= ? AND r.w < ? AND r.kind = ?
       AND json_type(r.m, ?) IN ('integer', 'real') AND json_extract(r.m, ?) = 0 ORDER BY r.w DESC LIMIT 1)
  FROM d)
SELECT last.device, r.w, json_extract(r.m, ?), last.zero_w
FROM last JOIN reports r ON r.id = last.id
"""

_FIELD_VALUES_SQL = """
SELECT device, w, l, json_extract(m, ?) FROM reports
WHERE w >= ? AND w < ? AND kind = ? AND json_type(m, ?) IN ('integer', 'real')
"""


def _field_path(field: str) -> str:
    """The JSON path of one ``m`` key: quoted, so a field name is one key, never a path."""
    if '"' in field:
        raise StorageError("field name %r cannot be a report field" % field, reason="bad_value")
    return '$."%s"' % field


# How long close() waits for an interrupted statement of another thread to stop.
_CLOSE_WAIT_S = 2.0
log = logging.getLogger(__name__)


def _report(row: tuple[Any, ...]) -> StoredReport:
    return StoredReport(
        device=row[0], seq=int(row[1]), kind=row[2], zone=row[3], type=row[4], w=int(row[5]), l=int(row[6]),
        m=json.loads(row[7]), e=json.loads(row[8]), a=json.loads(row[9]), fw=row[10],
        received_at=float(row[11]), gateway_id=row[12], link=row[13],
    )


class _Stopped(Exception):
    """A statement was interrupted by its connection's :class:`StatementClock` (internal to
    :meth:`ReportQueries._reading`)."""


class ReportQueries:
    """Read-only queries on a report store.

    Args:
        db_path: the gateway's SQLite file (``[storage] path``).
        damage: where a read that finds the file damaged records it (the gateway passes its store's,
            so ``/healthz`` and the writer learn of it); a latch of its own when None.
        statement_limit_s: the longest one statement may run (:data:`STATEMENT_LIMIT_S`); a statement
            running longer is interrupted, so its snapshot no longer holds the store's write-ahead log,
            and the read fails ``read_timeout``. None: no limit.
        one_shot: closed right after a command's reads (``routes plan``), opened as
            :class:`gateway.storage.sqlite_uri.ReadHold` decides: a gateway's live data directory is read as
            any reader reads it, with no hold (a gateway may start meanwhile); a copy without a lock file
            (a backup) is read ``immutable=1``, leaving no ``-wal``/``-shm`` beside it; a store in a directory
            this user cannot write keeps ``<db>.lock`` shared until :meth:`close` (no gateway starts under
            that immutable read).

    Attributes:
        damage: the first damage a read met (:class:`gateway.storage.damage.StoreDamage`).

    Raises:
        StorageError: reason ``open_failed`` if the file does not exist or is not a report store; from a
            query, ``corrupt`` when SQLite finds the file damaged (recorded in :attr:`damage`),
            ``read_timeout`` when a statement ran past ``statement_limit_s`` and was stopped, else
            ``read_failed``.
    """

    def __init__(self, db_path: Path, *, damage: StoreDamage | None = None,
                 statement_limit_s: float | None = STATEMENT_LIMIT_S, one_shot: bool = False) -> None:
        self.db_path = Path(db_path)
        self.statement_limit_s = statement_limit_s
        self.damage = damage if damage is not None else StoreDamage()
        if not self.db_path.is_file():
            raise StorageError("no report store at %s" % self.db_path, reason="open_failed")
        # One decision for every thread's connection: immutable only while the shared hold is kept (or no lock file).
        self._hold = ReadHold(self.db_path) if one_shot else None
        self._uri = self._hold.uri if self._hold is not None else read_only_uri(self.db_path)
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every thread's connection, with the lock its thread holds while a statement runs.
        self._conns: dict[sqlite3.Connection, threading.Lock] = {}
        # Each connection's statement clock (none without a statement limit); read by its own thread only.
        self._clocks: dict[sqlite3.Connection, StatementClock] = {}
        self._closed = False
        try:
            self._open()
        except sqlite3.Error as exc:
            self._release_hold()
            if is_corrupt(exc):
                raise self._damaged(exc, "opening it") from exc
            raise StorageError("cannot read report store %s: %s" % (self.db_path, exc), reason="open_failed") from exc
        except BaseException:
            self._release_hold()
            raise

    def _release_hold(self) -> None:
        """Give up a one-shot read's shared hold on ``<db>.lock`` (its connections closed first)."""
        if self._hold is not None:
            self._hold.release()

    def _open(self) -> tuple[sqlite3.Connection, threading.Lock]:
        """Open this thread's read-only connection (sqlite connections are not shared between threads)."""
        conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("SELECT 1 FROM reports LIMIT 1")
        except sqlite3.Error:
            conn.close()
            raise
        clock: StatementClock | None = None
        if self.statement_limit_s is not None:
            # Only these read-only connections: the store's writer is a connection of its own, never capped.
            clock = StatementClock(self.statement_limit_s)
            conn.set_trace_callback(clock.restart)
            conn.set_progress_handler(clock.over, CLOCK_EVERY_STEPS)
        in_use = threading.Lock()
        with self._lock:
            if self._closed:
                conn.close()
                raise sqlite3.ProgrammingError("the report queries were closed")
            self._conns[conn] = in_use
            if clock is not None:
                self._clocks[conn] = clock
        self._local.conn = (conn, in_use)
        return conn, in_use

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, held for the statements run in the ``with`` block."""
        if self._closed:
            raise StorageError("the read connections of %s were closed" % self.db_path, reason="read_failed")
        held: tuple[sqlite3.Connection, threading.Lock] | None = getattr(self._local, "conn", None)
        if held is None:
            try:
                held = self._open()
            except sqlite3.Error as exc:
                if is_corrupt(exc):
                    raise self._damaged(exc, "opening a read connection") from exc
                raise StorageError("cannot read report store %s: %s" % (self.db_path, exc),
                                   reason="read_failed", sqlite=sqlite_message(exc)) from exc
        conn, in_use = held
        with in_use:
            if getattr(self._local, "snapshot_depth", 0) and not conn.in_transaction:
                # A read of the snapshot failed and ended it: a later read would see a newer store.
                raise StorageError("a read of %s in a snapshot after the snapshot ended (a read in it failed)"
                                   % self.db_path, reason="read_failed")
            clock = self._clocks.get(conn)
            if clock is not None:
                clock.stopped = False
            yield conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_using`, with a failing statement raised as StorageError ``corrupt`` (the file is damaged),
        ``read_timeout`` (stopped by the statement limit) or ``read_failed``; a transaction it left open is
        ended."""
        try:
            with self._using() as conn:
                try:
                    yield conn
                except sqlite3.Error:
                    self._end_snapshot(conn)
                    clock = self._clocks.get(conn)
                    if clock is not None and clock.stopped:
                        raise _Stopped() from None
                    raise
        except _Stopped:
            raise StorageError("a store read ran longer than %g s and was stopped" % (self.statement_limit_s or 0),
                               reason="read_timeout") from None
        except sqlite3.Error as exc:
            if is_corrupt(exc):
                raise self._damaged(exc, "reading") from exc
            raise StorageError("query failed: %s" % exc, reason="read_failed", sqlite=sqlite_message(exc)) from exc

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Run the reads of the ``with`` block, on this thread, in one read transaction: every query method
        called in it reads the store as it was when the block began, whatever a writer (an ingest batch, a
        retention pass) commits meanwhile.

        For a caller that combines several reads into one answer (``routes plan``: fills, tilts, alarms),
        which separate reads could give from different states of the store (an alarm whose bin's fill
        retention removed in between). Per thread (each thread has its own read connection): the reads of
        other threads are not in it. Nested blocks share the outermost's snapshot; the methods that read in
        one transaction of their own (:meth:`changes_since`, :meth:`range_stamp`, ...) read in it too.

        Keep the block short: its snapshot holds the write-ahead log from the block's start to its end (the
        gateway cannot checkpoint past it), and the statement limit counts each statement, not the block.
        A read in it that fails ends the snapshot: the later reads of the block fail too (``read_failed``),
        never reading a newer store.

        Example:
            with queries.snapshot():
                fills = queries.field_values("bin", "fill", start, end)
                alarms = queries.alarms(start=start, end=end)

        Raises:
            StorageError: as the query methods, when the snapshot cannot be begun.
        """
        depth = getattr(self._local, "snapshot_depth", 0)
        if depth:
            self._local.snapshot_depth = depth + 1
            try:
                yield
            finally:
                self._local.snapshot_depth = depth
            return
        with self._reading() as conn:
            conn.execute("BEGIN")
            # A deferred BEGIN takes its snapshot at the first read: take it now, where the block begins.
            conn.execute("SELECT 1 FROM reports LIMIT 1").fetchall()
        self._local.snapshot_depth = 1
        try:
            yield
        finally:
            self._local.snapshot_depth = 0
            self._leave_snapshot(conn)

    def _leave_snapshot(self, conn: sqlite3.Connection) -> None:
        """End the read transaction :meth:`snapshot` began on ``conn`` (nothing once :meth:`close` closed it)."""
        with self._lock:
            in_use = self._conns.get(conn)
        if in_use is None:
            return
        with in_use:
            self._end_snapshot(conn)

    @staticmethod
    def _end_snapshot(conn: sqlite3.Connection) -> None:
        """After a failed statement: end a ``BEGIN`` left open (an interrupted read's ``COMMIT`` may not have
        run), so the connection holds no snapshot of the write-ahead log between reads."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # closed under it (close()): nothing left to end
            log.debug("ending a failed read's transaction: %s", exc)

    def _damaged(self, exc: sqlite3.Error, what: str) -> StorageError:
        """The ``corrupt`` error for ``exc``, recorded in :attr:`damage` (the gateway logs the first)."""
        err = damaged_error(self.db_path, exc, what)
        self.damage.report(str(err))
        return err

    def close(self) -> None:
        """Close the read connections of every thread; later queries fail (``read_failed``).

        A statement running in another thread is interrupted (it fails ``read_failed``) and its
        connection closed once it stopped, so no reader is left on the store (the gateway
        checkpoints the WAL after this).
        """
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns.items()), {}
            self._clocks = {}
        for conn, _ in conns:
            conn.interrupt()
        left_open = False
        for conn, in_use in conns:
            if in_use.acquire(timeout=_CLOSE_WAIT_S):
                try:
                    conn.close()
                finally:
                    in_use.release()
            else:
                left_open = True
                log.warning("a read of %s did not stop within %.0f s; its connection is left open",
                            self.db_path, _CLOSE_WAIT_S)
        if not left_open:  # an immutable read still open keeps the hold (released when the process ends)
            self._release_hold()

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    def latest_field_values(self, kind: str, field: str, devices: Sequence[str], start: int,
                            end: int) -> list[tuple[str, int, float, int | None]]:
        """Per device of ``devices`` (of ``kind``) with a ``field`` value in a report with period start in
        ``[start, end)``: (device, period start, the latest value, period start of its latest 0 or None).

        One row per device, read through the ``(device, w)`` index from the newest report back (a bin
        reports its tilt every 15-minute window: reading them all into Python took seconds and hundreds
        of MB), with bare ``json_extract``, not the ``readings`` view (``json_each`` of every field).
        """
        path = _field_path(field)
        rows = self._rows(_LATEST_FIELD_SQL, (json.dumps(list(devices)), start, end, kind, path,
                                              start, end, kind, path, path, path))
        return [(str(d), int(w), v, None if z is None else int(z)) for d, w, v, z in rows]

    def field_values(self, kind: str, field: str, start: int, end: int) -> list[tuple[str, int, int, float]]:
        """(device, period start, period length, value) of every ``field`` value of ``kind`` in a report with
        period start in ``[start, end)``, unordered."""
        path = _field_path(field)
        rows = self._rows(_FIELD_VALUES_SQL, (path, start, end, kind, path))
        return [(str(d), int(w), int(length), v) for d, w, length, v in rows]

    def devices(self) -> list[DeviceActivity]:
        """Return reporting activity per device (devices that never reported are absent)."""
        rows = self._rows(
            "SELECT r.device, r.kind, r.zone, r.seq, r.w, r.received_at, r.link, c.n FROM reports r"
            " JOIN (SELECT device, MAX(received_at) AS last, COUNT(*) AS n FROM reports GROUP BY device) c"
            " ON r.device = c.device AND r.received_at = c.last GROUP BY r.device ORDER BY r.device", (),
        )
        return [DeviceActivity(r[0], r[1], r[2], int(r[3]), int(r[4]), float(r[5]), r[6], int(r[7])) for r in rows]

    def latest_per_device(self, *, kind: str | None = None, type: str = "win") -> list[StoredReport]:  # noqa: A002
        """Return the most recent report of ``type`` (by period start, then seq) of every device."""
        sql = (
            "SELECT %s FROM reports r WHERE r.type = ? AND r.id = (SELECT r2.id FROM reports r2"
            " WHERE r2.device = r.device AND r2.type = ? ORDER BY r2.w DESC, r2.seq DESC LIMIT 1)" % _REPORT_COLS
        )
        params: tuple[Any, ...] = (type, type)
        if kind is not None:
            sql += " AND r.kind = ?"
            params += (kind,)
        return [_report(r) for r in self._rows(sql + " ORDER BY r.device", params)]

    def reports(self, *, device: str | None = None, start: int | None = None, end: int | None = None,
                limit: int = 10000) -> list[StoredReport]:
        """Return reports ordered by device and seq, optionally filtered by device and period start."""
        where, params = _filters(device=device, start=start, end=end)
        sql = "SELECT %s FROM reports%s ORDER BY device, seq LIMIT ?" % (_REPORT_COLS, where)
        return [_report(r) for r in self._rows(sql, params + (limit,))]

    def readings(self, *, field: str, start: int, end: int, device: str | None = None, zone: str | None = None,
                 limit: int = 100000, max_id: int | None = None) -> list[Reading]:
        """Return readings of ``field`` with period start in ``[start, end)``, ordered by time and device
        (of the reports with an id up to ``max_id`` only, when given)."""
        where, params = _filters(device=device, zone=zone, start=start, end=end, max_id=max_id)
        sql = ("SELECT device, zone, kind, field, w, l, value FROM readings%s AND field = ? ORDER BY w, device LIMIT ?"
               % where)
        return [Reading(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]))
                for r in self._rows(sql, params + (field, limit))]

    def hourly_aggregates(self, *, field: str, start: int, end: int, zone: str | None = None) -> list[HourlyAggregate]:
        """Return per-zone, per-hour count/sum/min/max of ``field`` for periods starting in ``[start, end)``,
        ordered by hour and zone (:meth:`hourly_aggregates_of` of one field)."""
        return self.hourly_aggregates_of(fields=[field], start=start, end=end, zone=zone)

    def alarms(self, *, start: int, end: int, zone: str | None = None, max_id: int | None = None) -> list[AlarmRecord]:
        """Return alarm codes raised with time in ``[start, end)``, oldest first (of the reports with an
        id up to ``max_id`` only, when given)."""
        where, params = _filters(zone=zone, start=start, end=end, max_id=max_id)
        sql = "SELECT device, zone, kind, code, w, seq FROM alarms%s ORDER BY w, device, code" % where
        return [AlarmRecord(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in self._rows(sql, params)]

    def count_reports(self) -> int:
        """Return the number of stored reports."""
        return int(self._rows("SELECT COUNT(*) FROM reports", ())[0][0])

    def highest_seq(self, device: str) -> int:
        """Return the highest seq stored for ``device`` (reports, window duplicates, seqs report retention
        removed) or acknowledged (its ACK floor), 0 when none (:func:`highest_committed_seq`): a board taking the id over starts above it."""
        with self._reading() as conn:
            return highest_committed_seq(conn, device)

    def last_report_id(self) -> int:
        """Return the highest report id (0 for an empty store); one index lookup, whatever the store's size."""
        return int(self._rows("SELECT COALESCE(MAX(id), 0) FROM reports", ())[0][0])

    def last_report_stamp(self) -> tuple[int, float] | None:
        """Return the id and ``received_at`` of the most recently stored report (None for an empty
        store); one index lookup."""
        rows = self._rows("SELECT id, received_at FROM reports WHERE id = (SELECT MAX(id) FROM reports)", ())
        return (int(rows[0][0]), float(rows[0][1])) if rows else None

    def last_id_received_before(self, at: float, *, above: int = 0) -> int:
        """Return the highest id above ``above`` of the reports received before ``at``, or ``above``
        when none is: the reports an answer published at ``at`` may be made of are those with an id
        up to it (``above``: the bound published before, which never goes down).

        Walks back from the newest report to ``above`` at most (a rowid range; ``received_at`` has no
        index), stopping at the first received before ``at``: the cost follows the reports stored
        since the previous bound, not the store's size. Ids follow ``received_at`` only roughly (a
        frame with an old seq waits for a store look-up before it is queued, so a newer frame can be
        stored first, by milliseconds), so a report received just after ``at`` may sit below the id
        returned: the bound dates an arrival to the mark, give or take that.
        """
        rows = self._rows("SELECT id FROM reports WHERE id > ? AND received_at < ? ORDER BY id DESC LIMIT 1",
                          (int(above), float(at)))
        return int(rows[0][0]) if rows else int(above)

    def oldest_period_start(self, *, max_id: int | None = None, since: int = 0,
                            excluded: Sequence[str] = ()) -> int | None:
        """Return the earliest period start ``w``, at or after ``since``, of the stored value reports
        (``win``, ``hour``, ``day``: not ``boot`` or ``alarm``) with an id up to ``max_id`` (a publication
        mark's bound, when given) of the devices not in ``excluded`` (revoked ones), None when there is
        none: from the period-start index, seeking to ``since``, one entry as a rule. A report row stays
        after retention removed its values, until its kind's report retention (the longest of its fields,
        gateway/storage/row_retention.py), so this is where stored reports begin, not where values are
        still held."""
        with self._reading() as conn:
            return open_data_reads.oldest_period_start(conn, max_id=max_id, since=since, excluded=excluded)

    def devices_reported(self, devices: Sequence[str], *, max_id: int) -> set[str]:
        """Return those of ``devices`` that have a stored report with an id up to ``max_id`` (a
        publication mark's bound): one seek per device in its (device, w) index entries, which hold
        the ids, stopping at the first at or below the bound (its oldest periods, as a rule)."""
        with self._reading() as conn:
            return open_data_reads.devices_reported(conn, devices, max_id=max_id)

    def meta_values(self, prefix: str) -> dict[str, str]:
        """Return the rows of the store's ``meta`` table (key -> value) whose key starts with ``prefix``."""
        rows = self._rows("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {str(k): str(v) for k, v in rows}

    def data_version(self) -> int:
        """Return how many times stored values were removed without a new report (retention runs
        that removed something; 0 when none did): with the newest report id it names the store's
        content."""
        rows = self._rows("SELECT value FROM counters WHERE name = ?", (DATA_VERSION_COUNTER,))
        return int(rows[0][0]) if rows else 0

    def range_stamp(self, *, start: int, end: int, max_id: int | None = None) -> RangeStamp:
        """Return the data version and the newest report (id, ``received_at``) with a period start in
        ``[start, end)`` (and an id up to ``max_id``, when given), from one snapshot: what an answer
        made of that range's reports changes with. The id is read from the period-start index alone
        (it holds the ids; no row is read but the newest)."""
        with self._reading() as conn:
            return open_data_reads.range_stamp(conn, start=start, end=end, max_id=max_id)

    def csv_rows_stamp(self, *, since: int, until: int, devices: Sequence[str], max_period_s: int,
                       max_id: int | None = None, zone: str | None = None) -> RowsStamp:
        """Return what the rows of :meth:`device_hourly` ending in ``(since, until]`` (whole hours) of
        ``devices`` (and ``zone``) are made of, of the reports with an id up to ``max_id``: the data version,
        the newest such report (id, ``received_at``) and how many there are, from one statement (one
        snapshot). What the open-data readings CSV's ``ETag``/``Last-Modified`` are made of: it changes
        whenever those rows do, a report for another range leaves it as it was (a superset: see
        :mod:`gateway.storage.open_data_reads`). Reads index entries and rows but no JSON.
        ``max_period_s``: the longest period a value may have (how far before ``since`` a row ending after
        it may begin)."""
        with self._reading() as conn:
            return open_data_reads.csv_rows_stamp(conn, since=since, until=until, devices=devices,
                                                  max_period_s=max_period_s, max_id=max_id, zone=zone)

    def spend_stamp(self, *, first: int, end: int, devices: Sequence[str], max_period_s: int, max_id: int,
                    zone: str | None = None) -> RowsStamp:
        """Return what the stored releases :meth:`privacy_spend` counts for the days ``[first, end)`` (UTC
        midnights; a release counts on the day its period ends) of ``devices`` (and ``zone``), ids up to
        ``max_id``, are made of, as :meth:`csv_rows_stamp` (the privacy-budget CSV's ``ETag``). The repeat
        releases are not in it: their bound is stamped apart (a rowid, :meth:`last_repeat_received_before`)."""
        with self._reading() as conn:
            return open_data_reads.spend_stamp(conn, first=first, end=end, devices=devices,
                                               max_period_s=max_period_s, max_id=max_id, zone=zone)

    def device_ids(self) -> list[str]:
        """Return the ids of devices that reported, sorted; one index seek per device (a skip-scan)."""
        rows = self._rows(
            "WITH RECURSIVE d(id) AS (SELECT MIN(device) FROM reports UNION ALL"
            " SELECT (SELECT MIN(device) FROM reports WHERE device > d.id) FROM d WHERE d.id IS NOT NULL)"
            " SELECT id FROM d WHERE id IS NOT NULL", (),
        )
        return [r[0] for r in rows]

    def changes_since(self, after_id: int, *, upto: int | None = None) -> ReportChanges:
        """Return, per device, the newest report of each type, the newest released value of each
        field and the last stored report among the reports with an id above ``after_id``, read in
        one consistent snapshot.

        The cost follows the number of new reports: keep the returned ``watermark`` and pass it
        back as ``after_id`` to follow a store incrementally (``after_id=0`` reads it all once).
        Report ids only grow and are never reused (report-row retention removes old rows but never
        the newest, and a new row takes the highest id + 1); retention removes fields from rows already
        read, and later whole rows: see :meth:`reports_by_id` to read rows again. ``upto``: read only the reports with an id up to
        it (the returned watermark is then at most ``upto``).
        """
        with self._reading() as conn:
            hi, latest, last, released = self._changes(conn, after_id, upto)
        return ReportChanges(watermark=hi, latest=latest, last=last, released=released)

    def _changes(self, conn: sqlite3.Connection, after_id: int, upto: int | None) -> tuple[
            int, dict[tuple[str, str], tuple[int, StoredReport]], dict[str, tuple[int, StoredReport]],
            dict[tuple[str, str], ReleasedValue]]:
        with one_read_transaction(conn):  # one snapshot for every statement below
            hi = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()[0])
            if upto is not None:
                hi = min(hi, int(upto))
            if hi <= after_id:
                return max(hi, after_id), {}, {}, {}
            groups = conn.execute(
                "SELECT device, type, MAX(w), MAX(id) FROM reports WHERE id > ? AND id <= ? GROUP BY device, type",
                (after_id, hi)).fetchall()
            latest: dict[tuple[str, str], tuple[int, StoredReport]] = {}
            last_ids: dict[str, int] = {}
            for device, rtype, w, max_id in groups:
                row = conn.execute(
                    "SELECT id, %s FROM reports WHERE device = ? AND w = ? AND type = ? AND id > ? AND id <= ?"
                    " ORDER BY seq DESC LIMIT 1" % _REPORT_COLS, (device, w, rtype, after_id, hi)).fetchone()
                latest[(device, rtype)] = (int(row[0]), _report(row[1:]))
                last_ids[device] = max(last_ids.get(device, 0), int(max_id))
            by_id = self._by_id(conn, sorted(last_ids.values()))
            released = self._released(conn, after_id, hi)
            return hi, latest, {device: (rid, by_id[rid]) for device, rid in last_ids.items()}, released

    @staticmethod
    def _released(conn: sqlite3.Connection, after_id: int, hi: int) -> dict[tuple[str, str], ReleasedValue]:
        """Per (device, field), the newest value (period start, then seq) released in ids (after_id, hi]."""
        sql = _RELEASED_WALK_SQL if hi - after_id >= _RELEASED_WALK_FROM else _RELEASED_FLAT_SQL
        out: dict[tuple[str, str], ReleasedValue] = {}
        for device, fname, rid, w, length, seq, value in conn.execute(sql, (after_id, hi)):
            new = ReleasedValue(report_id=int(rid), w=int(w), l=int(length), seq=int(seq), value=int(value))
            held = out.get((device, fname))
            if held is None or new.order > held.order:
                out[(device, fname)] = new
        return out

    def reports_by_id(self, ids: Iterable[int]) -> dict[int, StoredReport]:
        """Return the reports with these ids (ids not stored are absent)."""
        with self._reading() as conn:
            return self._by_id(conn, sorted(set(ids)))

    @staticmethod
    def _by_id(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, StoredReport]:
        out: dict[int, StoredReport] = {}
        for i in range(0, len(ids), _ID_SLICE):
            part = ids[i:i + _ID_SLICE]
            sql = "SELECT id, %s FROM reports WHERE id IN (%s)" % (_REPORT_COLS, ",".join("?" * len(part)))
            for row in conn.execute(sql, tuple(part)):
                out[int(row[0])] = _report(row[1:])
        return out

    def readings_page(self, *, fields: Sequence[str], start: int, end: int, device: str | None = None,
                      after: ReadingKey | None = None, limit: int = 1000) -> list[Reading]:
        """Return readings of ``fields`` with period start in ``[start, end)``, in the order
        (period start, device, report id, field), beginning after the position ``after``.

        The position of the last reading returned, ``(r.w, r.device, r.report_id, r.field)``, is the
        ``after`` of the next page: pages neither repeat nor skip a reading, however many share a
        period start.
        """
        where, params = _filters(device=device, start=max(start, after[0]) if after else start, end=end)
        where += " AND field IN (SELECT value FROM json_each(?))"
        params += (json.dumps(list(fields)),)
        if after is not None:
            where += " AND (w, device, report_id, field) > (?, ?, ?, ?)"
            params += tuple(after)
        sql = ("SELECT device, zone, kind, field, w, l, value, report_id FROM readings%s"
               " ORDER BY w, device, report_id, field LIMIT ?" % where)
        return [Reading(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), int(r[7]))
                for r in self._rows(sql, params + (limit,))]

    def device_hourly(self, *, fields: Sequence[str], start: int, end: int, devices: Sequence[str],
                      zone: str | None = None, max_period_s: int = 86400,
                      max_id: int | None = None) -> list[DeviceHourAggregate]:
        """Return count, sum and end of the values ``devices`` released for ``fields`` in their value
        reports (:data:`VALUE_REPORT_TYPES`; not an alarm's values) per device, UTC hour, stored zone
        and field, for the rows whose period ends in ``(start, end]``, ordered by hour, device, zone
        and field.

        A row holds the values whose period starts in its hour; it ends when the last of them ends,
        rounded up to a whole hour (an hour for 15-minute windows, 6 h for a 6-hour pass count, a day for
        a daily count): so a row is never split between two ranges of whole hours, no row is in a range
        that closed before its values existed (also for periods that do not align to hours, e.g. a
        40-minute window: its row then ends in the hour its last value ends), and a longer release is
        found in the range where it ends, when it was released. Each value keeps the zone its report was
        stored with (a device moved mid-hour has a row per zone). ``max_period_s`` is the longest
        period a stored value may have (how far before ``start`` a row that ends after it may begin).
        Reads only those devices' rows (index on device and period start). ``max_id``: only the
        reports with an id up to it (what was published at a mark, see :meth:`last_id_received_before`).

        A field a report withheld (``e`` names it, ``m`` does not: a noisy count below k) counts in
        ``withheld``; a row of withheld values only has ``count`` 0."""
        # The end is a property of the whole row (HAVING), not of each value: filtering values by their
        # own ends would leave a row's other values out of it.
        row_end = "(((MAX(w + l) + 3599) / 3600) * 3600)"
        where, params = _filters(zone=zone, start=start - max_period_s - 3600, end=end, max_id=max_id)
        where += " AND device IN (SELECT value FROM json_each(?)) AND field IN (SELECT value FROM json_each(?))"
        params += (json.dumps(list(devices)), json.dumps(list(fields)))
        sql = ("SELECT (w / 3600) * 3600 AS hour, device, MIN(kind), zone, field, COUNT(value),"
               " COALESCE(SUM(value), 0), MAX(w + l), COUNT(*) - COUNT(value) FROM %s%s"
               " GROUP BY hour, device, zone, field HAVING %s > ? AND %s <= ?"
               " ORDER BY hour, device, zone, field" % (_VALUES_AND_WITHHELD, where, row_end, row_end))
        params += (int(start), int(end))
        return [DeviceHourAggregate(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), int(r[7]), int(r[8]))
                for r in self._rows(sql, params)]

    def privacy_spend(self, *, start: int, end: int, devices: Sequence[str], fields: Sequence[str],
                      max_period_s: int, max_id: int, max_repeat: int, zone: str | None = None) -> list[DaySpend]:
        """Return the milli-ε ``devices`` spent on ``fields`` per UTC day, device and field, for the days
        from ``start`` to ``end`` (UTC midnights; a release counts on the day its period ends): the ``e``
        of the stored reports with an id up to ``max_id`` and of the repeat releases
        (``window_duplicates``) with a rowid up to ``max_repeat`` (the publication bounds of a mark), as
        the store holds them now (retention removes ``e`` entries and rows: what it removed is not
        counted, nor a repeat release whose stored release row retention removed). ``max_period_s``: the
        longest period a report may cover (how far before ``start`` a period ending in the range may
        begin). ``zone``: only the releases stored with it (a repeat release: its stored release's zone).

        Meant for a day at a time (a short read): both branches read only ``devices``' index entries
        (``(device, w)`` of the reports, the primary key of the repeat releases), filtered by zone and
        field before any sum."""
        with self._reading() as conn:
            return open_data_reads.privacy_spend(conn, start=start, end=end, devices=devices, fields=fields,
                                                 max_period_s=max_period_s, max_id=max_id, max_repeat=max_repeat,
                                                 zone=zone)

    def last_repeat_received_before(self, at: float, *, above: int = 0) -> int:
        """Return the highest ``window_duplicates`` rowid above ``above`` of the repeat releases received
        before ``at``, or ``above`` when none is: the publication bound of the repeat releases at a mark
        (as :meth:`last_id_received_before` is the reports'); walks back from the newest row to ``above``."""
        rows = self._rows("SELECT rowid FROM window_duplicates WHERE rowid > ? AND received_at < ?"
                          " ORDER BY rowid DESC LIMIT 1", (int(above), float(at)))
        return int(rows[0][0]) if rows else int(above)

    def repeat_received_at(self, rowid: int) -> float | None:
        """Return the ``received_at`` of the ``window_duplicates`` row ``rowid``, None when there is none."""
        rows = self._rows("SELECT received_at FROM window_duplicates WHERE rowid = ?", (int(rowid),))
        return float(rows[0][0]) if rows else None

    def hourly_aggregates_of(self, *, fields: Sequence[str], start: int, end: int,
                             zone: str | None = None) -> list[HourlyAggregate]:
        """Return per-zone, per-hour count/sum/min/max of each of ``fields`` in the value reports
        (:data:`VALUE_REPORT_TYPES`; not an alarm's values) for periods starting in ``[start, end)``,
        in one pass over the range, ordered by hour, zone and field."""
        where, params = _filters(zone=zone, start=start, end=end)
        where += " AND field IN (SELECT value FROM json_each(?))"
        params += (json.dumps(list(fields)),)
        sql = ("SELECT zone, (w / 3600) * 3600 AS hour, field, COUNT(*), SUM(value), MIN(value), MAX(value),"
               " COUNT(DISTINCT device) FROM %s%s GROUP BY zone, hour, field ORDER BY hour, zone, field"
               % (_VALUE_READINGS, where))
        return [HourlyAggregate(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]))
                for r in self._rows(sql, params)]


def _filters(*, device: str | None = None, zone: str | None = None, start: int | None = None,
             end: int | None = None, max_id: int | None = None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = ["1=1"]
    params: list[Any] = []
    for col, val in (("device", device), ("zone", zone)):
        if val is not None:
            clauses.append("%s = ?" % col)
            params.append(val)
    if start is not None:
        clauses.append("w >= ?")
        params.append(int(start))
    if end is not None:
        clauses.append("w < ?")
        params.append(int(end))
    if max_id is not None:
        # A filter on the rows the period index finds (unary +): as an index term it would have the
        # planner walk the ids below max_id, i.e. nearly the whole store.
        clauses.append("+report_id <= ?")
        params.append(int(max_id))
    return " WHERE " + " AND ".join(clauses), tuple(params)
