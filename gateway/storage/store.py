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

import contextlib
import ctypes
import itertools
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from gateway.errors import StorageError
from gateway.retention_clock import META_KEY as RETENTION_META_KEY
from gateway.retention_clock import CLOCK_BACK_TOLERANCE_S, LargeRemovalHold
from gateway.storage import field_retention, provenance, row_retention
from gateway.storage.damage import StoreDamage, damaged_error, is_corrupt, sqlite_message
from gateway.storage.meta_keys import MAX_META_KEY, MAX_META_VALUE, PUBLISHED_META_PREFIX
from gateway.storage.queries import DATA_VERSION_COUNTER
from gateway.storage.salvage import salvage
from gateway.storage.shm_locks import checkpoint_running
from gateway.storage.schema import apply_schema
from gateway.storage.sqlite_uri import wal_has_content
from gateway.storage.store_files import (MainStamp, file_identities, file_problem, lock_store, main_stamp,
                                         make_private, overwritten, real_store_path, store_writer, unnamed,
                                         shm_file, shm_head, wal_aside_names, wal_frames_at_least)
from gateway.storage.store_kind import store_kind
from gateway.storage.wal_index import (WalState, check_wal_present, checkpoint_could_leave, checkpointed_since,
                                       wal_state)
from gateway.storage.write_hint import io_error, write_failure_hint

log = logging.getLogger(__name__)


class ReportRecord(NamedTuple):
    """A verified report ready to store (immutable; a NamedTuple because one is built per report).

    Attributes:
        device: device id. seq: report seq. kind: device kind. zone: registry zone at ingest.
        type: report type (``win``/``hour``/``day``/``alarm``/``boot``). w, l: period start and length.
        m: measurements. e: milli-epsilon spent. a: alarm codes. fw: firmware version or None.
        received_at: unix time of reception. link: ``serial:<port>`` or ``ble:<address>``.
        digest: hex SHA-256 of the authenticated frame (provenance).
    """

    device: str
    seq: int
    kind: str
    zone: str
    type: str
    w: int
    l: int  # noqa: E741 - protocol field name
    m: dict[str, int]
    e: dict[str, int]
    a: list[str]
    fw: str | None
    received_at: float
    link: str
    digest: str


# Report types whose releases are kept once per period (see release_key). ``alarm`` and ``boot`` are
# events, not periods: their ``w`` is the minute they happened in, and two fire/tip alarms (or two
# reboots) in one minute are two events, so every one is stored.
RELEASE_PERIOD_TYPES = frozenset({"win", "hour", "day"})

#: Size the ``-wal`` is cut back to after a checkpoint (``PRAGMA journal_size_limit``): a retention pass
#: that removes much grew it to ~52 MB, kept on a small box's SD card until the next clean stop.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024

#: WAL frames after which the store checkpoints, after a COMMIT (SQLite's own autocheckpoint default; it is off:
#: the gateway's checkpoints are its only writes to the main file, see ReportStore._overwrite_problem).
CHECKPOINT_FRAMES = 1000

ReleaseKey = tuple[str, str, int, int, tuple[str, ...]]


def release_key(rec: ReportRecord) -> ReleaseKey | None:
    """The key under which only the first stored report counts, or None when ``rec`` is always stored.

    Only releases are keyed: ``win``/``hour``/``day`` reports with a non-empty ``e`` (a noised value of
    a personal count, spending ε). Firmware after a time sync that set its clock back by more than
    STEP_BACK_S (protocol §3) releases the periods since again under new seqs; one published value
    per ``(device, type, w, l, fields of e)`` keeps open data single-valued (the device's ε ledger has
    counted both spends either way). ``l`` and the field names are part of the key: a streetlight sends
    its window aggregate (no ``e``) and, every ``release_every_s``, its ``mot`` release as ``win``
    reports that can share ``w`` and ``l``. Aggregates without ``e`` (lux, lamp, energy, fill, ...) are
    non-personal measurements and always stored: a second ``hour`` energy report after a step back
    within the hour carries energy counted nowhere else.
    """
    if not rec.e or rec.type not in RELEASE_PERIOD_TYPES:
        return None
    return (rec.device, rec.type, rec.w, rec.l, tuple(sorted(rec.e)))


class WindowDuplicate(NamedTuple):
    """A release not stored because its period's release was stored under another seq (a
    ``window_duplicates`` row, which also keeps its ``e`` spend map and digest).

    Attributes:
        device, seq: the report not stored. type, w, l: its period. fields: the fields of its ``e``.
        kept_seq: the seq of the release stored for that period (the first; it may be in the same batch).
    """

    device: str
    seq: int
    type: str
    w: int
    l: int  # noqa: E741 - protocol field name
    kept_seq: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class OutboxMessage:
    """One upstream message waiting for delivery."""

    id: int
    topic: str
    payload: bytes


@dataclass
class BatchResult:
    """Outcome of :meth:`ReportStore.insert_batch`.

    Attributes:
        inserted: (device, seq) pairs newly stored.
        duplicates: (device, seq) pairs that were already stored (or already recorded as a window duplicate).
        window_duplicates: releases newly recorded as not stored because their period's release was
            (their seqs are committed all the same: acknowledged, and known as duplicates when re-sent).
        outbox_dropped: messages dropped from the outbox because of its size cap.
    """

    inserted: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    window_duplicates: list[WindowDuplicate] = field(default_factory=list)
    outbox_dropped: int = 0


OutboxEncoder = Callable[[ReportRecord], tuple[str, bytes]]


def _add_to_counter(conn: sqlite3.Connection, name: str, n: int) -> None:
    """Add ``n`` to the persisted counter ``name`` (created at ``n``), in the caller's transaction."""
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                 (name, n, n))


