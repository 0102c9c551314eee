"""Keep the web's reads from holding the report store's write-ahead log open for good.

The store checkpoints (PASSIVE) after its commits; SQLite copies a frame into the database file only when
no reader's snapshot still needs it, and starts the ``-wal`` over (cut back to ``journal_size_limit``)
only after a checkpoint copied every frame. Public reads that always overlap (a few clients asking for a
wide range of aggregates, one after another) keep some snapshot open at every checkpoint: the ``-wal``
then grows by every commit, without limit (~26 KB per one-report commit).

:class:`WalGate` breaks such a chain from the read side: once the ``-wal`` is over :data:`WAL_LIMIT_BYTES`
and its ``-shm`` says frames are not checkpointed yet, new reads wait (at most :data:`WAL_WAIT_S`) for the
reads running to end and the store's next checkpoint to copy every frame (or the log to start over); a
read that starts then reads the database file alone and does not hold the log. After the bound a read
runs anyway, and a rate-limited WARNING says the log could not be checkpointed; reads then do not wait again
for :data:`GIVE_UP_QUIET_S` and until another commit (a wait that cannot help costs a read at most
:data:`WAL_WAIT_S` once a minute, not once per commit). :class:`gateway.web.reads.StoreReads` gates its bulk
reads only: its quick reads (``/healthz`` probes, small lookups) hold a snapshot for microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Callable

from gateway.storage.wal_index import WalLog, read_wal_log

logger = logging.getLogger(__name__)

#: Size of the ``-wal`` above which new reads wait for a whole checkpoint (routine use keeps it at
#: most ~16 MiB, the store's ``journal_size_limit``).
WAL_LIMIT_BYTES = 64 * 1024 * 1024
#: The most a read waits for that checkpoint before it runs anyway.
WAL_WAIT_S = 3.0
#: After a wait ran out, reads do not wait again for this long (and until another commit): when commits come
#: less often than :data:`WAL_WAIT_S`, reads running at each commit keep every checkpoint partial, and a wait
#: per commit would only stall reads.
GIVE_UP_QUIET_S = 60.0
#: How often the ``-wal``'s size is looked at (one ``os.stat``), at most.
WAL_LOOK_EVERY_S = 1.0
#: How often a waiting read looks at the ``-shm`` again.
_POLL_S = 0.05
#: At most one WARNING per this many seconds while reads keep the log from being checkpointed.
_WARN_EVERY_S = 60.0


def _whole(log: WalLog) -> bool:
    """Whether a checkpoint copied every frame of the log (a reader starting now reads the file alone)."""
    return log.state.backfilled >= log.state.frames


class WalGate:
    """Holds new reads back while the store's ``-wal`` is over a limit and not checkpointed whole.

    Args:
        store_path: the report store's database file (its ``-wal`` and ``-shm`` lie beside the real file).
        limit_bytes: the ``-wal`` size above which reads wait (None: :data:`WAL_LIMIT_BYTES`).
        wait_s: the most one read waits (None: :data:`WAL_WAIT_S`).
        look_every_s: how often the ``-wal``'s size is looked at, at most.
        quiet_s: after a wait ran out, how long reads do not wait again (None: :data:`GIVE_UP_QUIET_S`).
        clock: monotonic seconds (tests).

    Attributes:
        waits: reads held back so far. gave_up: of those, reads that ran after :attr:`wait_s` with the
            log still not checkpointed.
    """

    def __init__(self, store_path: Path, *, limit_bytes: int | None = None, wait_s: float | None = None,
                 look_every_s: float = WAL_LOOK_EVERY_S, quiet_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        real = Path(os.path.realpath(store_path))
        self.path = Path(store_path)
        self._wal = real.with_name(real.name + "-wal")
        self._shm = real.with_name(real.name + "-shm")
        self.limit_bytes = WAL_LIMIT_BYTES if limit_bytes is None else limit_bytes
        self.wait_s = WAL_WAIT_S if wait_s is None else wait_s
        self._look_every_s = look_every_s
        self.quiet_s = GIVE_UP_QUIET_S if quiet_s is None else quiet_s
        self._clock = clock
        self._looked_at: float | None = None
        self._over = False
        # The -shm's commit count when a wait last ran out: until another commit, no checkpoint can follow
        # (the store checkpoints after a commit) and the log cannot grow, so reads do not wait again; nor
        # before _quiet_until (clock), so a gate that cannot help stalls a read at most once per quiet_s.
        self._gave_up_at: int | None = None
        self._quiet_until = 0.0
        self._warned_at: float | None = None
        self.waits = 0
        self.gave_up = 0

    def wal_bytes(self) -> int | None:
        """The ``-wal``'s size now (None: no ``-wal``, or it cannot be looked at)."""
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return None

    def _over_limit(self, now: float) -> bool:
        if self._looked_at is None or now - self._looked_at >= self._look_every_s:
            self._looked_at = now
            size = self.wal_bytes()
            self._over = size is not None and size > self.limit_bytes
        return self._over

    def _must_wait(self, log: WalLog) -> bool:
        """Whether the log is longer than the limit and frames of it are not in the database file yet."""
        return log.log_bytes > self.limit_bytes and not _whole(log)

    def held(self) -> WalLog | None:
        """The log, while the last wait ran out and the log is still over the limit and not checkpointed whole
        (reads ran anyway: ``/healthz`` says so); None once a checkpoint copied it (or it started over), and
        before any wait ran out. Reads the ``-shm``'s header (a few hundred bytes) only then."""
        if self._gave_up_at is None:
            return None
        log = read_wal_log(self._shm)
        if log is None:  # cannot be told now (no -shm, or torn by a writer): not said, looked at again next time
            return None
        if not self._must_wait(log):
            self._gave_up_at = None  # checkpointed again (or started over): reads wait again if it grows again
            return None
        return log

    async def admit(self) -> float:
        """Wait, if the ``-wal``'s log is over the limit and not checkpointed whole, until it is (or it started
        over), at most :attr:`wait_s`; return the seconds waited (0.0 when the read may start at once)."""
        start = self._clock()
        if not self._over_limit(start):
            return 0.0
        first = read_wal_log(self._shm)
        if first is None:
            return 0.0
        if not self._must_wait(first):
            self._gave_up_at = None  # checkpointed whole (or started over) since any give-up
            return 0.0
        if self._gave_up_at is not None and (first.state.commits == self._gave_up_at or start < self._quiet_until):
            return 0.0
        self.waits += 1
        log: WalLog | None = first
        while True:
            await asyncio.sleep(_POLL_S)
            now = self._clock()
            log = read_wal_log(self._shm)
            if log is not None and (not self._must_wait(log) or log.state.generation != first.state.generation):
                self._gave_up_at = None
                return now - start
            if now - start >= self.wait_s:
                break
        self.gave_up += 1
        held = log if log is not None else first
        self._gave_up_at = held.state.commits
        self._quiet_until = now + self.quiet_s
        if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "report store %s: its write-ahead log holds %.1f MiB (over %.0f MiB) not checkpointed whole: store "
                "reads kept it in use; a read waited %.1f s for the checkpoint and runs anyway (%d of %d waits so "
                "far ran out); the log keeps growing while reads overlap every commit",
                self.path, held.log_bytes / 1048576, self.limit_bytes / 1048576, now - start, self.gave_up,
                self.waits)
        return now - start
