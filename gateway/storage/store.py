"""Report store: SQLite in WAL mode, one writer connection, batched transactions.

A batch of reports is inserted in ONE transaction together with their alarms, provenance chain
entries and (when upstream is configured) MQTT outbox messages, so after a
crash either all of it exists or none of it does. ``INSERT OR IGNORE`` on ``UNIQUE(device, seq)``
makes a retransmission a no-op. A release (a periodic report spending ε, :func:`release_key`) whose
``(device, type, w, l, fields of e)`` is already stored, or earlier in the same batch, under another seq
is not stored either: it is recorded in ``window_duplicates`` (see :class:`WindowDuplicate`). Methods
are synchronous; the async service calls them from one dedicated thread.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.errors import StorageError
from gateway.retention_clock import META_KEY as RETENTION_META_KEY
from gateway.storage import field_retention, provenance, row_retention
from gateway.storage.damage import StoreDamage, is_corrupt
from gateway.storage.meta_keys import MAX_META_KEY, MAX_META_VALUE, PUBLISHED_META_PREFIX
from gateway.storage.records import (RELEASE_PERIOD_TYPES, BatchResult, OutboxEncoder, OutboxMessage, ReleaseKey,
                                     ReportRecord, WindowDuplicate, release_key)
from gateway.storage.schema import apply_schema
from gateway.storage.sqlite_uri import wal_has_content
from gateway.storage.store_files import (file_identities, file_problem, lock_store, main_stamp, make_private,
                                         real_store_path, shm_file, store_writer)
from gateway.storage.store_guard import (CHECKPOINT_FRAMES, WAL_SIZE_LIMIT_BYTES, GuardedStore, checkpoint_at_open,
                                         keep_open_until_exit, open_stamp)
from gateway.storage.store_kind import store_kind
from gateway.storage.store_retention import LARGE_REMOVAL, RetentionStore
from gateway.storage.store_rows import (INSERT_CHAIN, INSERT_FLOORS, INSERT_REPORTS, SELECT_PERIODS, UPSERT_FLOORS,
                                        add_to_counter, dump_json, insert_rows, report_row, roll_back, select_rows)
from gateway.storage.wal_index import check_wal_present

__all__ = [
    "BatchResult", "CHECKPOINT_FRAMES", "GuardedStore", "INSERT_CHAIN", "INSERT_FLOORS", "INSERT_REPORTS",
    "LARGE_REMOVAL", "MIN_REPORT_DAYS", "OutboxEncoder", "OutboxMessage", "RELEASE_PERIOD_TYPES", "RETIRED_TOO_NEW",
    "RETIRED_UNKNOWN", "ReleaseKey", "ReportRecord", "ReportStore", "RetentionStore", "UPSERT_FLOORS",
    "WAL_SIZE_LIMIT_BYTES", "WindowDuplicate", "insert_rows", "keep_open_until_exit", "release_key", "report_row",
    "select_rows",
]

log = logging.getLogger(__name__)

#: Page cache of the store's writing connection, in KiB (``PRAGMA cache_size``): filled as pages are read and
#: written (all of it on a store larger than this) and kept until the gateway stops (docs/gateway.md, memory).
WRITER_CACHE_KIB = 32 * 1024


# committed_digest at or below a device's retired seq: the digest is gone with the row (a frame may be its
# re-send), or the frame's period is too new for a row retention removed (never stored: not a re-send).
RETIRED_UNKNOWN = ""
RETIRED_TOO_NEW = "newer than the report retention"  # never a frame digest (hex)
# The least report retention a kind can have (config retention: 1 day at least), used before a pass.
MIN_REPORT_DAYS = 1


class ReportStore(RetentionStore):
    """Writer side of the report database.

    Args:
        path: SQLite file (its directory is created).
        gateway_id: recorded on every row and chain entry.
        outbox_encoder: when set, each stored report is also queued for MQTT as ``(topic, payload)``.
        outbox_max_bytes: cap on the total payload bytes waiting in the outbox.
        outbox_policy: what to do at the cap: ``drop_oldest`` (default) or ``drop_newest``.
        backup_before_migration: copy a store of an older schema version next to itself before
            migrating it (``[storage] backup_before_migration``; gateway.storage.schema_backup).

    Raises:
        StorageError: at open, reason ``open_failed``, ``in_use`` (another gateway writes it, whether
            through the same path or a symlink), ``hard_linked`` (the file has other names),
            ``path_changed`` (a symlinked path was re-pointed while it was being opened),
            ``symlinked`` (its ``-wal`` or ``-shm`` is a symlink), ``not_owned`` (the database,
            ``-wal`` or ``-shm`` belongs to another user, e.g. restored as root),
            ``schema_too_new`` (written by a newer gateway; left unchanged), ``schema_unknown``,
            ``no_space_for_backup`` or ``backup_failed`` (the copy before a migration; left unchanged),
            ``wal_missing`` (its ``-shm`` says the ``-wal`` held commits, and that ``-wal`` is gone; untouched),
            ``overwritten_aside`` (a ``-wal``/``-shm`` set aside as ``.overwritten`` by a stop that found the
            file overwritten is beside it: the operator decides);
            from :meth:`insert_batch` and every other write, reason ``file_gone`` once the file was found
            deleted, replaced, overwritten in place or written by another program, or the configured path
            (a symlink) now names another file (see
            :meth:`file_problem`, :meth:`check_file`), until the store is closed;
            from any method, reason ``corrupt`` when SQLite finds the file damaged (the message names
            the file and says to restore a backup), else ``read_failed`` / ``write_failed``.
    """

    def __init__(
        self,
        path: Path,
        *,
        gateway_id: str,
        outbox_encoder: OutboxEncoder | None = None,
        outbox_max_bytes: int = 64 * 1024 * 1024,
        outbox_policy: str = "drop_oldest",
        backup_before_migration: bool = True,
    ) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self._encoder = outbox_encoder
        self._outbox_max = outbox_max_bytes
        self._outbox_policy = outbox_policy
        # The first damage found in this open store (a read or write meeting it, the gateway's start-up
        # check through mark_damaged), kept until the store is closed; set before the open, which reports to it.
        self._damage = StoreDamage()
        # The file itself, through any symlink: its lock, -wal and -shm are next to it (SQLite names
        # the -wal after the resolved path too), wherever the configured name points from. Resolved
        # once: the lock, the checks and the connection all use this file, so a link re-pointed
        # meanwhile cannot make the gateway lock one store and write another.
        real = real_store_path(self.path)
        self._real = real
        # What the file is, before anything is created or changed beside it: a text file was made 0600
        # and given a .lock, the registry's devices.sqlite got the store's tables and WAL mode. Raises
        # open_failed / not_a_store, as run --check does. A store a gateway holds is left to the lock
        # (in_use): it is being written, so it is not read here.
        if store_writer(self.path) is None:
            store_kind(real)
        self._lock_fd = lock_store(self.path, real)
        # A -shm whose -wal was deleted (after a kill): SQLite would silently drop the commits that -wal held.
        try:
            orphan = check_wal_present(self.path, real)
        except StorageError:
            os.close(self._lock_fd)
            raise
        if orphan is not None:
            log.info("report store %s: %s-shm was left without its -wal, and says that -wal held nothing the file "
                     "lacks (%d frame(s), all checkpointed): nothing is lost", self.path, real.name, orphan.frames)
        # Left by a gateway killed, or stopped on a full disk, before its last checkpoint ended: the
        # main file alone may be half-checkpointed; the store is whole only with this -wal.
        unclean = wal_has_content(real)
        conn: sqlite3.Connection | None = None
        try:
            # Before SQLite opens anything: opening a file already in WAL mode (a restored backup)
            # creates its -wal and -shm at once, with the database file's mode.
            make_private(real)
            conn = sqlite3.connect(str(real), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed (and therefore acknowledged) report survives power loss too.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # retention removes values (json_remove on m and e): overwrite what they occupied on disk
            # too, whatever this SQLite build's default (many builds have secure_delete off)
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            # Up to this much page cache for the writer (SQLite's default is 2 MB): a batch from a few hundred
            # devices touches a leaf page per device in each of the two device indexes, more than 2 MB holds,
            # so each commit read them back from the file (bench/gateway_ingest.py: ~1.5 µs per report).
            conn.execute("PRAGMA cache_size=-%d" % WRITER_CACHE_KIB)
            # A large transaction (a retention pass, a migration) grew the -wal to tens of MB and it kept that
            # size until a clean stop; SQLite cuts it back to this when it next starts the log over after a
            # checkpoint. Routine commits stay far below it (a checkpoint at CHECKPOINT_FRAMES, ~4 MB).
            conn.execute("PRAGMA journal_size_limit=%d" % WAL_SIZE_LIMIT_BYTES)
            apply_schema(conn, backup=backup_before_migration)
            self._chain_pos, self._chain_head = provenance.last_hash(conn)
            # Seqs whose rows retention removed: still committed (row_retention.py).
            self._retired = row_retention.retired_seqs(conn)
            # Report retention per kind (days) of the last retention pass planned; until one is, the
            # least a kind can have (a config retention is 1 day at least): see committed_digest.
            self._report_days: dict[str, int] = {}
            # What the retention passes of this open store left clean: a later pass finds what expires since
            # instead of counting every stored value (field_retention.py); a new open counts again.
            self._cleared = field_retention.Cleared()
            row = conn.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM outbox").fetchone()
            # The stamp whose copy in the main file tells the gateway's content from a copy another program put
            # there, even once another program checkpointed into it (GuardedStore._renew_token). A clean stop
            # renewed it before its last checkpoint; after an unclean one it is renewed before the checkpoint
            # below, so a copy of the file taken before either holds another.
            self._token_page, self._tokens = open_stamp(conn, renew=unclean)
            if unclean:
                checkpoint_at_open(conn, self.path)
            # From here on only the store's own checkpoints write the main file (_checkpoint, close): an
            # autocheckpoint inside a COMMIT could not be told from a cp landing during that COMMIT.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            self._conn = conn
            # Commits of another connection (an operator's sqlite3 writing the running store) move it, and so does
            # another program's checkpoint that starts the log over (wal_checkpoint(TRUNCATE)), which leaves the
            # -shm's count of commits as it was: the count as the store's own last commit left it tells the two
            # apart (None: unknown, every move is then taken for another program's commit). The -shm is read
            # through SQLite's own descriptor of it (_log_state).
            self._shm = shm_file(real)
            self._excused = 0  # the moves of data_version so told to be checkpoints, not commits
            self._data_version, self._commits = self._sample_commits()
        except (sqlite3.Error, OSError, StorageError) as exc:
            if conn is not None:
                conn.close()
            os.close(self._lock_fd)
            if isinstance(exc, sqlite3.Error) and is_corrupt(exc):
                raise self._corrupt(exc) from exc
            if isinstance(exc, StorageError) and exc.reason == "schema_too_new":
                raise  # its message names the store
            reason = exc.reason if isinstance(exc, StorageError) else "open_failed"
            raise StorageError("cannot open report store %s: %s" % (self.path, exc), reason=reason) from exc
        self._outbox_bytes, self._outbox_count = int(row[0]), int(row[1])
        # The database is watched through the configured name (symlinks followed): a [storage] path
        # re-pointed at another file is a replaced store (the next start would open that one). The
        # -wal is next to the file itself, where SQLite keeps it.
        self._files = file_identities(self.path, real)
        # The main file as the gateway's own last write left it: SQLite writes it only when it checkpoints,
        # inside one of the gateway's commits (or at the open above), so a change found between commits is
        # another program writing it: a cp over the running store keeps the file (same inode) and
        # replaces its content, which the identity check cannot see (store_files.overwritten).
        # The log as that checkpoint left it (the -shm): a checkpoint another connection runs (an operator's
        # sqlite3 "PRAGMA wal_checkpoint") writes the file too, harmlessly. Read before the file (_restamp).
        self._log = self._log_state()
        self._stamp = main_stamp(self._files[0]) if self._files else None
        self._overwritten = False
        self._settled = True  # False while another program's checkpoint was found writing the file (_overwrite_problem)
        self._wal = real.with_name(real.name + "-wal")
        # The file found deleted or replaced (by a write or check_file on the store's thread): from then on
        # nothing is written (see check_file); and what salvage() said of the copy it made, or could not
        # (tried again at each check while it was only for want of room).
        self._gone: str | None = None
        self._salvaged: str | None = None
        self._salvage_again = True
        # Whether the main file was found holding one of the store's stamp tokens (GuardedStore._renew_token):
        # until then (a new store, a checkpoint a reader cut short), another program's checkpoint is not checked
        # against them.
        self._token_known = False
        if self._stamp is not None:
            self._confirm_token()

    # -- ingest ---------------------------------------------------------------------------

    def max_seqs(self) -> dict[str, int]:
        """Return the highest committed seq per device, stored, recorded as a window duplicate, or removed by
        report retention (the persisted replay window)."""
        with self._reading("reading the replay window"):
            found = dict(self._retired)
            for d, s in self._conn.execute("SELECT device, MAX(seq) FROM reports GROUP BY device"):
                found[str(d)] = max(found.get(str(d), 0), int(s))
            for d, s in self._conn.execute("SELECT device, MAX(seq) FROM window_duplicates GROUP BY device"):
                found[str(d)] = max(found.get(str(d), 0), int(s))
        return found

    def has(self, device: str, seq: int) -> bool:
        """Return True if ``(device, seq)`` is committed: stored, recorded as a window duplicate, or at or below
        the highest seq of ``device`` whose row report retention removed (a replay of it is never stored)."""
        if seq <= self._retired.get(device, 0):
            return True
        with self._reading("looking up %s seq %d" % (device, seq)):
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM reports WHERE device=? AND seq=?)"
                " OR EXISTS (SELECT 1 FROM window_duplicates WHERE device=? AND seq=?)",
                (device, seq, device, seq)).fetchone()
        return bool(row[0])

    def committed_digest(self, device: str, seq: int, kind: str | None = None,
                         period_end: int | None = None) -> str | None:
        """Return the frame digest committed under ``(device, seq)`` (stored, or recorded as a window
        duplicate); None when it is not committed. A frame under a committed seq with another digest is not
        a re-send (the device re-sends byte-identical frames): its seq counter restarted.

        At or below the device's retired seq (report retention removed the row, and its digest with it):
        :data:`RETIRED_UNKNOWN` when the frame (``kind``, its period end ``period_end`` = w + l) may be a
        re-send of a removed row; :data:`RETIRED_TOO_NEW` when its period ends after the kind's report-retention
        cut-off: retention removes only rows whose period ended before it, so such a frame was never stored
        (a board whose counter restarted under the id). Without ``kind``/``period_end``: RETIRED_UNKNOWN.
        """
        if seq <= self._retired.get(device, 0):
            if kind is None or period_end is None:
                return RETIRED_UNKNOWN
            days = self._report_days.get(kind, MIN_REPORT_DAYS)
            return RETIRED_TOO_NEW if period_end > time.time() - days * 86400 else RETIRED_UNKNOWN
        with self._reading("looking up %s seq %d" % (device, seq)):
            row = self._conn.execute(
                "SELECT digest FROM reports WHERE device=? AND seq=?"
                " UNION ALL SELECT digest FROM window_duplicates WHERE device=? AND seq=? LIMIT 1",
                (device, seq, device, seq)).fetchone()
        return None if row is None else str(row[0])

    def insert_batch(self, records: list[ReportRecord], floors: dict[str, int] | None = None) -> BatchResult:
        """Store ``records`` in one transaction; duplicates are skipped, not errors.

        Args:
            records: verified reports.
            floors: ACK floors to persist in the same transaction (see :meth:`ack_floors`).
        """
        damaged = self.damage.problem
        if damaged is not None:
            # Writing into a damaged B-tree can spread the damage to what is still sound; the devices keep
            # the reports (not acknowledged) and re-send them to a recovered or restored store.
            raise StorageError("not committing into a damaged store (devices keep their reports): %s" % damaged,
                               reason="corrupt")
        what = "storing %d reports" % len(records)
        if self._gone is not None:
            raise self._gone_error(what)
        result = BatchResult()
        conn = self._conn
        pos, head = self._chain_pos, self._chain_head
        queued: list[tuple[str, bytes]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            changes = conn.total_changes
            if self._retired:
                records = self._drop_retired(records, result)
            records = self._drop_repeated_releases(records, result)
            # Multi-row INSERTs per table instead of a statement per report (the per-row path was the
            # store's cost; see insert_rows). New rows are told apart from duplicates by their rowid: the reports table
            # has no AUTOINCREMENT, so rows inserted now get ids above the current maximum.
            top = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()[0])
            gw = self.gateway_id
            before = conn.total_changes
            insert_rows(conn, *INSERT_REPORTS, [report_row(rec, gw) for rec in records])
            added = conn.total_changes - before
            ids: dict[tuple[str, int], int] | None = None
            if added == len(records):
                # The usual case (ingest keeps known duplicates out): every row is new and, each taking
                # MAX(id) + 1 in turn, they hold ids top+1..top+n in record order. MAX(id) confirms it.
                last = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()[0])
                if last != top + added:
                    raise sqlite3.DatabaseError("rowid allocation did not follow MAX(id): %d new rows end at %d,"
                                                " not %d" % (added, last, top + added))
            else:
                ids = {(str(d), int(q)): int(i) for i, d, q in
                       conn.execute("SELECT id, device, seq FROM reports WHERE id > ?", (top,))}
                if len(ids) != added:
                    raise sqlite3.DatabaseError("rowid allocation did not follow MAX(id); %d of %d new rows found"
                                                % (len(ids), added))
            alarms: list[tuple[Any, ...]] = []
            stored: list[ReportRecord] = []
            for i, rec in enumerate(records):
                rid = top + 1 + i if ids is None else ids.pop((rec.device, rec.seq), None)
                if rid is None:  # stored before, or earlier in this batch
                    result.duplicates.append((rec.device, rec.seq))
                    continue
                if rec.a:  # alarms only: no generator per report for the usual empty list
                    alarms.extend((rid, rec.device, rec.kind, rec.zone, code, rec.w, rec.seq) for code in rec.a)
                stored.append(rec)
                if self._encoder is not None:
                    queued.append(self._encoder(rec))
                result.inserted.append((rec.device, rec.seq))
            # the stored reports' chain entries, in order, each linked to the one before
            hashes = provenance.chain_hashes([(rec.device, rec.seq, rec.digest) for rec in stored], gw, head)
            chain = [(pos + n, rec.device, rec.seq, gw, rec.digest, prev, new_hash)
                     for n, (rec, prev, new_hash) in enumerate(zip(stored, [head, *hashes], hashes), start=1)]
            if hashes:
                pos, head = pos + len(hashes), hashes[-1]
            if alarms:
                conn.executemany(
                    "INSERT INTO alarms (report_id, device, kind, zone, code, w, seq) VALUES (?,?,?,?,?,?,?)", alarms)
            insert_rows(conn, *INSERT_CHAIN, chain)
            if floors:
                self._save_floors(floors)
            outbox_bytes, outbox_count = self._outbox_bytes, self._outbox_count
            if queued:
                result.outbox_dropped, outbox_bytes, outbox_count = self._enqueue(queued)
            # committing would acknowledge reports into a gone file, or checkpoint into one overwritten
            if (file_problem(self._files) is not None or self._overwrite_problem() is not None
                    or self._foreign_problem() is not None):
                conn.execute("ROLLBACK")
                self.check_file()  # outside the transaction: the copy is of what was committed
                raise self._gone_error(what)
            commits = self._log_commits()  # under the write lock: no other commit, no restart
            conn.execute("COMMIT")
            self._committed(commits, conn.total_changes != changes)
            if self._after_commit():  # overwritten during the COMMIT: not acknowledged (its -wal goes aside)
                self.check_file()
                raise self._gone_error(what)
        except BaseException as exc:
            # Any error, not only SQLite's: a transaction left open would fail every later BEGIN.
            roll_back(conn, what)
            if isinstance(exc, sqlite3.Error):
                raise self._error(what, exc, "write_failed") from exc
            raise
        self._chain_pos, self._chain_head = pos, head
        self._outbox_bytes, self._outbox_count = outbox_bytes, outbox_count
        return result

    def _drop_retired(self, records: list[ReportRecord], result: BatchResult) -> list[ReportRecord]:
        """Return ``records`` less those at or below their device's retired seq (their rows were removed by
        report retention: committed long ago), counted as duplicates."""
        keep: list[ReportRecord] = []
        for rec in records:
            if rec.seq <= self._retired.get(rec.device, 0):
                result.duplicates.append((rec.device, rec.seq))
            else:
                keep.append(rec)
        return keep

    def _drop_repeated_releases(self, records: list[ReportRecord], result: BatchResult) -> list[ReportRecord]:
        """Return ``records`` less the releases whose :func:`release_key` is stored, or earlier in
        ``records``, under another seq; record those in ``window_duplicates`` (inside the open transaction).

        The first release stored for a key wins. One lookup per batch through ``reports_device_w``
        (usually finding nothing); a record whose ``(device, seq)`` is already stored or recorded is left
        to the caller's ``INSERT OR IGNORE`` and counted as a plain duplicate.
        """
        conn = self._conn
        keys = [release_key(rec) for rec in records]
        pairs = list({(k[0], k[2]) for k in keys if k is not None})
        if not pairs:
            return records
        stored: dict[ReleaseKey, list[int]] = {}
        for device, typ, w, length, e, seq in select_rows(conn, SELECT_PERIODS, 2, pairs):
            # Stored aggregates (e '{}') are no releases. Retention may have removed a field from a
            # stored e: a release re-sent after that (a clock set back by more than the retention) is stored.
            fields = tuple(sorted(json.loads(e)))
            if fields:
                stored.setdefault((str(device), str(typ), int(w), int(length), fields), []).append(int(seq))
        first: dict[ReleaseKey, int] = {}  # key -> seq of its first release in this batch
        keep: list[ReportRecord] = []
        for rec, key in zip(records, keys):
            if key is None:
                keep.append(rec)
                continue
            seqs = stored.get(key)
            if seqs is not None:
                kept = min(seqs)
                if rec.seq in seqs:  # a retransmission of the stored report (a store from before
                    kept = rec.seq   # version 3 may hold several for one period)
            else:
                kept = first.setdefault(key, rec.seq)
            if kept == rec.seq or self._stored_seq(rec.device, rec.seq):
                keep.append(rec)  # new, or a plain duplicate for INSERT OR IGNORE
                continue
            cur = conn.execute(
                "INSERT OR IGNORE INTO window_duplicates (device, seq, kind, type, w, l, e, kept_seq, digest,"
                " received_at, gateway_id, link) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec.device, rec.seq, rec.kind, rec.type, rec.w, rec.l, dump_json(rec.e), kept, rec.digest,
                 rec.received_at, self.gateway_id, rec.link))
            if cur.rowcount == 1:
                result.window_duplicates.append(
                    WindowDuplicate(rec.device, rec.seq, rec.type, rec.w, rec.l, kept, key[4]))
            else:  # recorded before (re-sent, or twice in this batch)
                result.duplicates.append((rec.device, rec.seq))
        if result.window_duplicates:
            add_to_counter(conn, "duplicate_windows", len(result.window_duplicates))
        return keep

    def _stored_seq(self, device: str, seq: int) -> bool:
        """``(device, seq)`` is in ``reports`` (inside the open transaction)."""
        return self._conn.execute("SELECT 1 FROM reports WHERE device=? AND seq=?", (device, seq)).fetchone() is not None

    def _save_floors(self, floors: dict[str, int]) -> None:
        # Multi-row statements, not executemany: a batch carries a floor for every device it heard from
        # (hundreds), and a step per row gave the event loop the GIL back hundreds of times per commit.
        insert_rows(self._conn, *INSERT_FLOORS, sorted(floors.items()), tail=UPSERT_FLOORS)

    def save_floors(self, floors: dict[str, int]) -> None:
        """Persist ACK floors on their own (at shutdown)."""
        if not floors:
            return
        with self._writing("saving ACK floors"):
            self._save_floors(floors)

    def ack_floors(self) -> dict[str, int]:
        """Return the persisted ACK floor per device."""
        with self._reading("reading the ACK floors"):
            return {str(d): int(f) for d, f in self._conn.execute("SELECT device, floor FROM ack_floor")}

    def seqs_above(self, device: str, floor: int, limit: int) -> list[int]:
        """Return up to ``limit`` committed seqs of ``device`` above ``floor`` (stored or recorded as a
        window duplicate), ascending."""
        with self._reading("reading the seqs of %s" % device):
            rows = self._conn.execute("SELECT seq FROM reports WHERE device=? AND seq>? ORDER BY seq LIMIT ?",
                                      (device, floor, limit)).fetchall()
            rows += self._conn.execute("SELECT seq FROM window_duplicates WHERE device=? AND seq>? ORDER BY seq"
                                       " LIMIT ?", (device, floor, limit)).fetchall()
        return sorted(int(r[0]) for r in rows)[:limit]

    # -- outbox ---------------------------------------------------------------------------

    def _enqueue(self, queued: list[tuple[str, bytes]]) -> tuple[int, int, int]:
        """Append messages inside the open transaction, enforcing the cap. Returns (dropped, bytes, count)."""
        conn = self._conn
        total, count, dropped = self._outbox_bytes, self._outbox_count, 0
        for topic, payload in queued:
            if self._outbox_policy == "drop_newest" and total + len(payload) > self._outbox_max:
                dropped += 1
                continue
            conn.execute("INSERT INTO outbox (topic, payload, size) VALUES (?,?,?)", (topic, payload, len(payload)))
            total += len(payload)
            count += 1
        while total > self._outbox_max and count > 0:
            row = conn.execute("SELECT id, size FROM outbox ORDER BY id LIMIT 1").fetchone()
            conn.execute("DELETE FROM outbox WHERE id=?", (row[0],))
            total -= int(row[1])
            count -= 1
            dropped += 1
        if dropped:
            add_to_counter(conn, "outbox_dropped", dropped)
            log.debug("outbox at its cap of %d bytes: dropped %d message(s) (%s)", self._outbox_max, dropped,
                      self._outbox_policy)
        return dropped, total, count

    def outbox_peek(self, limit: int) -> list[OutboxMessage]:
        """Return up to ``limit`` oldest outbox messages, in order; none once the file was found gone
        (:meth:`check_file`): their removal once delivered would be refused, and they would be published
        again at every retry until a restart (the restarted store still holds them)."""
        if self._gone is not None:
            return []
        with self._reading("reading the outbox"):
            rows = self._conn.execute("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [OutboxMessage(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def outbox_delete(self, ids: list[int]) -> None:
        """Remove delivered messages."""
        self._outbox_remove(ids, "outbox delete")

    def outbox_refuse(self, ids: list[int]) -> None:
        """Remove messages the MQTT client refused to send (a permanent error, such as a topic too long),
        counting them in the persisted counter ``outbox_refused``; their reports stay stored."""
        self._outbox_remove(ids, "outbox refuse", counter="outbox_refused")

    def _outbox_remove(self, ids: list[int], what: str, *, counter: str | None = None) -> None:
        """Delete outbox messages ``ids`` (and count them in ``counter``, same transaction)."""
        if not ids:
            return
        with self._writing(what) as conn:
            marks = ",".join("?" * len(ids))
            row = conn.execute("SELECT COALESCE(SUM(size),0), COUNT(*) FROM outbox WHERE id IN (%s)" % marks, ids).fetchone()
            conn.execute("DELETE FROM outbox WHERE id IN (%s)" % marks, ids)
            if counter is not None:
                add_to_counter(conn, counter, int(row[1]))
        self._outbox_bytes -= int(row[0])
        self._outbox_count -= int(row[1])

    @property
    def outbox_depth(self) -> int:
        """Number of messages waiting in the outbox."""
        return self._outbox_count

    @property
    def outbox_bytes(self) -> int:
        """Payload bytes waiting in the outbox."""
        return self._outbox_bytes

    def counter(self, name: str) -> int:
        """Return a persisted counter (0 if never incremented)."""
        with self._reading("reading counter %s" % name):
            row = self._conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def save_meta(self, key: str, value: str) -> None:
        """Write one row of the ``meta`` table (``key`` -> ``value``) in its own transaction: what the public
        open data published (``published:`` keys, gateway.web.source; the web layer reads the store
        read-only and holds this writer) or the retention clock's state.

        Raises:
            StorageError: reason ``bad_value`` for another key (``schema_version`` is the schema's own,
                apply_schema), a key longer than :data:`MAX_META_KEY` or a value longer than
                :data:`MAX_META_VALUE` characters: a writer handed to the web layer cannot touch the rest.
        """
        if not (key.startswith(PUBLISHED_META_PREFIX) or key == RETENTION_META_KEY):
            raise StorageError("meta key %r is not one the gateway writes (%s*, %s)" % (
                key[:MAX_META_KEY], PUBLISHED_META_PREFIX, RETENTION_META_KEY), reason="bad_value")
        if len(key) > MAX_META_KEY or len(value) > MAX_META_VALUE:
            raise StorageError("meta %s: key or value too long (at most %d and %d characters)" % (
                key[:MAX_META_KEY], MAX_META_KEY, MAX_META_VALUE), reason="bad_value")
        with self._writing("saving meta %s" % key) as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
