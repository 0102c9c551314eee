"""What the public open data published: its bound per kind of answer, kept across marks and restarts.

Each kind of public answer (``entities``, ``csv``) shows the reports received before its publication
mark (:mod:`gateway.web.publication`); the privacy-budget CSV also the repeat releases
(``window_duplicates``) received before the CSV's mark, under the kind ``repeats``, whose bound is a rowid
of that table. :class:`PublishedMarks` reads the bound of a mark (the newest report id received before it)
once, keeps it from ever going back (a clock set back, a boot before NTP: the mark is then held), saves it
in the store's ``meta`` table under ``published:<kind>`` in the background and reads it back at start. The web layer writes only those keys
(:func:`published_meta_writer`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Awaitable, Callable, Mapping, NamedTuple

from gateway.errors import StorageError
from gateway.retention_clock import CLOCK_BACK_TOLERANCE_S
from gateway.storage.meta_keys import MAX_META_KEY, PUBLISHED_META_PREFIX
from gateway.storage.queries import ReportQueries
from gateway.web import publication
from gateway.web.reads import StoreReads

logger = logging.getLogger(__name__)

# Publication marks whose bound (newest report id received before the mark) is kept: the entities'
# and the CSV's current marks, and the previous ones while a request still uses them.
_MARKS_KEPT = 8


class _Published(NamedTuple):
    """What a kind of public answer published: the newest report id (``bound``), the mark the answer is
    as of, and the receive time of report ``bound`` (0.0 for none), which ties a saved value to its store."""

    bound: int
    mark: int
    received: float

    def consistent(self) -> bool:
        """Whether report ``bound`` was received before the mark (or nothing is published): what every
        bound read at a mark is, and what a value read back at start must be."""
        return self.bound == 0 or self.received < self.mark

    @classmethod
    def of_saved(cls, queries: ReportQueries, saved: tuple[int, int, int], kind: str) -> _Published | None:
        """The value saved as ``(bound, mark, receive time in µs)`` for ``kind``, if this store's publication
        can have saved it (:meth:`PublishedMarks._read_published`), else None; on a store thread."""
        bound, mark, received_us = saved
        if bound == 0:
            return cls(0, mark, 0.0) if received_us == 0 else None
        received = _received_at(queries, kind, bound)
        if received is None:
            return cls._of_removed(queries, saved, kind)
        if publication.micros(received) != received_us:
            return None
        got = cls(bound, mark, received)
        return got if got.consistent() else None

    @classmethod
    def _of_removed(cls, queries: ReportQueries, saved: tuple[int, int, int], kind: str) -> _Published | None:
        """A saved value whose bound row is gone: retention removed it since (the bound's row was no longer
        the newest, a later one had arrived before the next mark) if the bound is below the table's newest
        row, which retention never removes, so ids are never reused (gateway/storage/row_retention.py), and
        its saved receive time is not after that row's (ids follow receive times). Its receive time can no
        longer be checked, but every row at or below it was stored before it and retention took it as old:
        the value publishes nothing received after its mark. Anything else is None (another store's value)."""
        bound, mark, received_us = saved
        newest = _newest_row(queries, kind)
        received = received_us / 1_000_000
        if newest is None or bound >= newest[0] or received > newest[1] + CLOCK_BACK_TOLERANCE_S:
            return None
        got = cls(bound, mark, received)
        if not got.consistent():
            return None
        logger.debug("open data: the %s bound %d saved in the store's meta names a row retention removed since "
                     "(below the newest, %d); taken as saved", kind, bound, newest[0])
        return got


# The kind whose bound is a ``window_duplicates`` rowid (the repeat releases the privacy-budget CSV counts,
# published at the CSV's marks); the other kinds' bounds are report ids.
REPEATS = "repeats"


def _received_at(queries: ReportQueries, kind: str, bound: int) -> float | None:
    """The receive time of row ``bound`` of ``kind``'s table (a repeat release or a report), None when gone."""
    if kind == REPEATS:
        return queries.repeat_received_at(bound)
    row = queries.reports_by_id([bound]).get(bound)
    return None if row is None else row.received_at


def _newest_row(queries: ReportQueries, kind: str) -> tuple[int, float] | None:
    """The id and receive time of the newest row of ``kind``'s table (None when it is empty)."""
    if kind == REPEATS:
        rowid = queries.last_repeat_received_before(float("inf"))
        received = queries.repeat_received_at(rowid) if rowid else None
        return None if received is None else (rowid, received)
    return queries.last_report_stamp()


_NOTHING = _Published(0, 0, 0.0)


def published_meta_writer(save: Callable[[str, str], Awaitable[object]]) -> Callable[[str, str], Awaitable[None]]:
    """The web layer's writer of the store's ``meta`` rows: ``save`` for ``published:`` keys only
    (gateway.storage.meta_keys). The retention clock's row, which holds a data-protection hold, stays
    the retention loop's alone (it keeps ``save`` itself). For any other key the writer raises
    StorageError, reason ``bad_value``, and writes nothing.
    """
    async def save_published(key: str, value: str) -> None:
        if not key.startswith(PUBLISHED_META_PREFIX):
            raise StorageError("meta key %r is not one the web layer writes (%s*)" % (
                key[:MAX_META_KEY], PUBLISHED_META_PREFIX), reason="bad_value")
        await save(key, value)

    return save_published


class PublishedMarks:
    """The bound and mark each kind of public answer (``entities``, ``csv``, ``repeats``) is published at.

    Args:
        queries: returns the storage read API (raises StorageError when there is none).
        reads: the worker threads store reads run on (the quick one is used).
        policy: the privacy policy (the entities' mark step).
        clock: unix-seconds clock.
        save_meta: writes ``(key, value)`` into the store's ``meta`` table through the store's writer;
            only ``published:`` keys are written through it (:func:`published_meta_writer`). What was
            published is saved at each new mark, in the background (no request waits for it), and
            read back at start, so it never goes back across a restart either. None: in memory only.
        timeout_s: how long a store read may take before it fails.
    """

    def __init__(self, *, queries: Callable[[], ReportQueries], reads: StoreReads, policy: Mapping[str, Any],
                 clock: Callable[[], float], save_meta: Callable[[str, str], Awaitable[object]] | None,
                 timeout_s: float) -> None:
        self._queries = queries
        self._reads = reads
        self._clock = clock
        self._timeout_s = timeout_s
        # (kind, mark) -> the highest id of the reports received before the mark, the mark the answer is
        # as of (the same unless the clock is behind the stored reports) and whether it was (the mark
        # held), read once per mark:
        # a report received just before a mark but committed after the read shows at the next mark,
        # and an answer never changes between marks.
        self._bounds: dict[tuple[str, int], tuple[_Published, bool]] = {}
        # kind -> the (bound, mark) published last: the bound never goes back, even when the clock does; the
        # mark neither while the clock is behind the stored reports. Read back from the store's meta table
        # at the first bound (_restore), saved there when it changes (save_meta); see _read_bound for a
        # store without it.
        self._floors: dict[str, _Published] = {}
        self._save_meta = published_meta_writer(save_meta) if save_meta is not None else None
        self._saved: dict[str, _Published] = {}
        # The values still to save (kind -> the newest) and the one background save (_save_later).
        self._pending: dict[str, _Published] = {}
        self._saving: asyncio.Future[None] | None = None
        self._restoring: asyncio.Future[None] | None = None
        self._clock_behind = False
        # The mark function of each kind of public answer (a bound is kept per kind: the CSV's is older).
        entity_step = publication.entity_mark_s(policy)
        self._mark_of: dict[str, Callable[[float], int]] = {
            "entities": functools.partial(publication.entity_mark, step=entity_step), "csv": publication.csv_mark,
            REPEATS: publication.csv_mark}

    async def current(self, kind: str) -> tuple[int, int]:
        """:meth:`bound` at the current mark of ``kind`` (``entities``, ``csv`` or ``repeats``)."""
        return await self.bound(kind, self._mark_of[kind](self._clock()))

    def published_mark(self) -> int:
        """The mark the last published entities are as of (0 before any): the entities' mark, or while
        the clock is behind the stored reports the mark held (a device's silence is judged at it)."""
        return self._floors.get("entities", _NOTHING).mark

    async def aclose(self) -> None:
        """Let a save of what was published finish (at most ``timeout_s``)."""
        saving = self._saving
        if saving is not None and not saving.done():
            try:
                await asyncio.wait_for(asyncio.shield(saving), self._timeout_s)
            except asyncio.TimeoutError:
                logger.warning("open data: saving what was published in the store did not end in %.0f s; "
                               "stopping without it", self._timeout_s)
            except Exception:  # noqa: BLE001 - logged by _saved_or_failed
                pass

    async def bound(self, kind: str, mark: int) -> tuple[int, int]:
        """The highest id of the reports received before ``mark`` (read once per mark) and the mark the
        answer is as of (for ``repeats``, the highest ``window_duplicates`` rowid of the repeat releases
        received before it). The id is never below what was published before for that ``kind`` (``entities``,
        ``csv`` or ``repeats``), whatever the clock does, nor below what the store's ``meta`` says was published; the
        mark neither while the clock is behind the newest stored report, and is ``mark`` once it is not."""
        await self._restore()
        got = self._bounds.get((kind, mark))
        if got is None:
            read = functools.partial(self._read_bound, kind, mark, self._floors.get(kind), self._clock())
            read_got, behind_s = await self._reads.quick(read, timeout_s=self._timeout_s)
            got = self._bounds.setdefault((kind, mark), (read_got, behind_s > CLOCK_BACK_TOLERANCE_S))
            while len(self._bounds) > _MARKS_KEPT:  # (a concurrent read's, above, if it came first)
                del self._bounds[next(iter(self._bounds))]
            self._note_clock(behind_s)
        (bound, at_mark, received), held = got
        floor = self._floors.get(kind, _NOTHING)
        if floor.bound > bound:
            bound, received = floor.bound, floor.received
        # The bound never goes down: what was published stays. The mark is the clock's once the clock is
        # not behind the stored reports: a mark saved by a clock that was ahead (and read back at start)
        # would else judge every device silent until the real clock reached it (review MEDIUM 1).
        self._floors[kind] = top = _Published(bound, max(at_mark, floor.mark) if held else at_mark, received)
        # Saved only as the reader at start accepts it: the bound's report received before the mark. Not
        # so just after a clock that ran ahead was set right (the bound is a report stamped ahead): the
        # value saved before stays until the bound moves on.
        if self._save_meta is not None and top != self._saved.get(kind) and top.consistent():
            self._save_later(kind, top)
        return top.bound, top.mark

    def _save_later(self, kind: str, top: _Published) -> None:
        """Save ``top`` in the store's ``meta`` in the background: a public request never waits for the
        store's writer (review LOW 2). One save in flight at most; a newer value of a kind replaces one
        still waiting."""
        self._saved[kind] = top  # first, so concurrent requests at a new mark save it once
        self._pending[kind] = top
        if self._saving is None or self._saving.done():
            self._saving = task = asyncio.ensure_future(self._save_pending())
            task.add_done_callback(self._saved_or_failed)

    async def _save_pending(self) -> None:
        assert self._save_meta is not None
        while self._pending:
            kind = next(iter(self._pending))
            top = self._pending.pop(kind)
            await self._save_meta(publication.published_key(kind), publication.encode_published(*top))

    def _saved_or_failed(self, task: asyncio.Future[None]) -> None:
        """The background save's end: a failure is logged and the values are saved again at the next
        bound (the answers were given: only a restart with the clock behind would lose what they
        published)."""
        if self._saving is task:
            self._saving = None
        if task.cancelled():
            self._saved.clear()
            return
        exc = task.exception()
        if exc is not None:
            self._saved.clear()
            self._pending.clear()
            if isinstance(exc, StorageError):
                logger.warning("open data: could not save what was published in the store (%s); it is kept in "
                               "memory and saved again at the next mark", exc)
            else:
                logger.error("open data: saving what was published in the store failed", exc_info=exc)
        elif self._pending and self._saving is None:  # a value added as the loop ended
            self._saving = again = asyncio.ensure_future(self._save_pending())
            again.add_done_callback(self._saved_or_failed)

    async def _restore(self) -> None:
        """Read back, once, what the store's ``meta`` says the public answers published (on the quick
        thread); after a failed read the next bound tries again."""
        restoring = self._restoring
        if restoring is None:
            restoring = self._restoring = asyncio.ensure_future(self._restore_once())

            def done(fut: asyncio.Future[None]) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    self._restoring = None

            restoring.add_done_callback(done)
        await asyncio.shield(restoring)

    async def _restore_once(self) -> None:
        for kind, got in (await self._reads.quick(self._read_published, timeout_s=self._timeout_s)).items():
            floor = self._floors.get(kind, _NOTHING)
            self._floors[kind] = got if got.bound >= floor.bound else floor._replace(mark=max(got.mark, floor.mark))
            self._saved[kind] = got

    def _read_published(self) -> dict[str, _Published]:
        """The saved (bound, mark, bound's receive time) of each kind; on a store thread.

        A value is used only if this store's publication can have saved it: report ``bound`` is in the
        store, with the receive time saved with it (a value copied from another store, or edited, names
        another), and was received before the saved mark; or row ``bound`` was removed by retention since
        (:meth:`_Published._of_removed`: below the newest row, saved receive time not after its). Anything
        else is ignored with a WARNING: it could publish at once reports received after the last mark
        (review MEDIUM 3). One id lookup (two more for a removed row).
        """
        queries = self._queries()
        saved = queries.meta_values(publication.PUBLISHED_KEY_PREFIX)
        out: dict[str, _Published] = {}
        for key, text in sorted(saved.items()):
            kind = key[len(publication.PUBLISHED_KEY_PREFIX):]
            decoded = publication.decode_published(text)
            got = (_Published.of_saved(queries, decoded, kind) if kind in self._mark_of and decoded is not None
                   else None)
            if got is None:
                logger.warning("open data: ignoring meta %s = %r of the report store: not what this store's "
                               "publication saved (its report id, receive time and mark disagree with the "
                               "store); publication resumes as on a store without it", key, text)
                continue
            out[kind] = got
        return out

    def _read_bound(self, kind: str, mark: int, floor: _Published | None,
                    now: float) -> tuple[_Published, float]:
        """The bound and the mark of ``mark``'s answer (with the bound's receive time), and how far the
        clock is behind the newest stored report (s); on a store thread.

        Only the ids above the bound published before are walked. A clock behind the newest stored
        report's receive time (set back, or a boot before NTP) holds what was published: its marks
        are earlier. What was published is saved in the store (``save_meta``) and read back at start;
        without it (no saved value: a store last run without ``save_meta``), after a restart with the
        clock behind, the gateway that stamped the newest report had reached that time, so the mark
        at or before it is where publication starts again (what was published at later marks before
        the stop, if the gateway ran past one without a new report, shows again when the clock
        passes them).
        """
        queries = self._queries()
        stamp = queries.last_report_stamp()
        if stamp is None:
            return (floor if floor is not None else _NOTHING._replace(mark=mark)), 0.0
        behind_s = stamp[1] - now
        if behind_s > CLOCK_BACK_TOLERANCE_S:
            if floor is not None:
                return floor, behind_s
            mark = self._mark_of[kind](stamp[1])
        above = floor if floor is not None else _NOTHING
        if kind == REPEATS:
            bound = queries.last_repeat_received_before(mark, above=above.bound)
        else:
            bound = queries.last_id_received_before(mark, above=above.bound)
        if bound == above.bound:
            return above._replace(mark=mark), behind_s
        received = _received_at(queries, kind, bound)
        if received is None:  # removed by retention since (an old row): published at the next mark's read
            return above._replace(mark=mark), behind_s
        return _Published(bound, mark, received), behind_s

    def _note_clock(self, behind_s: float) -> None:
        """One WARNING when the clock falls behind the stored reports, one INFO when it has caught up."""
        behind = behind_s > CLOCK_BACK_TOLERANCE_S
        if behind and not self._clock_behind:
            logger.warning("open data: the gateway clock is %.0f s behind the newest stored report's receive time "
                           "(set back?); the open data holds what it published until the clock passes it", behind_s)
        elif self._clock_behind and not behind:
            logger.info("open data: the gateway clock is past the newest stored report again; publication marks resume")
        self._clock_behind = behind