class ReportStore:
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
            if unclean:
                _checkpoint_at_open(conn, self.path)
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
            if isinstance(exc, sqlite3.Error) and _is_corrupt(exc):
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
        self._log: WalState | None = self._log_state()
        self._stamp: MainStamp | None = main_stamp(self._files[0]) if self._files else None
        self._overwritten = False
        self._settled = True  # False while another program's checkpoint was found writing the file (_overwrite_problem)
        self._wal = real.with_name(real.name + "-wal")
        # The file found deleted or replaced (by a write or check_file on the store's thread): from then on
        # nothing is written (see check_file); and what salvage() said of the copy it made, or could not
        # (tried again at each check while it was only for want of room).
        self._gone: str | None = None
        self._salvaged: str | None = None
        self._salvage_again = True

    def file_problem(self) -> str | None:
        """Say so when the database file or its ``-wal`` was deleted or replaced since the store was opened.

        SQLite keeps writing to the files it opened: after ``rm reports.sqlite*`` (or a ``mv`` over it)
        commits still succeed, into files no longer at the path, and everything stored, old and new,
        is gone when the gateway stops, unless the file still has a name elsewhere (moved away, not
        deleted: the link count of the open file, found through ``/proc/self/fd``; the message says
        which). The database is looked up by the configured path, following
        symlinks, so a ``[storage] path`` symlink re-pointed at another file counts as replaced: the
        next start would open that other file. Cheap (a ``stat`` per file); safe from any thread. Once
        :meth:`check_file` (or a write) found it, the problem is kept, with the copy the store made of a
        file with no name left, even should the file be put back meanwhile: nothing is written until a restart.
        """
        if self._overwritten:
            return self._gone  # the file is still there, with content not the gateway's
        now = file_problem(self._files, self._salvaged)
        if now is None and self._gone is not None:
            return "%s; found earlier, so nothing more is written until the gateway is restarted" % self._gone
        return now

    @property
    def file_gone(self) -> bool:
        """Whether :meth:`check_file` (or a write) found the file deleted or replaced: every write is refused
        until the store is closed."""
        return self._gone is not None

    def check_file(self) -> str | None:
        """:meth:`file_problem`, and on the first problem found, stop writing for good: from then on every
        write is refused (``file_gone``), and SQLite no longer checkpoints (``wal_autocheckpoint=0``), so the
        file and its ``-wal`` stay as they were at the last commit; a file with no name left (deleted, or
        replaced by a ``mv`` over it) is then copied to ``<file>.salvaged`` beside the file itself (a symlinked
        path resolved; beside the link when the file's directory is gone; gateway.storage.salvage), which the
        message names: also when a file first moved away loses its name later, and again once there is room
        when there was none. On the store's thread (a write, or the gateway's watch of the store every few
        seconds), outside a transaction.
        """
        if self._gone is None:
            problem = file_problem(self._files) or self._foreign_problem()
            if problem is None:
                problem = self._overwrite_problem()
                self._overwritten = problem is not None
            if problem is None:
                return None
            self._gone = problem  # first: whatever follows fails, nothing more is written (nor checkpointed)
        if self._salvage_again and unnamed(self._files):
            self._salvaged, self._salvage_again = salvage(self._conn, self._files)
            self._gone = file_problem(self._files, self._salvaged) or self._gone
        return self.file_problem()

    def _overwrite_problem(self) -> str | None:
        """Whether the main file changed since the gateway's own last write to it (store_files.overwritten).
        On the store's thread only. The gateway writes the main file only in its own checkpoints
        (:meth:`_checkpoint`, :meth:`close`; ``wal_autocheckpoint=0``), compared right before and stamped right
        after; a COMMIT writes the ``-wal`` only, so a change found before or after one is another program's:
        a checkpoint another connection ran (the -shm says so, :meth:`_checkpointed_by_another`) is logged and
        excused; one still running (its lock held, gateway.storage.shm_locks) is left to the next look."""
        self._settled = True
        if self._stamp is None:
            return None
        for _ in range(3):
            running = checkpoint_running(self._shm)
            state = self._log_state()  # before the file: what a checkpoint wrote it says only after (_restamp)
            now = main_stamp(self._files[0])
            problem = None if now is None else overwritten(self._files[0], self._stamp, now)
            if problem is None or now is None:
                return problem
            if self._checkpointed_by_another(now, state):
                break
            if running or checkpoint_running(self._shm):
                # Another process's checkpoint is writing the file now and tells the -shm what it copied only as
                # it ends: the next look (the next commit, the watch) decides. The store's own checkpoint waits.
                self._settled = False
                return None
            # A checkpoint may have begun and ended between the two looks at its lock: looked at again.
        else:
            return problem
        log.warning("report store %s: another program checkpointed the store (e.g. sqlite3 \"PRAGMA wal_checkpoint\" "
                    "on the running store): harmless, its write went through SQLite's locks and the file is as that "
                    "checkpoint leaves it; don't write the running store from other programs", self.path)
        self._stamp = now
        return None

    def _log_state(self) -> WalState | None:
        """What the -shm says of the log now, read twice alike (a header being written reads torn); None
        when that cannot be told."""
        if self._shm is None:
            return None
        for _ in range(3):
            state = wal_state(shm_head(self._shm))
            if state is not None and state == wal_state(shm_head(self._shm)):
                return state
        return None

    def _checkpointed_by_another(self, now: MainStamp, state: WalState | None) -> bool:
        """Whether the main file's change from the stamp to ``now`` is a checkpoint another connection ran
        through SQLite's locks (the -shm's ``nBackfill`` grew, or the log was started over, between the store's
        own last checkpoint and ``state``, read just before ``now``; the file as one leaves it), not another
        program writing it; on True the log state is recorded anew. Another connection's commit is caught
        first (``PRAGMA data_version``)."""
        was = self._log
        if was is None or state is None or self._stamp is None or not checkpointed_since(was, state):
            return False
        if not checkpoint_could_leave(self._stamp.size, now.size, now.header, state, self._page_size):
            return False
        self._log = state
        return True

    def _version(self) -> int:
        """The writer's ``PRAGMA data_version``: it moves when another connection changed the -shm's log header
        since the writer last read it (a commit, or a checkpoint starting the log over)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _log_commits(self) -> int | None:
        """The -shm's count of commits (:class:`~gateway.storage.wal_index.WalState` ``commits``), None when it
        cannot be told."""
        state = self._log_state()
        return None if state is None else state.commits

    def _sample_commits(self) -> tuple[int, int | None]:
        """``PRAGMA data_version`` and the -shm's count of commits of the log as that version saw it: read between
        two equal versions (any change of the log header in between moves the second), a few tries; the count
        None when it cannot be told. Inside a write transaction neither can move."""
        version = self._version()
        for _ in range(3):
            commits = self._log_commits()
            again = self._version()
            if again == version:
                return version, commits
            version = again
        return version, None

    def _committed(self, before: int | None, wrote: bool) -> None:
        """Right after the store's own COMMIT: record the -shm's count of commits as it left it, for
        :meth:`_foreign_problem`. ``before``: the count read under the write lock just before the COMMIT;
        ``wrote``: whether the transaction changed rows (only then does its COMMIT write a commit frame)."""
        try:
            seen, commits = self._sample_commits()
        except sqlite3.Error:
            seen, commits = None, None
        if seen == self._data_version and commits is not None:
            self._commits = commits  # no other connection changed the log since the COMMIT: exactly its count
        else:  # another program's checkpoint (or commit) landed right after the COMMIT: counted from before it
            self._commits = None if before is None else (before + (1 if wrote else 0)) & 0xFFFFFFFF

    def _commit_version(self) -> int:
        """``PRAGMA data_version`` less its moves that were other programs' checkpoints starting the log over:
        it moves only when another connection committed."""
        if self._foreign_problem() is None:
            return self._data_version - self._excused
        return self._version() - self._excused

    def _foreign_problem(self) -> str | None:
        """Whether another connection committed to the store since the last look: another program wrote the
        running store through SQLite (an operator's ``sqlite3 reports.sqlite ".restore backup"``). Every other
        connection of the gateway's is read-only.

        ``PRAGMA data_version`` of the writer moves when another connection commits, and also when another
        program's ``wal_checkpoint(TRUNCATE)`` starts the log over (which writes nothing but what the gateway
        committed): told apart by the -shm's count of commits (``iChange``), which only a commit moves. Equal to
        the count the store's own last commit left, the move is that checkpoint: logged, and nothing refused."""
        try:
            version = self._version()
            if version == self._data_version:
                return None
            seen, commits = self._sample_commits()
        except sqlite3.Error:
            return None  # the next write says what is wrong
        if commits is not None and commits == self._commits:
            log.info("report store %s: another program started its -wal over, checkpointed (e.g. sqlite3 \"PRAGMA "
                     "wal_checkpoint(TRUNCATE)\" on the running store): harmless, nothing but the gateway's own "
                     "commits is in it; don't write the running store from other programs", self.path)
            self._excused += seen - self._data_version
            self._data_version = seen
            return None
        return ("report store file %s was written by another program while the gateway ran (another SQLite "
                "connection committed to it, e.g. sqlite3 \".restore\" or a DELETE run on the running store): the "
                "gateway's view of it (replay window, provenance chain) no longer holds, so it writes nothing more "
                "into it; what that program wrote stays (it went through SQLite's locks: the file and its -wal "
                "agree, and the stop checkpoints them as usual). Never write a running gateway's store: stop the "
                "gateway, then restore as docs/gateway.md, Restoring a backup says, and start it" % self.path)

    def _restamp(self) -> None:
        """Record the main file as the gateway's own checkpoint left it, and the log before it: a checkpoint
        of another program writes the file first and says so in the -shm as it ends, so a write of one found
        in the file later than this stamp is told by a log that moved on since (_checkpointed_by_another)."""
        if self._stamp is not None:
            self._log = self._log_state()
            self._stamp = main_stamp(self._files[0]) or self._stamp

    def _after_commit(self) -> bool:
        """Right after a COMMIT: return True when the main file changed meanwhile (a cp landing during the
        COMMIT: the caller must not acknowledge what it committed; the -wal is set aside at the stop); else
        checkpoint once the WAL holds :data:`CHECKPOINT_FRAMES` frames (what ``wal_autocheckpoint`` did)."""
        if self._overwrite_problem() is not None:
            return True
        if self._settled and wal_frames_at_least(self._wal, self._page_size, CHECKPOINT_FRAMES):
            self._checkpoint()
        return False

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint of the WAL into the main file (the caller compared the file just before), and
        the stamp taken again right after. One a reader's snapshot keeps from finishing is tried again after the
        next COMMIT, as SQLite's autocheckpoint did; the -wal keeps every commit meanwhile."""
        try:
            _busy, frames, moved = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
        except sqlite3.Error as exc:
            log.warning("report store %s: checkpoint failed: %s; the -wal keeps every commit (tried again after the "
                        "next commit)", self.path, exc)
            self._restamp()
            return
        self._restamp()
        stamp = self._stamp
        if 0 < frames == moved and stamp is not None and stamp.size != pages * self._page_size:
            # A whole checkpoint leaves the file exactly the database's size (SQLite truncates it to that): a cp
            # landing during the checkpoint, after the compare before it, can leave another size (found here).
            self._stamp = stamp._replace(size=-1)  # the next look (check_file, the next COMMIT) says so

    def _gone_error(self, what: str) -> StorageError:
        """The refusal of a write (``what``) once :meth:`check_file` found the file gone."""
        return StorageError("%s refused, nothing more is committed or acknowledged until the gateway is restarted "
                            "(devices keep their reports): %s" % (what, self.file_problem()), reason="file_gone")

    def close(self) -> None:
        """Checkpoint the WAL into the database file, close, and release the store for another writer.

        After a clean stop ``reports.sqlite`` alone holds everything (a backup that copies only that
        file is complete); SQLite's own checkpoint-on-close is skipped while a reader is still open.
        When the checkpoint fails (a full disk) committed reports stay in the ``-wal`` only, and the
        main file may be half-written; the WARNING says both files belong together until the next start.
        """
        # A cp over the file since the last look (the 5 s watch, a commit): the checkpoint below would write
        # the -wal into the copy. Looked at first, as the watch does.
        before = self._gone
        try:
            problem = self.check_file()
        except Exception as exc:  # noqa: BLE001 - the stop goes on; a salvage copy failing must not keep it open
            problem = None
            log.warning("report store %s: the look at the file before the stop's checkpoint failed: %s", self.path, exc)
        if before is None and problem is not None:
            log.error("%s", problem)  # found at the stop: no watch is left to say it
        if self._overwritten:
            self._close_overwritten()
            return
        try:
            # A reader mid-query (another process: export-log, an operator's sqlite3) blocks the
            # checkpoint; wait briefly, not the whole busy timeout, and say so: nothing is lost (the
            # WAL is replayed at the next open), but a copy of the database file alone is incomplete.
            self._conn.execute("PRAGMA busy_timeout=500")
            busy, wal_pages, _moved = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                log.warning("report store %s: another process was reading it at close, so %d WAL page(s) stay "
                            "in %s-wal (replayed at the next start); back up both files, or use sqlite3 .backup",
                            self.path, wal_pages, self.path.name)
        except sqlite3.Error as exc:
            # Nothing is lost (the next start replays the -wal), but the -wal now holds committed,
            # acknowledged reports, and a checkpoint cut off part-way may have left the main file
            # half-written: alone it is incomplete, or reads as damaged.
            log.warning("report store %s: WAL not checkpointed at close: %s; committed reports stay in %s-wal "
                        "(replayed at the next start, nothing is lost), and %s alone is incomplete and may read as "
                        "damaged: keep both files together, never delete or move the -wal apart, and back up both "
                        "(or use sqlite3 .backup)", self.path, exc, self.path.name, self.path.name)
        finally:
            self._conn.close()
            os.close(self._lock_fd)

    def _close_overwritten(self) -> None:
        """Close a store whose file was overwritten in place without checkpointing its ``-wal`` into it, and
        move that ``-wal`` and ``-shm`` aside: they belong to the content that was overwritten, and SQLite would
        replay them onto whatever the file holds now at the next open (a mix of two stores, damaged).

        SQLite checkpoints at the close of the last connection that can take the file's exclusive lock: a
        read-only connection of this process holding a read lock meanwhile prevents it (and, read-only,
        never checkpoints or removes the ``-wal`` itself). When that lock cannot be had (the copy is no
        database SQLite can read, say), the writer is not closed at all: it is kept, never freed, until the
        process ends (as a kill would leave it; the ``.lock`` stays held too, so nothing in this process opens
        the store again meanwhile). Renaming the ``-wal`` first would not help: SQLite checkpoints through the
        descriptor it holds."""
        real = self._real
        blocker: sqlite3.Connection | None = None
        try:
            blocker = sqlite3.connect(real.as_uri() + "?mode=ro", uri=True)
            blocker.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # takes the read lock it keeps
        except sqlite3.Error as exc:
            if blocker is not None:
                blocker.close()
                blocker = None
            log.error("report store %s: could not hold off SQLite's checkpoint at close (%s): the store is left "
                      "open until the gateway's process ends, so nothing is written into the copy", self.path, exc)
            keep_open_until_exit(self._conn)
        if blocker is not None:
            try:
                self._conn.close()
            finally:
                blocker.close()
                os.close(self._lock_fd)
        moved = []
        # The -wal first: a stop cut off between the two leaves a -shm alone, which SQLite (a sqlite3 shell,
        # an older gateway) rebuilds and ignores; a -wal alone would be replayed onto the copy. The next start
        # refuses either way while a .overwritten file is there (wal_index.check_no_overwritten).
        for src, dst in zip((self._wal, real.with_name(real.name + "-shm")), wal_aside_names(real)):
            try:
                os.rename(src, dst)
                moved.append(str(dst))
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("report store %s: could not move %s aside (%s): move it aside before the next start, "
                          "SQLite would replay it onto the file copied in", self.path, src, exc)
        log.warning("report store %s was overwritten in place while the gateway ran: closed without checkpointing "
                    "into it; its -wal and -shm were kept aside (%s); the file holds what was copied over it; the "
                    "next start refuses until they are put back (the file was only touched) or moved away (it "
                    "was overwritten): the ERROR logged when it was found says which fields changed",
                    self.path, ", ".join(moved) or "none was left")

    # -- errors ---------------------------------------------------------------------------

    @property
    def damage(self) -> StoreDamage:
        """Where damage found in this store is recorded; once set, every write refuses (``corrupt``)."""
        return self._damage

    def mark_damaged(self, problem: str) -> bool:
        """Record damage found outside this store's own calls (a read connection, a ``quick_check``);
        return True for the first. From then on nothing is written: reports are no longer committed (nor
        acknowledged), nor retention, meta rows, ACK floors or outbox removals (only :meth:`close`'s checkpoint)."""
        return self.damage.report(problem)

    def _corrupt(self, exc: sqlite3.Error, what: str | None = None) -> StorageError:
        err = damaged_error(self.path, exc, what)
        self.damage.report(str(err))  # the gateway logs the first (service._watch_store) and says it in /healthz
        return err

    def _error(self, what: str, exc: sqlite3.Error, reason: str) -> StorageError:
        """The StorageError for ``exc`` raised while doing ``what``: ``corrupt`` when the file is damaged."""
        if _is_corrupt(exc):
            return self._corrupt(exc, what)
        hint = write_failure_hint(self._real) if io_error(exc) else ""
        return StorageError("%s failed: %s%s" % (what, exc, hint), reason=reason, sqlite=sqlite_message(exc))

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(what, exc, "read_failed") from exc

    def _refuse_if_damaged(self, what: str) -> None:
        """Raise ``corrupt`` once the store is known damaged: writing into a damaged B-tree can spread the
        damage to what is still sound (an UPDATE with secure_delete rewrites whole pages)."""
        damaged = self._damage.problem
        if damaged is not None:
            raise StorageError("%s refused: the store is damaged, nothing more is written until a restart on a "
                               "recovered or restored file: %s" % (what, damaged), reason="corrupt")

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on an error the transaction is rolled back, unless SQLite
        already did (a full disk), and a sqlite3 error is a ``write_failed`` StorageError.

        Raises:
            StorageError: reason ``corrupt`` before anything is begun when the store is known damaged;
                ``file_gone`` when the file was found deleted or replaced, before anything is begun or,
                found now, instead of the commit (rolled back; see :meth:`check_file`).
        """
        self._refuse_if_damaged(what)
        if self._gone is not None:
            raise self._gone_error(what)
        conn = self._conn
        gone = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            changes = conn.total_changes
            yield conn
            # into a file that is gone, a commit could change it under a copy being made (and auto-checkpoint)
            gone = (file_problem(self._files) is not None or self._overwrite_problem() is not None
                    or self._foreign_problem() is not None)
            commits = None if gone else self._log_commits()  # under the write lock: no other commit, no restart
            conn.execute("ROLLBACK" if gone else "COMMIT")
            if not gone:
                self._committed(commits, conn.total_changes != changes)
                gone = self._after_commit()
        except BaseException as exc:
            _roll_back(conn, what)
            if isinstance(exc, sqlite3.Error):
                raise self._error(what, exc, "write_failed") from exc
            raise
        if gone:
            self.check_file()
            raise self._gone_error(what)

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
            chain: list[tuple[Any, ...]] = []
            for i, rec in enumerate(records):
                rid = top + 1 + i if ids is None else ids.pop((rec.device, rec.seq), None)
                if rid is None:  # stored before, or earlier in this batch
                    result.duplicates.append((rec.device, rec.seq))
                    continue
                if rec.a:  # alarms only: no generator per report for the usual empty list
                    alarms.extend((rid, rec.device, rec.kind, rec.zone, code, rec.w, rec.seq) for code in rec.a)
                new_hash = provenance.entry_hash(device=rec.device, seq=rec.seq, gateway=gw, digest=rec.digest,
                                                 prev=head)
                pos += 1
                chain.append((pos, rec.device, rec.seq, gw, rec.digest, head, new_hash))
                head = new_hash
                if self._encoder is not None:
                    queued.append(self._encoder(rec))
                result.inserted.append((rec.device, rec.seq))
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
            _roll_back(conn, what)
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
        for device, typ, w, length, e, seq in select_rows(conn, _SELECT_PERIODS, 2, pairs):
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
                (rec.device, rec.seq, rec.kind, rec.type, rec.w, rec.l, _dump(rec.e), kept, rec.digest,
                 rec.received_at, self.gateway_id, rec.link))
            if cur.rowcount == 1:
                result.window_duplicates.append(
                    WindowDuplicate(rec.device, rec.seq, rec.type, rec.w, rec.l, kept, key[4]))
            else:  # recorded before (re-sent, or twice in this batch)
                result.duplicates.append((rec.device, rec.seq))
        if result.window_duplicates:
            _add_to_counter(conn, "duplicate_windows", len(result.window_duplicates))
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
            _add_to_counter(conn, "outbox_dropped", dropped)
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
                _add_to_counter(conn, counter, int(row[1]))
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

    # -- retention ------------------------------------------------------------------------

    def last_received_at(self) -> float | None:
        """``received_at`` of the last stored report (the highest id: the last one inserted), or None when
        none is stored; what retention checks the gateway clock against (gateway/retention_clock.py)."""
        with self._reading("reading the last reception time"):
            row = self._conn.execute("SELECT received_at FROM reports ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def retention_meta(self) -> str | None:
        """The ``meta`` row the retention clock checks saved (gateway.retention_clock.META_KEY), or None."""
        with self._reading("reading the retention state"):
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (RETENTION_META_KEY,)).fetchone()
        return None if row is None else str(row[0])

    def apply_retention(self, retention_days: dict[tuple[str, str], int], now: float,
                        hold: LargeRemovalHold | None = None) -> int:
        """A whole retention pass in one call: :meth:`begin_retention`, then :meth:`retention_batch` until it is
        done; return the readings (``m`` values) removed (0 when a field's large removal held the pass).

        The gateway runs each batch as its own job on the store's thread (gateway/service.py), so ingest waits
        for one batch at most; this is for callers that own the store (tools, tests).

        Args:
            retention_days, now, hold: as for :meth:`begin_retention`.
        """
        rows = self.begin_retention(retention_days, now, hold)
        while self.retention_batch(rows):
            pass
        return rows.readings

    def resume_retention(self, checked: float | None = None) -> row_retention.RowPass | None:
        """The pass a stop (or a failure) cut off after it was decided, to finish with :meth:`retention_batch`
        before a new one, or None (gateway/storage/field_retention.py: a pass cut off is finished as decided).

        It goes by its saved removal time and retention, over the reports stored when it began, and its
        values are removed whatever the hold would say now (it said so when they were counted, or the pass
        had none); its report rows are held if they were. A saved row that cannot be read is logged and
        removed (the next pass decides afresh, the hold applying as to any first pass of a run).

        Args:
            checked: the removal time the clock checks gave this start (gateway/retention_clock.py); None for
                callers that own the store (the saved time as is). The pass removes by the earlier of the two:
                never by a clock later than the checked one. A saved time later than it by more than
                :data:`~gateway.retention_clock.CLOCK_BACK_TOLERANCE_S` was decided by a clock that was ahead
                (values inside their retention would go): the saved pass is dropped with a WARNING, and the
                next pass decides afresh, the hold applying.
        """
        with self._reading("reading the retention pass in progress"):
            row = self._conn.execute("SELECT value FROM meta WHERE key=?",
                                     (field_retention.PASS_META_KEY,)).fetchone()
        if row is None:
            return None
        try:
            now, days, top, rows_held = field_retention.parse_pending(str(row[0]))
            saved_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
            if checked is not None and now > checked + CLOCK_BACK_TOLERANCE_S:
                log.warning("retention: the pass cut off before (meta %s) is dropped: its removal time (%s) is later "
                            "than this start's checked one by %.1f days (it was decided by a clock that was ahead, "
                            "and would remove values inside their retention); a new pass decides afresh",
                            field_retention.PASS_META_KEY, saved_at, (now - checked) / 86400)
                self._drop_saved_pass()
                return None
            if checked is not None:
                now = min(now, checked)
            rows = self._plan_retention(days, now, top)
            by = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
        except (ValueError, OverflowError) as exc:  # (parse_pending bounds what planning needs; belt and braces)
            log.warning("retention: the pass in progress saved before (meta %s) cannot be read (%s); a new pass "
                        "decides afresh", field_retention.PASS_META_KEY, exc)
            self._drop_saved_pass()
            return None
        assert rows.values is not None
        rows.values.saved, rows.values.rows_held = True, rows_held
        log.info("retention: finishing the pass cut off before (removal time %s%s, reports up to id %d)", by,
                 "" if by == saved_at else "; saved: %s" % saved_at, top)
        return rows

    def _drop_saved_pass(self) -> None:
        with self._writing("clearing the retention pass in progress") as conn:
            conn.execute("DELETE FROM meta WHERE key=?", (field_retention.PASS_META_KEY,))

    def remove_values(self, retention_days: dict[tuple[str, str], int], now: float,
                      hold: LargeRemovalHold | None = None) -> row_retention.RowPass | None:
        """The field part of a pass in one call (:meth:`begin_retention`, then :meth:`retention_batch` until the
        values are removed); return the row part (for :meth:`remove_rows_batch`), or None when a field's large
        removal held the whole pass (nothing was removed). For callers that own the store."""
        rows = self.begin_retention(retention_days, now, hold)
        assert rows.values is not None
        while rows.values.stage not in ("rows", "held", "done") and self.retention_batch(rows):
            pass
        return None if rows.values.stage == "held" else rows

    def begin_retention(self, retention_days: dict[tuple[str, str], int], now: float,
                        hold: LargeRemovalHold | None = None) -> row_retention.RowPass:
        """Start a retention pass: return it, to run a job at a time with :meth:`retention_batch` (nothing is
        read or removed yet beyond the newest report id, which bounds the pass).

        The pass removes every field value older than its retention from ``m`` and ``e`` (and from the ``e`` of
        ``window_duplicates``), then the report rows left (``remove_rows_batch``). A report row (device, type,
        period, reception time, link, alarm codes, frame digest) of kind K goes once its ``m`` and ``e`` are
        empty, its period and reception are older than the longest retention of K's fields and its seq is at or
        below its device's ACK floor (gateway/storage/row_retention.py, which says what is kept so that replay
        protection, report ids and the provenance chain hold). Values are counted before any is removed
        (gateway/storage/field_retention.py): a field losing more than :data:`LARGE_REMOVAL` of what is stored
        is logged at WARNING once its values are removed (a retention just shortened, or a clock to check), and
        so is a kind's rows when they are counted (a hold is given). The pass's ``readings`` are the ``m``
        values removed.

        Args:
            retention_days: ``(kind, field) -> days`` (policy.json values, possibly shortened by config).
            now: the time to remove by (the gateway's clock, checked by gateway/retention_clock.py).
            hold: when given, a field (not in ``hold.exempt``) that would lose more than ``hold.share`` of its
                stored values, and at least ``hold.min_values``, holds the whole pass: nothing is removed, the
                pass ends with its ``values.stage`` ``held`` and ``hold.held`` names what would have been (the
                caller logs and reports it). A kind's report rows count the same way (exempt when a field of the
                kind is), but hold only the row part: the field values are removed all the same (a privacy step,
                never held for rows), and the row part is ``held`` (its lines are in ``hold.held`` too).
        """
        with self._reading("retention"):
            top = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()[0])
        rows = self._plan_retention(retention_days, now, top)
        rows.hold = hold
        if hold is None:  # runs whatever it removes: a stop part-way must not leave the rest to a hold
            self._save_pass(rows)
        return rows

    def _plan_retention(self, retention_days: dict[tuple[str, str], int], now: float,
                        top: int) -> row_retention.RowPass:
        fields: list[field_retention.FieldPlan] = []
        for (kind, fld), days in sorted(retention_days.items()):
            if '"' in fld:  # no reported field is named so (the policy allowlist), and a path cannot quote it
                log.warning("retention: field name %r cannot occur in a report; skipped", fld)
                continue
            # quoted: a field name is one key, never a path
            fields.append((kind, fld, int(now) - days * 86400, days, '$."%s"' % fld))
        report_days = row_retention.row_retention_days(retention_days)
        self._report_days = report_days  # committed_digest: a retired seq's frame newer than this is no re-send
        cutoffs = {kind: int(now) - days * 86400 for kind, days in sorted(report_days.items())}
        rows = row_retention.RowPass(cutoffs=cutoffs, keep_id=top)
        rows.values = field_retention.FieldPass(fields=fields, top=top, now=now)
        rows.retention_days = dict(retention_days)
        return rows

    def _save_pass(self, rows: row_retention.RowPass) -> None:
        """Save the pass ``rows`` as in progress (what it decided: its report rows held or not)."""
        assert rows.values is not None
        value = field_retention.pending_row(rows.retention_days, rows.values.now, rows.values.top, rows.held)
        with self._writing("saving the retention pass in progress") as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (field_retention.PASS_META_KEY, value))
        rows.values.saved = True

    def _end_pass(self, rows: row_retention.RowPass) -> None:
        """The pass is through (or held): it is no longer in progress."""
        values = rows.values
        if values is not None and values.saved:
            with self._writing("clearing the retention pass in progress") as conn:
                conn.execute("DELETE FROM meta WHERE key=?", (field_retention.PASS_META_KEY,))
            values.saved = False

    def _replan(self, rows: row_retention.RowPass, current: dict[tuple[str, str], int]) -> None:
        """Follow a retention made longer (or removed) since the pass began: its field's values are no longer
        removed, its kind's report rows go by the longer retention. A shorter one waits for the next pass."""
        values = rows.values
        assert values is not None
        longer = [(kind, fld) for kind, fld, _c, days, _p in values.fields
                  if current.get((kind, fld)) is None or current[(kind, fld)] > days]
        if not longer:
            return
        for kind, fld in longer:
            log.info("retention: %s.%s is kept %s now (it was %d day(s) when the pass began); this pass removes no "
                     "more of it", kind, fld, "%d day(s)" % current[(kind, fld)] if (kind, fld) in current
                     else "without a retention", rows.retention_days[(kind, fld)])
            values.kept.append("%s.%s" % (kind, fld))
            if (kind, fld) in current:
                rows.retention_days[(kind, fld)] = current[(kind, fld)]
            else:
                del rows.retention_days[(kind, fld)]
        values.fields = [f for f in values.fields if (f[0], f[1]) not in longer]
        row_days = row_retention.row_retention_days(rows.retention_days)
        for kind in {k for k, _f in longer}:
            if kind in rows.cutoffs:  # never later than before (the index of the kind being removed stays)
                rows.cutoffs[kind] = min(rows.cutoffs[kind], int(values.now) - row_days[kind] * 86400
                                         if kind in row_days else row_retention.START[0])
        if values.saved:
            self._save_pass(rows)

    def retention_batch(self, rows: row_retention.RowPass, current: dict[tuple[str, str], int] | None = None) -> bool:
        """Run the next job of the pass ``rows`` (:meth:`begin_retention`): one bounded transaction (see
        gateway/storage/field_retention.py for the stages); return whether more is left (call again).

        Args:
            rows: the pass.
            current: the effective retention now (the admin API may change it during a pass): a field whose
                retention is longer now (or that has none) loses no more values in this pass.
        """
        if rows.values is not None and current is not None:
            self._replan(rows, current)
        more = self._retention_step(rows)
        if not more:
            self._end_pass(rows)
        return more

    def _retention_step(self, rows: row_retention.RowPass) -> bool:
        values = rows.values
        if values is None or values.stage == "rows":
            if rows.done:
                if values is not None:
                    values.stage = "done"
                return False
            return self.remove_rows_batch(rows)
        if values.stage in ("held", "done"):
            return False
        if values.stage == "floors":
            with self._writing("retention (ACK floors)") as conn:
                next_device = field_retention.extend_floors(conn, values.floor_device)
            if next_device is None:
                with self._reading("retention (data version)"):
                    version = self._commit_version()
                if self._cleared.data_version not in (None, version):
                    # another connection committed since the last pass (a backup merged into the running
                    # store: old ids and old w, which no search finds): what was cleared is no longer known
                    log.info("retention: the store was written by another connection since the last pass;"
                             " this pass counts every stored value")
                    self._cleared = field_retention.Cleared()
                self._cleared.data_version = version
                # Count the whole store where the hold applies (its share needs every stored value) or no
                # pass of this open store went through; else find what expires since the last one.
                find = rows.hold is None and self._cleared.covers(values.fields)
                values.stage = "find" if find else "count"
                if find:
                    with self._reading("retention (finding)"):
                        self._cleared.periods(field_retention.longest_period(
                            self._conn, self._cleared.upto, values.top), values.top)
                    values.searches = field_retention.plan_searches(values.fields, self._cleared, values.top)
            else:
                values.floor_device = next_device
        elif values.stage == "count":
            with self._reading("retention (counting)"):
                hi = field_retention.next_range(self._conn, "reports", values.after, values.top,
                                                field_retention.COUNT_BATCH)
                if hi is not None and self._count_range(rows, values.after, hi):
                    values.todo.append((values.after, hi))
            if hi is None:
                self._cleared.periods(values.longest, values.top)
                self._decide_hold(rows)
            else:
                values.after = hi
        elif values.stage == "find":
            if values.searches:
                with self._reading("retention (finding)"):
                    found, through = field_retention.find_values(self._conn, values.searches[0],
                                                                 field_retention.COUNT_BATCH, values.counts)
                values.found_gap = field_retention.add_found(values.found, values.found_gap, found)
                if through:
                    del values.searches[0]
            else:
                values.todo = field_retention.found_ranges(values.found, values.found_gap, values.top)
                values.found = set()
                live = {(f[0], f[1]) for f in values.fields}  # not a field kept longer since: it loses nothing
                values.share = {k: field_retention.share_threshold(old, LARGE_REMOVAL)
                                for k, (_stored, old) in values.counts.items() if old and k in live}
                values.stage, values.after = "share", values.top
                # the first range: about what the largest threshold needs; each next one twice as large
                values.share_rows = min(field_retention.COUNT_BATCH, 2 * max(values.share.values(), default=0) + 100)
        elif values.stage == "share":
            # the values stored of each field losing some, newest reports first, until there are enough of them
            # that what it loses is no large share (or every report was counted: the share is exact)
            lo = None
            live = {(f[0], f[1]) for f in values.fields}
            for key in [k for k in values.share if k not in live]:  # kept longer since: its share is not needed
                del values.share[key]
            if values.share:
                with self._reading("retention (counting)"):
                    lo = field_retention.previous_range(self._conn, "reports", values.after, values.share_rows)
                    values.share_rows = min(field_retention.COUNT_BATCH, 2 * values.share_rows)
                    if lo is not None:
                        got: dict[tuple[str, str], list[int]] = {}
                        field_retention.count_values(self._conn, [f for f in values.fields if (f[0], f[1])
                                                                  in values.share], lo, values.after, got)
                        for key, (stored, _old) in got.items():
                            values.counts[key][0] += stored
                            if values.counts[key][0] >= values.share[key]:
                                del values.share[key]
            if lo is None or not values.share:
                self._decide_hold(rows)
            else:
                values.after = lo
        elif values.stage == "values":
            while values.todo and values.after >= values.todo[0][1]:
                del values.todo[0]
            with self._writing("retention") as conn:
                hi = None
                while values.todo and hi is None:  # the next rows of a range the count found values to remove in
                    values.after = max(values.after, values.todo[0][0])
                    hi = field_retention.next_range(conn, "reports", values.after, values.todo[0][1],
                                                    field_retention.FIELD_BATCH)
                    if hi is None:
                        del values.todo[0]
                if hi is not None:
                    readings, changed = field_retention.remove_values(conn, values.fields, values.after, hi)
                    if changed:
                        # Stored values changed without a new report: readers that name their answers by the
                        # newest report (the open-data CSV's ETag) also name them by this version. Same
                        # transaction as the removal, so no reader sees one without the other.
                        _add_to_counter(conn, DATA_VERSION_COUNTER, 1)
            if hi is None:
                self._cleared.passed(values.fields, values.top)  # every value past its cut-off is gone
                values.stage, values.after = "duplicates", 0
                with self._reading("retention"):
                    values.duplicates_top = int(self._conn.execute(
                        "SELECT COALESCE(MAX(rowid), 0) FROM window_duplicates").fetchone()[0])
            else:
                values.after = hi
                rows.readings += readings
        elif values.stage == "duplicates":
            with self._writing("retention (window duplicates' values)") as conn:
                hi = field_retention.next_range(conn, "window_duplicates", values.after, values.duplicates_top,
                                                field_retention.FIELD_BATCH)
                if hi is not None and field_retention.remove_duplicate_values(conn, values.fields, values.after, hi):
                    _add_to_counter(conn, DATA_VERSION_COUNTER, 1)  # as for the reports' values
            if hi is None:
                values.stage = "rows"
                self._log_values_removed(rows)
            else:
                values.after = hi
        return True

    def _count_range(self, rows: row_retention.RowPass, lo: int, hi: int) -> bool:
        """Count what the pass removes from reports ``lo < id <= hi``: every field's values, and the report rows
        of each kind only when a hold may apply (each kind's row count reads its rows again); return whether
        the range holds values to remove."""
        values = rows.values
        assert values is not None
        found = field_retention.count_values(self._conn, values.fields, lo, hi, values.counts)
        longest = field_retention.longest_period(self._conn, lo, hi)
        if longest is not None:
            values.longest = longest if values.longest is None else max(values.longest, longest)
        hold = rows.hold
        if hold is None:
            return found
        exempt_kinds = {k for k, _f in hold.exempt}
        for kind, cutoff in rows.cutoffs.items():
            if kind in exempt_kinds:
                continue
            old, held = row_retention.count_old_rows(
                self._conn, kind, cutoff, sorted(f for k, f in rows.retention_days if k == kind), (lo, hi))
            got = values.row_counts.setdefault(kind, [0, 0])
            got[0] += old
            got[1] += held
        return found

    def _decide_hold(self, rows: row_retention.RowPass) -> None:
        """The count is complete: hold the whole pass (a field), or only its row part (a kind's rows), or go on
        to remove the values."""
        values, hold = rows.values, rows.hold
        assert values is not None
        large: list[str] = []
        large_rows: list[str] = []
        held_fields: list[str] = []
        held_rows: list[str] = []
        for kind, fld, cutoff, days, _path in values.fields:
            held, old = values.counts.get((kind, fld), [0, 0])
            what = "%d of %d %s.%s value(s) (retention %d day(s): before %s)" % (
                old, held, kind, fld, days, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(cutoff)))
            if (hold is not None and (kind, fld) not in hold.exempt and old >= hold.min_values
                    and old > hold.share * held):
                held_fields.append(what)
            if old and old > LARGE_REMOVAL * held:
                large.append(what)
        row_days = row_retention.row_retention_days(rows.retention_days)
        for kind, (old, held) in sorted(values.row_counts.items()):
            assert hold is not None  # rows are counted only then
            what = "%d of %d %s report row(s) (report retention %d day(s): before %s)" % (
                old, held, kind, row_days[kind], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(rows.cutoffs[kind])))
            if old >= hold.min_values and old > hold.share * held:
                held_rows.append(what)
            if old and old > LARGE_REMOVAL * held:
                large_rows.append(what)
        if values.rows_held is not None:  # a pass finished after a cut: as decided when it was counted
            held_rows = list(values.rows_held)
        if hold is not None:
            hold.held.extend(held_fields + held_rows)
        if held_fields:
            values.stage = "held"  # a field held the whole pass before anything changed
            return
        rows.held = held_rows
        rows.large = ([] if held_rows else large_rows)
        rows.large_fields = large
        values.stage, values.after = "values", 0
        if not values.saved:  # decided: a stop from now on leaves the rest to finish as decided, not held again
            self._save_pass(rows)

    def _log_values_removed(self, rows: row_retention.RowPass) -> None:
        """The field part is done: say what it removed (a large share at WARNING)."""
        large, large_rows = rows.large_fields, rows.large
        about = [("that field" if len(large) == 1 else "those fields") if large else "",
                 ("the rows of that kind" if len(large_rows) == 1 else "the rows of those kinds") if large_rows else ""]
        if any(about):
            log.warning("retention removed %s: more than %d %% of what was stored of %s; check the retention "
                        "settings and the gateway clock (date -u) if that was not expected",
                        "; ".join(large + large_rows), LARGE_REMOVAL * 100, " and ".join(x for x in about if x))
        if rows.readings:
            log.info("retention removed %d reading(s)", rows.readings)

    def remove_rows_batch(self, rows: row_retention.RowPass) -> bool:
        """Remove the next batch of the row part ``rows`` of a retention pass (:meth:`remove_values`), one
        transaction of at most :data:`gateway.storage.row_retention.ROW_BATCH` rows (their alarms with them),
        or, once every kind is through, the ``window_duplicates`` rows whose release is gone; return whether
        more is left (call again). A held row part removes nothing.

        Raises:
            ValueError: the field part of ``rows`` (:meth:`retention_batch`) is not done yet.
        """
        if rows.values is not None and rows.values.stage not in ("rows", "done"):
            if rows.values.stage == "held":
                return False
            raise ValueError("the row part of a retention pass runs once its field part is done (stage %s)"
                             % rows.values.stage)
        if rows.done:
            return False
        kinds = sorted(rows.cutoffs)
        if rows.kind < len(kinds):
            kind = kinds[rows.kind]
            cutoff = rows.cutoffs[kind]
            with self._writing("retention (report rows)") as conn:
                gone, after = row_retention.remove_row_batch(conn, kind, cutoff, rows.keep_id, rows.after)
                if gone:
                    # a reader naming its answers by the newest report sees the change (as the field pass)
                    _add_to_counter(conn, DATA_VERSION_COUNTER, 1)
                retired = row_retention.retired_seqs(conn)
            self._retired = retired  # once committed
            rows.rows += sum(gone.values())
            if after is None:  # this kind is through
                rows.kind, rows.after = rows.kind + 1, row_retention.START
            else:
                rows.after = after
            return True
        # rows a development build recorded without a kind go by the longest report retention
        with self._writing("retention (window duplicates)") as conn:
            for kind, cutoff in dict(rows.cutoffs, **{"": min(rows.cutoffs.values())}).items():
                row_retention.remove_window_duplicates(conn, kind, cutoff)
            retired = row_retention.retired_seqs(conn)
        self._retired = retired
        rows.duplicates_done = True
        self._end_pass(rows)  # (remove_values' callers run the row part with this method alone)
        if rows.rows:
            log.info("retention removed %d report row(s) (their alarms and reception records with them)", rows.rows)
        return False


