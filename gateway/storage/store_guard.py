"""The report store's writer connection, guarded: it writes only while the file is the one it opened, as it
left it, and undamaged.

:class:`GuardedStore` is the base of :class:`gateway.storage.store.ReportStore` holding what every write goes
through: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (:meth:`GuardedStore._writing`) with the looks at the file before and
after each commit: deleted or replaced (gateway.storage.store_files), overwritten in place (the main file's stamp
against the store's own checkpoints, which it runs itself), written by another connection (``PRAGMA
data_version`` and the -shm's count of commits, which tell another program's checkpoint from its commit); the
damage latch; the store's checkpoints, each after a new stamp token that says, even after another program's
checkpoint, whether the file holds the gateway's content (:meth:`GuardedStore._renew_token`); and its close, which
sets a ``-wal`` aside instead of checkpointing it into a file overwritten in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import sqlite3
from pathlib import Path
from typing import Iterator

from gateway.errors import StorageError
from gateway.storage.damage import StoreDamage, damaged_error, is_corrupt, sqlite_message
from gateway.storage.salvage import salvage
from gateway.storage.shm_locks import checkpoint_running
from gateway.storage.store_files import (FileIdentity, MainStamp, file_problem, main_stamp, overwritten, shm_head,
                                         unnamed, wal_aside_names, wal_frames_at_least)
from gateway.storage.store_rows import roll_back
from gateway.storage.wal_index import WalState, checkpoint_could_leave, checkpointed_since, wal_state
from gateway.storage.write_hint import io_error, write_failure_hint

# The store's one logger, whichever of its modules logs (the name operators and tests know).
log = logging.getLogger("gateway.storage.store")

#: Size the ``-wal`` is cut back to after a checkpoint (``PRAGMA journal_size_limit``): a retention pass
#: that removes much grew it to ~52 MB, kept on a small box's SD card until the next clean stop.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024

#: WAL frames after which the store checkpoints, after a COMMIT (SQLite's own autocheckpoint default; it is off:
#: the gateway's checkpoints are its only writes to the main file, see ReportStore._overwrite_problem).
CHECKPOINT_FRAMES = 1000


class GuardedStore:
    """The writer connection of the report store and the guards around its writes (the base of
    :class:`gateway.storage.store.ReportStore`, which opens the store and sets every attribute below)."""

    path: Path
    _real: Path
    _conn: sqlite3.Connection
    _lock_fd: int
    _damage: StoreDamage
    _files: list[FileIdentity]
    _shm: FileIdentity | None
    _page_size: int
    _data_version: int
    _commits: int | None
    _excused: int
    _log: WalState | None
    _stamp: MainStamp | None
    _overwritten: bool
    _settled: bool
    _wal: Path
    _gone: str | None
    _salvaged: str | None
    _salvage_again: bool
    _token_page: int | None  # the page of the store_stamp table (its one row), None: not checked
    _tokens: list[bytes]  # the stamp tokens the main file may hold, oldest first (_confirm_token)
    _token_known: bool  # whether the main file was found holding one of them since the open

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
        if not self._confirm_token() and self._token_known:
            return self._mixed_problem()
        log.warning("report store %s: another program checkpointed the store (e.g. sqlite3 \"PRAGMA wal_checkpoint\" "
                    "on the running store): harmless, its write went through SQLite's locks and the file is as that "
                    "checkpoint leaves it; don't write the running store from other programs", self.path)
        self._stamp = now
        return None

    def _main_page(self, page: int) -> bytes | None:
        """Page ``page`` of the main file as it is on disk (not through SQLite, which reads the -wal's copy of a
        page first), through the writer's own descriptor; None without one (opening another would drop SQLite's
        locks on the file) or when it cannot be read."""
        fd = self._files[0].fd if self._files else None
        if fd is None:
            return None
        try:
            return os.pread(fd, self._page_size, (page - 1) * self._page_size)
        except OSError:
            return None

    def _confirm_token(self) -> bool:
        """Whether the main file holds one of the stamp tokens the store wrote (:meth:`_renew_token`) on the
        stamp table's page; the older ones are then forgotten (one a later checkpoint copied in replaces
        them), and the file is known to hold the gateway's stamp from then on. True when that cannot be told (no
        stamp page, no token yet, no descriptor)."""
        if self._token_page is None or not self._tokens:
            return True
        page = self._main_page(self._token_page)
        if page is None:
            return True
        for i in range(len(self._tokens) - 1, -1, -1):
            if self._tokens[i] in page:
                del self._tokens[:i]
                self._token_known = True
                return True
        return False

    def _renew_token(self, *, stopping: bool = False) -> None:
        """Right before the store's own checkpoint: commit a new random token to the ``store_stamp`` row, whose
        page no other write touches, so the checkpoint puts it in the main file and no later checkpoint of
        another program copies that page again (it copies only frames past the ones already checkpointed, and
        the gateway's next commit starts the log over). A backup of the file taken before this checkpoint
        holds an older token: copied over the running store and then checkpointed into by another program,
        the file is found not the gateway's (:meth:`_overwrite_problem`), where its size and header cannot
        tell (such a checkpoint sets both as the gateway's log says). Not renewed while the last one is not
        known to be in the file (a reader kept the checkpoint from finishing): the file then holds either;
        always at the stop (``stopping``: its checkpoint is the last, the next open starts from its token)."""
        if self._token_page is None or (len(self._tokens) > 1 and not stopping):
            return
        if self._gone is not None or self._damage.problem is not None:
            return  # nothing more is written
        token = os.urandom(16)
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if self._foreign_problem() is not None:  # the next look says so; nothing of the gateway's is added
                conn.execute("ROLLBACK")
                return
            commits = self._log_commits()  # under the write lock, as for every commit (_committed)
            conn.execute("INSERT OR REPLACE INTO store_stamp (rowid, token) VALUES (1, ?)", (token,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            roll_back(conn, "renewing the store's stamp")
            # Only the check of another program's checkpoint against it is weaker meanwhile; the checkpoint that
            # follows says what matters (a full disk).
            log.info("report store %s: could not renew its stamp before a checkpoint: %s (tried again at the next "
                     "checkpoint)", self.path, exc)
            return
        self._committed(commits, True)
        self._tokens.append(token)

    def _mixed_problem(self) -> str:
        """The problem of a main file another program checkpointed into (the -shm says so, and its size and
        header are what that checkpoint leaves) that does not hold the gateway's stamp: content copied over
        the running store before that checkpoint (a backup with cp), which now holds the gateway's latest
        pages over the copy's."""
        aside = wal_aside_names(self._files[0].opened)
        return ("report store file %s was overwritten in place while the gateway ran (the same file with new content, "
                "written by another program, then checkpointed into by another program, e.g. a backup copied over "
                "it with cp and sqlite3 \"PRAGMA wal_checkpoint\" run on it: the file's stamp page does not hold "
                "the token of the gateway's own last checkpoint, though its size and header are what a checkpoint "
                "leaves): the file now mixes the copy's pages with the gateway's latest ones and may read as "
                "damaged, so the gateway writes nothing more into it and, at its stop, does not checkpoint: it "
                "keeps its -wal and -shm aside as %s and %s, and the next start refuses until they are moved away "
                "(docs/gateway.md, Overwritten in place). Reports the overwritten content held and the copy lacks "
                "are lost. Never copy over a running gateway's store: stop the gateway, then restore a backup as "
                "docs/gateway.md, Restoring a backup says (with it stopped, copy the backup to %s again), and "
                "start it" % (self._files[0].name, aside[0], aside[1], shlex.quote(str(self._files[0].opened))))

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
        self._renew_token()
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
        self._confirm_token()

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
            self._renew_token(stopping=True)  # put in the file by this checkpoint: the next open starts from it
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
        if is_corrupt(exc):
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
            roll_back(conn, what)
            if isinstance(exc, sqlite3.Error):
                raise self._error(what, exc, "write_failed") from exc
            raise
        if gone:
            self.check_file()
            raise self._gone_error(what)


def open_stamp(conn: sqlite3.Connection, *, renew: bool) -> tuple[int | None, list[bytes]]:
    """The page of the ``store_stamp`` table and the tokens the main file may hold, at the open
    (GuardedStore._renew_token); with ``renew`` (before the checkpoint of an unclean stop's -wal), a new token
    committed first. A new store (or one from before the table) has none: the first checkpoint writes one."""
    found = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = 'store_stamp'").fetchone()
    if found is None or not found[0]:
        return None, []
    if renew:
        token = os.urandom(16)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO store_stamp (rowid, token) VALUES (1, ?)", (token,))
            conn.execute("COMMIT")
            return int(found[0]), [token]
        except sqlite3.Error as exc:
            roll_back(conn, "renewing the store's stamp")
            log.info("could not renew the report store's stamp at the open: %s (renewed at its next checkpoint)", exc)
    row = conn.execute("SELECT token FROM store_stamp WHERE rowid = 1").fetchone()
    return int(found[0]), ([] if row is None or not isinstance(row[0], bytes) else [row[0]])


def checkpoint_at_open(conn: sqlite3.Connection, path: Path) -> None:
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