# One encoder for every row: json.dumps with options builds a new JSONEncoder per call (same output),
# and the C encoder behind it is faster on these small maps than formatting them by hand.
_dump = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


# A retention pass removing more than this share of one field's stored values logs a WARNING.
LARGE_REMOVAL = 0.1

# Rows per multi-row INSERT, largest first: a few fixed sizes keep the statements in sqlite3's
# statement cache. Sizes whose parameters exceed the library's bound (999 before SQLite 3.32) are skipped.
_CHUNKS = (256, 64, 16, 4, 1)


# committed_digest at or below a device's retired seq: the digest is gone with the row (a frame may be its
# re-send), or the frame's period is too new for a row retention removed (never stored: not a re-send).
RETIRED_UNKNOWN = ""
RETIRED_TOO_NEW = "newer than the report retention"  # never a frame digest (hex)
# The least report retention a kind can have (config retention: 1 day at least), used before a pass.
MIN_REPORT_DAYS = 1


def report_row(rec: ReportRecord, gateway_id: str) -> tuple[Any, ...]:
    """The values of one ``reports`` row, in :data:`INSERT_REPORTS` order (m, e, a as compact JSON)."""
    # e and a are empty in all but releases and alarms: their JSON is a constant, and each encoder call
    # costs ~1.5 µs of the store thread's GIL time per report (same text as _dump gives).
    return (rec.device, rec.seq, rec.kind, rec.zone, rec.type, rec.w, rec.l, _dump(rec.m),
            _dump(rec.e) if rec.e else "{}", _dump(rec.a) if rec.a else "[]", rec.fw, rec.received_at, gateway_id,
            rec.link, rec.digest)


# The store's row inserts: (statement head, values per row), for insert_rows.
INSERT_REPORTS = ("INSERT OR IGNORE INTO reports (device, seq, kind, zone, type, w, l, m, e, a, fw, received_at,"
                  " gateway_id, link, digest) VALUES ", 15)
INSERT_CHAIN = ("INSERT INTO chain (pos, device, seq, gateway, digest, prev, hash) VALUES ", 7)
INSERT_FLOORS = ("INSERT INTO ack_floor (device, floor) VALUES ", 2)
UPSERT_FLOORS = " ON CONFLICT(device) DO UPDATE SET floor = MAX(floor, excluded.floor)"


def _roll_back(conn: sqlite3.Connection, what: str) -> None:
    """Roll back the open transaction, if any, after a failure in it. A ROLLBACK that fails itself (an I/O
    error, a damaged page) is logged, never raised: the error being handled is the one to report (a
    damaged file is recognised from it), not the rollback's."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.error("rolling back after %s failed as well: %s", what, sqlite_message(exc))


def insert_rows(conn: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]], *,
                tail: str = "") -> None:
    """Insert ``rows`` (each ``width`` values) through a few multi-row ``INSERT ... VALUES`` statements.

    One statement inserts many rows inside one call into SQLite, which runs without the GIL; with
    ``executemany`` the store thread takes the GIL back after every row, each time competing with
    the event loop for it (measured: ~6 % more reports/s in bench/gateway_ingest.py). ``tail`` ends
    each statement (an ``ON CONFLICT`` clause); ``rows`` must then not repeat a conflict key.
    """
    one = "(" + ",".join("?" * width) + ")"
    bound = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    i, n = 0, len(rows)
    for size in _CHUNKS:
        if n - i < size or (size > 1 and size * width > bound):
            continue
        sql = head + ",".join([one] * size) + tail
        while n - i >= size:
            conn.execute(sql, list(itertools.chain.from_iterable(rows[i:i + size])))  # flattened in C
            i += size


# The stored reports of the given (device, w) pairs (releases and aggregates): the VALUES list first (CROSS JOIN keeps that order),
# each pair one search of reports_device_w.
_SELECT_PERIODS = ("SELECT r.device, r.type, r.w, r.l, r.e, r.seq FROM (VALUES %s) v CROSS JOIN reports r"
                   " ON r.device = v.column1 AND r.w = v.column2")


def select_rows(conn: sqlite3.Connection, sql: str, width: int, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run ``sql`` (its ``%s`` a ``VALUES`` list of ``width``-value rows) over ``rows`` in the chunk sizes of
    :func:`insert_rows`, and return all result rows."""
    one = "(" + ",".join("?" * width) + ")"
    bound = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    found: list[tuple[Any, ...]] = []
    i, n = 0, len(rows)
    for size in _CHUNKS:
        if n - i < size or (size > 1 and size * width > bound):
            continue
        query = sql % ",".join([one] * size)
        while n - i >= size:
            found += conn.execute(query, list(itertools.chain.from_iterable(rows[i:i + size]))).fetchall()
            i += size
    return found


def _checkpoint_at_open(conn: sqlite3.Connection, path: Path) -> None:
    """Checkpoint a ``-wal`` an unclean stop left (a kill, a power cut, a full disk at the last close)
    into the main file at once, so it is whole again. A checkpoint that cannot finish now (the disk is
    still full, a reader holds the store) is only logged: the ``-wal`` keeps every commit meanwhile,
    and the gateway's later checkpoints retry it."""
    try:
        busy, pages, moved = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        log.warning("report store %s: the -wal the last stop left was not checkpointed at start: %s; its commits "
                    "are read from %s-wal meanwhile (nothing is lost): back up both files, or use sqlite3 .backup",
                    path, exc, path.name)
        return
    if busy:
        log.warning("report store %s: another process is reading it, so %d of %d WAL page(s) the last stop left "
                    "stay in %s-wal for now (nothing is lost): back up both files, or use sqlite3 .backup",
                    path, pages - moved, pages, path.name)
    else:
        log.info("report store %s: the -wal the last stop left is checkpointed into it (the file is whole again)",
                 path)


# Writer connections of stores overwritten in place that could not be closed without a checkpoint into the copy
# (ReportStore._close_overwritten): one reference each kept here, never dropped.
_KEPT_OPEN: list[sqlite3.Connection] = []


def keep_open_until_exit(conn: sqlite3.Connection) -> None:
    """Keep ``conn`` from ever being closed in this process: freeing it (even at interpreter shutdown, which
    frees module globals) would close it, and SQLite's close checkpoints. The process's exit ends it as a kill
    would: no checkpoint, nothing written."""
    _KEPT_OPEN.append(conn)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))  # never freed, even when _KEPT_OPEN is


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """SQLite found the file damaged (SQLITE_CORRUPT, SQLITE_NOTADB; not: busy, full, read-only; those pass)."""
    return is_corrupt(exc)
