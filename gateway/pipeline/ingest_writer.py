"""The ingest service's batch writer: queued reports -> commits on the store's thread -> their futures settled
and ACKs started; a commit failing with an unexpected error is split down to the reports setting it off.

Part of :class:`gateway.pipeline.ingest.IngestService` (a mixin holding the writer's state); see that
module's docstring for the guarantees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine

from gateway.errors import GatewayError, StorageError
from gateway.log_limit import LogLimiter, more_since
from gateway.pipeline.device_window import MAX_SEQ, PREFIX_HEX, REPLAY_WINDOW, DeviceWindow
from gateway.pipeline.ingest_warnings import OVERLOAD_LOG_EVERY_S, UNREGISTERED_NAMED, IngestWarnings
from gateway.pipeline.link import Link
from gateway.pipeline.verify import Verified
from gateway.storage.store import BatchResult, ReportRecord, ReportStore

# The ingest service's logger, as before these lines had a module of their own: operators and tests filter on it.
log = logging.getLogger("gateway.pipeline.ingest")

# A report failing alone with an unexpected error (a bug it sets off; the reports committed with it are stored)
# stays in reports_problem until it commits, its device's ACK floor passes it, or it was not re-sent for
# POISON_FORGET_S (a device re-sends at most 60 s apart while it holds it). At most POISON_MAX are kept, the
# least recently failed forgotten first. Their ERROR, with the traceback, at most once per device per
# POISON_LOG_EVERY_S, counting the failures since (a device re-sends such a report every 5 s).
POISON_FORGET_S = 600.0
POISON_MAX = 64
POISON_LOG_EVERY_S = 600.0
# A commit failing with an unexpected error is split until this many reports failing alone are isolated,
# wherever they are in the batch and whatever its size (see :func:`split_budget`). More in one batch is not
# "an odd report" but a bug many reports set off: the parts left are tried once each, unsplit. 8 covers a
# few devices each sending an odd report, or a device's run of them, and keeps a poisoned batch of 2000
# (batch_max's default) to at most 143 commit attempts, the writer held for at most about 0.45 s (measured on
# a loaded 2-core VM, the bug raised after each part's rows were inserted; a clean batch about 0.05 s). The
# budget was 2 * bit_length before: fine at batch_max 200, at 2000 a third such report left about 250 others
# failing unsplit with it.
SPLIT_ISOLATES = 8
# Wall time from a batch's first failed attempt after which no part is split further once a first report
# failing alone is isolated: the parts left are then tried once each, unsplit, as past SPLIT_ISOLATES. The worst
# placement of eight such reports is 64 successful commits, each with an fsync (synchronous=FULL): about 0.45 s
# on a VM, seconds on an SD card, past the firmware's 5 s re-send (resend_ms, firmware/lib/civic/uplink/
# session.py; the devices then re-send the batch meanwhile, answered as duplicates once stored). It bounds the
# splitting, not the commit: the first report is isolated whatever it costs (two attempts per level of the
# halving, 23 for 2000: else on slow storage none would be, nothing set aside, and every batch would fail a part
# whole), and the attempt running at the limit, the parts left (one per level at most) and one attempt per
# report set aside come on top. Simulated for 2000 (tests/gateway/test_ingest_set_aside_parts.py's fake store,
# worst of one to eight bad reports placed at random, and of a bug every report sets off): at 3 ms an attempt
# 0.42 s, 0.05 s 2.45 s, 0.1 s 3.1 s, 0.25 s 5.75 s, 0.5 s 11.5 s, 1 s 23 s (the first isolation). Failing the
# parts left untried would bound it further, but fail good reports that one cheap attempt stores: not done.
# A report known to fail alone is set aside and tried alone: it is not split again.
SPLIT_TIME_S = 2.0
# (report, commit future, link to ACK it on after the commit, or None when a handler task acks)
Queued = tuple[Verified, "asyncio.Future[None]", "Link | None"]


class BatchQueue:
    """Reports waiting for the batch writer, taken a batch at a time (:meth:`take`).

    The writer is woken for a first report and for a full batch only: an ``asyncio.Queue`` wakes a
    waiting getter per report, and with ``get_nowait`` and ``put_nowait`` per report it cost more than a
    report's replay-window bookkeeping (bench/gateway_ingest.py).
    """

    __slots__ = ("_items", "_batch_max", "_grew", "_hurry")

    def __init__(self, batch_max: int) -> None:
        self._items: deque[Queued] = deque()
        self._batch_max = batch_max
        self._grew = asyncio.Event()
        self._hurry = False

    def hurry(self, on: bool) -> None:
        """While ``on``, :meth:`take` returns what is queued without waiting for a full batch: the backlog is
        at its cap (``max_in_flight``; serial reads paused until a commit settles some), so a batch that is
        not full now may never fill (a ``max_in_flight`` below ``batch_max``) and waiting is only delay."""
        self._hurry = on
        if on:
            self._grew.set()

    def put_nowait(self, item: Queued) -> None:
        """Queue ``item`` (never blocks: the backlog is bounded by the ingest service's ``room``)."""
        items = self._items
        items.append(item)
        if len(items) == 1 or len(items) >= self._batch_max:
            self._grew.set()

    def empty(self) -> bool:
        """Nothing is queued."""
        return not self._items

    def __len__(self) -> int:
        return len(self._items)

    async def take(self, wait_s: float) -> list[Queued]:
        """Wait for a first report, then up to ``wait_s`` for ``batch_max`` of them (not at all when as
        many wait already, or while :meth:`hurry` is on); return the oldest ``batch_max`` or fewer, in
        queue order."""
        items, grew = self._items, self._grew
        while not items:
            grew.clear()
            await grew.wait()
        if len(items) < self._batch_max and not self._hurry:
            grew.clear()
            try:
                async with asyncio.timeout(wait_s):
                    while len(items) < self._batch_max and not self._hurry:
                        await grew.wait()
                        grew.clear()
            except TimeoutError:
                pass
        return [items.popleft() for _ in range(min(len(items), self._batch_max))]


def split_budget(size: int, isolates: int = SPLIT_ISOLATES) -> int:
    """How many parts of a failing batch of ``size`` reports may be split (each split: two commit attempts)
    so that any ``isolates`` reports failing alone, wherever they are, end up alone.

    :meth:`IngestWriter._store_parts` halves a failing part down to single reports. The parts of one level
    of that halving are disjoint, so at most ``isolates`` of them hold a failing report: per level, at most
    that many of its parts of more than one report fail and are split. The sum over the levels is exact
    (some placement needs every split): for 2000 reports and 8, 1 + 2 + 4 + 8 * 8 = 71 (143 commits at most).
    """
    if size < 1 or isolates < 1:
        raise ValueError("split_budget needs a batch of at least one report and isolates >= 1, not %d and %d"
                         % (size, isolates))
    budget = 0
    level = {size: 1} if size > 1 else {}  # the level's parts of more than one report: size -> how many
    while level:
        budget += min(isolates, sum(level.values()))
        below: dict[int, int] = {}
        for part, count in level.items():
            for half in (part // 2, part - part // 2):
                if half > 1:
                    below[half] = below.get(half, 0) + count
        level = below
    return budget


@dataclass
class _Poisoned:
    """A report (device, seq) failing alone with an unexpected error: when it first and last failed (monotonic
    time), how many times, and the latest error's type name."""

    first: float
    last: float
    times: int = 0
    error: str = ""


@dataclass
class _Stored:
    """What :meth:`IngestService._store_parts` made of a batch: indexes into it, committed or failed (each
    once, in batch order), the committed parts' results merged, and why parts failed."""

    result: BatchResult = field(default_factory=BatchResult)
    committed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    error: GatewayError | None = None  # the store failed (not split): the rest of the batch failed with it
    bug: Exception | None = None  # the first unexpected error
    poison: list[tuple[ReportRecord, Exception]] = field(default_factory=list)  # records failing alone
    alone: list[int] = field(default_factory=list)  # their indexes (the same order): parts of one record failing
    unsplit: str = ""  # why a failing part of more than one record was not split (empty: none was left so)
    floors_saved: bool = False


class IngestWriter(IngestWarnings):
    """The batch writer of :class:`~gateway.pipeline.ingest.IngestService` (its base class)."""

    # IngestService's (the writer is one part of it)
    store: ReportStore
    stored: asyncio.Event
    _queue: BatchQueue
    _windows: dict[str, DeviceWindow]
    _dirty_floors: dict[str, int]
    _saved_floor: dict[str, int]
    _monotonic: Callable[[], float]
    _batch_s: float
    _batch_max: int
    _outstanding: int
    _drained: asyncio.Event
    run_in_store: Callable[..., Coroutine[Any, Any, object]]
    _window: Callable[[str], DeviceWindow]
    _spawn: Callable[[Coroutine[Any, Any, Any]], None]
    _ack: Callable[[Verified, Link], Coroutine[Any, Any, None]]
    _ack_now: Callable[[Verified, Link], None]
    _pressure: Callable[[], None]

    def _init_writer(self, log_clock: Callable[[], float]) -> None:
        """Start with no commit failed, spacing the failures' lines by ``log_clock``."""
        # Failed commits since the last one that succeeded (a full disk fails every batch until space is
        # freed): logged once per OVERLOAD_LOG_EVERY_S with a count, reported by :attr:`store_problem`.
        self._failing: int = 0
        self._failing_error: GatewayError | None = None
        # the latest failing commit stored this many of its ``_failing_size`` reports before the store failed
        self._failing_stored = 0
        self._failing_size = 0
        self._failing_bug = False  # ... and then a part of it failed with an unexpected error, not the store
        # Reports failing alone (the rest of their commits stored: a bug each one sets off), by (device, seq),
        # until resolved (see POISON_FORGET_S): :attr:`reports_problem`, never :attr:`store_problem`.
        self._poisoned: dict[tuple[str, int], _Poisoned] = {}
        self._stored_last = False  # the latest commit stored its reports (the store works; none yet at start)
        self._fail_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)
        self._bug_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)  # tracebacks of unexpected commit errors
        self._batch_settled = False  # _commit settled the batch it handles (_abandon must not again)
        self._split_clock: Callable[[], float] = time.monotonic  # wall time for SPLIT_TIME_S (tests set it)

    @property
    def store_problem(self) -> str | None:
        """Why the last commit failed, while commits fail (None once one stores its reports again); for health
        checks (``commits_failing``). Reports failing alone while the others are stored are not this: they are
        :attr:`reports_problem`."""
        if not self._failing:
            return None
        if self._failing_stored:  # the store failed part way through a batch committed in parts
            return ("report store commits failing (%d in a row; the latest stored %d of its %d reports, then %s: "
                    "the others are not acknowledged): %s" % (
                        self._failing, self._failing_stored, self._failing_size,
                        "a part of it failed unsplit" if self._failing_bug else "the store failed",
                        self._failing_error))
        return "report store commits failing (%d in a row, nothing acknowledged meanwhile): %s" % (
            self._failing, self._failing_error)

    @property
    def reports_problem(self) -> str | None:
        """Reports that fail alone with an unexpected error (a bug each one sets off) while the other reports
        are stored and acknowledged, or None; for health checks (``reports_failing``, a warning). A report
        stays here while its device re-sends it, until it is stored, its device's ACK floor passes it, or it
        was not re-sent for :data:`POISON_FORGET_S`."""
        self._forget_poisoned()
        if not self._poisoned:
            return None
        failing = sorted(self._poisoned.items(), key=lambda item: item[1].first)
        shown = ", ".join("%s seq %d (%s, failed %d time(s) in %.0f s)" % (dev, seq, p.error, p.times,
                                                                           p.last - p.first)
                          for (dev, seq), p in failing[:UNREGISTERED_NAMED])
        if len(failing) > UNREGISTERED_NAMED:
            shown += " and %d more" % (len(failing) - UNREGISTERED_NAMED)
        return ("%d report(s) fail alone with an unexpected error (a civicedge bug: see the ERROR logged with its "
                "traceback), not stored or acknowledged while the other reports are: %s; their devices keep and "
                "re-send them" % (len(failing), shown))

    def _forget_poisoned(self) -> None:
        """Drop the reports failing alone that are resolved: their device's ACK floor passed them (a gap
        given up, or a device no longer holding it), or not re-sent for :data:`POISON_FORGET_S`."""
        if not self._poisoned:
            return
        now = self._monotonic()
        for key, p in list(self._poisoned.items()):
            win = self._windows.get(key[0])
            if now - p.last > POISON_FORGET_S or (win is not None and key[1] <= win.floor):
                del self._poisoned[key]

    def _settled(self, count: int) -> None:
        """``count`` reports queued by feed() are committed (their ACK tasks exist) or failed."""
        self._outstanding -= count
        if self._outstanding <= 0:
            self._outstanding = 0
            self._drained.set()
        self._pressure()

    async def _write_loop(self) -> None:
        while True:
            batch = await self._queue.take(self._batch_s)
            self._batch_settled = False
            try:
                await self._commit(batch)
            except Exception:  # a bug after the store call: the writer must outlive it (module docstring)
                self._abandon(batch)

    def _abandon(self, batch: list[Queued]) -> None:
        """After an unexpected error in :meth:`_commit`: log it with its traceback (once per burst), fail the
        reports of ``batch`` not yet answered (not acknowledged now: their devices re-send, and a copy of a
        stored one is answered as a duplicate), and settle the batch if that did not happen yet."""
        more = self._bug_log.allow()
        if more is not None:
            log.error("handling a commit of %d report(s) failed with an unexpected error (a civicedge bug: please "
                      "report it with this traceback); their devices re-send them%s", len(batch),
                      more_since(more, "such error(s)"), exc_info=True)
        exc = StorageError("handling the commit failed: unexpected error (see the traceback logged)", reason="internal")
        for verified, fut, _ in batch:
            if fut.done():
                continue
            win = self._window(verified.record.device)
            if win.pending.get(verified.record.seq) is fut:
                del win.pending[verified.record.seq]
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiting handlers see it via shield
        if not self._batch_settled:
            self._settled(sum(1 for _, _, link in batch if link is not None))

    def _commit_failed(self, size: int, exc: GatewayError, *, stored: int = 0, of: int | None = None) -> None:
        """Count a failed commit and log it, at most one line per :data:`OVERLOAD_LOG_EVERY_S` (a full
        disk fails every batch: hundreds of lines a minute), saying how many it left out. ``stored``: how
        many reports of the batch parts committed before it failed, of ``of`` (``size + stored`` when None;
        :attr:`store_problem` describes the latest failing commit)."""
        self._metrics.store_commit_failures.inc()
        self._failing += 1
        self._failing_error = exc
        self._failing_stored, self._failing_size = stored, size + stored if of is None else of
        self._failing_bug = isinstance(exc, StorageError) and exc.reason == "internal"
        more = self._fail_log.allow()
        if more is not None:
            log.error("commit of %d report(s) failed, not acknowledging them (devices re-send): %s%s", size, exc,
                      more_since(more, "failed commit(s)"))

    async def _store_parts(self, records: list[ReportRecord], floors: dict[str, int]) -> _Stored:
        """Commit ``records`` with ``floors``; a part failing with an unexpected error (a bug, likely set off
        by one odd record) is retried in halves, down to single records, so that record fails alone.

        Records already known to fail alone (:attr:`_poisoned`: their devices re-send them every few seconds)
        are set aside first: the others are committed as usual, then each of those is tried once, alone. So a
        re-sent one costs the batch one attempt, not a split of every batch it lands in.
        The others' parts are committed in record order. Splitting stops once :data:`SPLIT_ISOLATES` records
        failed alone, once :data:`SPLIT_TIME_S` passed since the first part failed and a first record failed
        alone (or the halving's depth of splits found none: a bug no single record sets off), and after at most
        :func:`split_budget` splits (enough for that many wherever they are; a flaky error failing a part whose
        halves then commit spends it too): a batch holding one such record costs about ``2 * log2(n) + 1``
        commits, eight in 2000 at most 143, and a bug that every record sets off stops the split at the eighth
        (35 commits for 2000), not at ``2n - 1``. Past that, the parts left (at most about ``log2(n)``) are
        each tried once, unsplit: one holding another such record fails whole (:attr:`_Stored.unsplit` says why).
        A :class:`GatewayError` (a full disk, a locked or damaged store) is not about a record: not split,
        and what was not committed yet fails with it. Each failed part's transaction was rolled back by the
        store (its chain head and outbox totals in memory only move on a commit), so committing the halves
        again is safe.
        """
        out = _Stored()
        index: list[int] | None = None  # batch index of each record committed in parts (None: all, the same)
        aside: list[int] = []
        if self._poisoned:
            poisoned = self._poisoned
            aside = [i for i, rec in enumerate(records) if (rec.device, rec.seq) in poisoned]
            if aside:
                skip = set(aside)
                index = [i for i in range(len(records)) if i not in skip]
        main = records if index is None else [records[i] for i in index]
        parts = [(0, len(main))] if main else []  # a stack of [lo, hi) ranges of main, the lowest on top
        splits = split_budget(len(main), SPLIT_ISOLATES) if main else 0
        split_until: float | None = None  # SPLIT_TIME_S after the first failure
        # splits allowed past split_until before the first record failed alone: the halving's depth (the lowest
        # failing part is split first, so one record failing alone is isolated within that many)
        free = len(main).bit_length()
        saved: dict[str, int] | None = floors  # ACK floors ride with the first part committed

        def span(lo: int, hi: int) -> list[int] | range:
            return range(lo, hi) if index is None else index[lo:hi]

        while parts:
            lo, hi = parts.pop()
            if out.error is not None:  # the store fails (not a record): the rest is not tried
                out.failed.extend(span(lo, hi))
                continue
            result = await self._attempt(main[lo:hi], saved)
            if isinstance(result, GatewayError):
                out.error = result
                out.failed.extend(span(lo, hi))
                continue
            if isinstance(result, Exception):  # a bug, not the disk: the writer must outlive it (devices re-send)
                exc = result
                now = self._split_clock()
                if out.bug is None:
                    out.bug = exc
                    split_until = now + SPLIT_TIME_S
                if hi - lo == 1:
                    out.poison.append((main[lo], exc))
                    out.alone.extend(span(lo, hi))
                elif splits > 0 and len(out.poison) < SPLIT_ISOLATES and split_until is not None \
                        and (now < split_until or (not out.poison and free > 0)):
                    # Until the first record is isolated the time limit does not stop the split (at most
                    # ``free`` splits, the depth of the halving): else on slow storage not even one such record
                    # would be, nothing would be set aside next time, and every batch would fail a part whole.
                    splits -= 1
                    if not out.poison:
                        free -= 1
                    mid = (lo + hi) // 2
                    parts += [(mid, hi), (lo, mid)]
                    continue
                elif not out.unsplit:
                    out.unsplit = (
                        "%d report(s) failing alone were isolated already" % len(out.poison)
                        if len(out.poison) >= SPLIT_ISOLATES else
                        "splitting took %.1f s already (at most %.1f s)" % (now - split_until + SPLIT_TIME_S,
                                                                              SPLIT_TIME_S)
                        if split_until is not None and now >= split_until else
                        "the split's budget of %d was spent" % split_budget(len(main), SPLIT_ISOLATES))
                out.failed.extend(span(lo, hi))
                continue
            self._merge(out, result)
            out.committed.extend(span(lo, hi))
            saved = None
        for i in aside:  # known to fail alone: one attempt each, alone
            if out.error is not None:
                out.failed.append(i)
                continue
            result = await self._attempt([records[i]], saved)
            if isinstance(result, GatewayError):
                out.error = result
                out.failed.append(i)
                continue
            if isinstance(result, Exception):  # the bug again (or not fixed yet)
                if out.bug is None:
                    out.bug = result
                out.poison.append((records[i], result))
                out.alone.append(i)
                out.failed.append(i)
                continue
            self._merge(out, result)
            out.committed.append(i)
            saved = None
        if aside:  # back in batch order (ACKs and the store's results are handled in it)
            out.committed.sort()
            out.failed.sort()
        out.floors_saved = saved is None
        return out

    async def _attempt(self, part: list[ReportRecord], floors: dict[str, int] | None) -> BatchResult | Exception:
        """One commit attempt of ``part`` (with ``floors``) on the store's thread: its result, or the exception
        it failed with (a :class:`GatewayError` is the store's, any other a bug); a cancellation propagates."""
        try:
            result = await self.run_in_store(self.store.insert_batch, part, floors)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc
        assert isinstance(result, BatchResult)
        return result

    @staticmethod
    def _merge(out: _Stored, result: BatchResult) -> None:
        """Add a committed part's ``result`` to the batch's."""
        merged = out.result
        merged.inserted += result.inserted
        merged.duplicates += result.duplicates
        merged.window_duplicates += result.window_duplicates
        merged.outbox_dropped += result.outbox_dropped

    @staticmethod
    def _internal(stored: _Stored, failed: int, size: int) -> StorageError:
        """The error ``failed`` reports of a commit of ``size`` failing with an unexpected error fail with."""
        bug = stored.bug
        assert bug is not None
        error = StorageError("storing %d of %d reports failed: unexpected %s (see the traceback logged)"
                             % (failed, size, type(bug).__name__), reason="internal")
        error.__cause__ = bug
        return error

    def _bug_failed(self, stored: _Stored, size: int, failed: list[int]) -> StorageError:
        """Log an unexpected error failing the reports ``failed`` of a commit of ``size`` as a failing commit
        (it stored nothing, or a part of it failed unsplit, or the store failed after some parts) once per
        burst, with the traceback (of a report that set it off alone when one was found, named by device and
        seq), and return the error they fail with."""
        bug = stored.bug
        assert bug is not None
        more = self._bug_log.allow()
        if more is not None:
            alone = set(failed).intersection(stored.alone)
            shown = [(rec, exc) for i, (rec, exc) in zip(stored.alone, stored.poison) if i in alone]
            exc = shown[0][1] if shown else bug
            what = "commit of %d report(s)" % size
            if shown:
                what = "storing " + ", ".join("%s seq %d" % (rec.device, rec.seq) for rec, _ in
                                              shown[:UNREGISTERED_NAMED])
                if len(shown) > UNREGISTERED_NAMED:
                    what += " and %d more" % (len(shown) - UNREGISTERED_NAMED)
            if stored.unsplit:
                what += " (a part of it not split further: %s)" % stored.unsplit
            log.error("%s failed with an unexpected error (a civicedge bug: please report it with this traceback): "
                      "%d of the %d report(s) of the commit not stored or acknowledged (their devices re-send them), "
                      "%d stored%s", what, len(failed), size, len(stored.committed), more_since(more, "such error(s)"),
                      exc_info=(type(exc), exc, exc.__traceback__))
        return self._internal(stored, len(failed), size)

    def _failing_alone(self, stored: _Stored) -> list[int]:
        """The failed reports of ``stored`` that fail by themselves (each sets off a bug) rather than the commit:
        only those failing alone (a part of one record: isolated by the split, set aside as known to, or the
        batch's only one) with an unexpected error, and only when the store did not fail. With some of the
        batch stored, all of those (the others' unsplit parts are failing commits); with the whole batch
        failing, all of them when every failed report failed alone and is known to fail alone already, but for
        at most one new one right after a commit that stored its reports (the store works: one report's re-send
        committed on its own, between other devices' batches, is not an outage; two new ones in a row, or a bug
        every report sets off, are), else none."""
        if stored.error is not None or stored.bug is None:
            return []
        if stored.committed:
            return stored.alone
        if len(stored.alone) != len(stored.failed):
            return []
        new = sum(1 for rec, _ in stored.poison if (rec.device, rec.seq) not in self._poisoned)
        return stored.alone if new == 0 or (new == 1 and self._stored_last) else []

    def _reports_failed(self, batch: list[Queued], stored: _Stored, alone: list[int]) -> StorageError:
        """Note the reports ``alone`` of ``stored``, failing alone, for :attr:`reports_problem` and log them: an
        ERROR with the traceback at most once per :data:`POISON_LOG_EVERY_S` per device, counting its failures
        since (its device re-sends such a report every few seconds). Counted in ``store_report_failures``, per
        report, not in ``store_commit_failures`` (whose alert pages): not a failing commit
        (:attr:`store_problem`), the others are stored. Returns the error they fail with."""
        self._metrics.store_report_failures.inc(len(alone))
        bug = stored.bug
        assert bug is not None
        errors = {(rec.device, rec.seq): exc for rec, exc in stored.poison}
        now = self._monotonic()
        self._forget_poisoned()
        logged: list[tuple[ReportRecord, Exception, int]] = []
        for i in alone:
            rec = batch[i][0].record
            key = (rec.device, rec.seq)
            exc = errors.get(key, bug)
            entry = self._poisoned.get(key)
            if entry is None:
                if len(self._poisoned) >= POISON_MAX:  # bounded: the least recently failed is forgotten
                    del self._poisoned[min(self._poisoned, key=lambda k: self._poisoned[k].last)]
                entry = self._poisoned[key] = _Poisoned(first=now, last=now)
            entry.last, entry.times, entry.error = now, entry.times + 1, type(exc).__name__
            counted = self._device_warning(self._poison_warnings, rec.device, POISON_LOG_EVERY_S,
                                           "report(s) of %s failed alone with an unexpected error since the last "
                                           "such line (not stored, not acknowledged)").count()
            if counted is not None:
                logged.append((rec, exc, counted[0] - 1))
            else:
                log.debug("storing %s seq %d failed again with an unexpected %s (not acknowledged)", rec.device,
                          rec.seq, type(exc).__name__)
        if logged:
            rec, exc, _ = logged[0]
            names = ", ".join("%s seq %d%s" % (r.device, r.seq, more_since(n, "such failure(s) of this device"))
                              for r, _, n in logged[:UNREGISTERED_NAMED])
            if len(logged) > UNREGISTERED_NAMED:
                names += " and %d more" % (len(logged) - UNREGISTERED_NAMED)
            log.error("storing %s failed with an unexpected error (a civicedge bug: please report it with this "
                      "traceback): not stored and not acknowledged (its device re-sends it; /healthz "
                      "reports_failing while it fails), %d report(s) committed with it stored; logged at most once "
                      "per %.0f min per device", names, len(stored.committed), POISON_LOG_EVERY_S / 60,
                      exc_info=(type(exc), exc, exc.__traceback__))
        return self._internal(stored, len(alone), len(batch))

    def _fail(self, batch: list[Queued], failed: list[int], exc: GatewayError,
              alone: tuple[set[int], GatewayError] | None = None) -> None:
        """Fail the reports ``batch[i]`` for ``i`` in ``failed`` with ``exc`` (those in ``alone[0]`` with
        ``alone[1]``): not stored, not acknowledged (the device re-sends them, verified again). Each device's ACK
        stays below its lowest failed seq while the device re-sends it: a timed gap hold (devices without ``h``)
        counts from this failure, not from when the seq above it became known, so a report that keeps failing
        is never acknowledged past."""
        now = self._monotonic()
        lowest: dict[str, int] = {}
        for i in failed:
            verified, fut, _ = batch[i]
            rec = verified.record
            win = self._window(rec.device)
            if win.pending.get(rec.seq) is fut:
                del win.pending[rec.seq]
            if not fut.done():
                fut.set_exception(alone[1] if alone is not None and i in alone[0] else exc)
            fut.exception()  # retrieved: waiting handlers saw it via shield
            if rec.seq < lowest.get(rec.device, MAX_SEQ + 1):
                lowest[rec.device] = rec.seq
        for dev, seq in lowest.items():
            win = self._window(dev)
            if seq > win.floor:
                past = min((s for s in win.above if s > seq), default=None)
                if past is not None:
                    win.above[past] = now

    def _keep_floors(self, floors: dict[str, int]) -> None:
        """ACK floors a commit took and did not save: kept for the next commit or :meth:`stop` (a newer
        floor of a device taken meanwhile wins)."""
        for dev, floor in floors.items():
            self._dirty_floors.setdefault(dev, floor)

    async def _commit(self, batch: list[Queued]) -> None:
        records = [v.record for v, _, _ in batch]
        floors, self._dirty_floors = self._dirty_floors, {}
        try:
            outcome = await self._store_parts(records, floors)
        except BaseException:
            # Cancelled (stop() timing out during a slow or split commit) or a bug between the parts: the floors
            # may not be saved; stop() or the next commit saves them (again is harmless: the store keeps the MAX).
            self._keep_floors(floors)
            raise
        if not outcome.floors_saved:
            self._keep_floors(floors)
        commit_failed = False  # some of the batch failed as a failing commit (not failing alone)
        if outcome.failed:
            alone = self._failing_alone(outcome)
            if len(alone) == len(outcome.failed):
                self._fail(batch, outcome.failed, self._reports_failed(batch, outcome, alone))
            else:
                # A part the split left whole (or the store failing, or a bug every report sets off): its good
                # reports are not "failing alone" (not in _poisoned, where they could push out real ones).
                skip = set(alone)
                rest = [i for i in outcome.failed if i not in skip] if skip else outcome.failed
                internal = self._bug_failed(outcome, len(batch), rest) if outcome.bug is not None else None
                error = outcome.error or internal  # a failing store says more than the bug
                assert error is not None
                commit_failed = True
                self._commit_failed(len(rest), error, stored=len(outcome.committed), of=len(batch) - len(alone))
                self._fail(batch, outcome.failed, error,
                           (skip, self._reports_failed(batch, outcome, alone)) if alone else None)
        # the store works when its latest commit stored its reports (see _failing_alone)
        self._stored_last = bool(outcome.committed) and outcome.error is None
        if not outcome.committed:
            self._batch_settled = True
            self._settled(sum(1 for _, _, link in batch if link is not None))
            return
        result = outcome.result
        # Counted first: what the store holds now is counted even should handling the batch fail below.
        self._metrics.reports_stored.inc(len(result.inserted))
        self._metrics.last_commit.set_to_current_time()  # also a batch of re-sent reports only (0 stored)
        self._metrics.duplicates.inc(len(result.duplicates))
        if self._failing and not commit_failed:  # reports stored again (some failing alone is not an outage)
            log.warning("report store commits succeed again, after %d failed commit(s)", self._failing)
            self._failing, self._failing_error, self._failing_stored = 0, None, 0
            self._fail_log.reset()
            self._bug_log.reset()
        if outcome.floors_saved:
            self._saved_floor.update(floors)
        now = self._monotonic()
        acks: dict[tuple[str, str], tuple[Verified, Link]] = {}
        fresh: list[tuple[ReportRecord, Link]] = []
        # not stored now (another frame may be the one stored under the seq): its digest is asked of the store
        dup = set(result.duplicates) if result.duplicates else None
        altered: list[Verified] = []  # values rounded or fields dropped: warned about once stored
        poisoned = self._poisoned
        for verified, fut, link in (batch if not outcome.failed else [batch[i] for i in outcome.committed]):
            rec = verified.record
            dev, seq = rec.device, rec.seq
            if link is not None:
                acks[(dev, link.name)] = (verified, link)
                if link.fresh is not None:
                    fresh.append((rec, link))
            if verified.coarsened or verified.dropped or verified.out_of_range:
                altered.append(verified)
            win = self._window(dev)
            win.pending.pop(seq, None)
            if poisoned:
                poisoned.pop((dev, seq), None)  # it failed alone before: stored now (the bug was fixed)
            recent = win.recent
            recent[seq] = None if dup is not None and (dev, seq) in dup else int(rec.digest[:PREFIX_HEX], 16)
            if seq > win.floor:
                win.above.setdefault(seq, now)
            if seq > win.committed_hi:
                win.committed_hi = seq
            # keep the in-memory set bounded to the window
            if len(recent) > 2 * REPLAY_WINDOW:
                recent.keep_above(win.committed_hi - REPLAY_WINDOW)
            if not fut.done():
                fut.set_result(None)
        if altered:  # a re-sent copy of a stored report is not stored again: warned about once
            # INSERT OR IGNORE keeps the first copy of a key in the batch, so only that one is counted.
            stored = set(result.inserted)
            first: list[Verified] = []
            for v in altered:
                key = (v.record.device, v.record.seq)
                if key in stored:
                    stored.discard(key)
                    first.append(v)
            altered = first
            for v in altered:
                if v.coarsened:
                    self._coarsened(v.record.device, v.record.seq, v.coarsened)
            for v in altered:
                if v.dropped:
                    self._dropped(v.record.device, v.record.seq, v.dropped)
            for v in altered:
                if v.out_of_range:
                    self._out_of_range(v.record, v.out_of_range)
        if fresh:
            # A release not stored is a new frame too (its seq was never stored): the device holds its key.
            inserted = set(result.inserted).union((d.device, d.seq) for d in result.window_duplicates)
            for rec, link in fresh:
                if (rec.device, rec.seq) in inserted and link.fresh is not None:
                    link.fresh()
        # One cumulative ACK per device and link covers every report of it in this commit; sent here on a
        # link whose writes never wait (a Task and a timeout cost more than the ACK itself).
        for verified, link in acks.values():
            if link.send_nowait is not None:
                self._ack_now(verified, link)
            else:
                self._spawn(self._ack(verified, link))
        self._batch_settled = True
        self._settled(sum(1 for _, _, link in batch if link is not None))
        if result.window_duplicates:
            self._window_duplicates(result.window_duplicates)
        if result.outbox_dropped:
            self._metrics.outbox_dropped.inc(result.outbox_dropped)
            self._outbox_dropped(result.outbox_dropped)
        elif self._drop_warning.unlogged:
            self._drop_warning.flush()  # the broker drains again: say so now, not with the next outage's first drop
        self._metrics.outbox_depth.set(self.store.outbox_depth)
        self.stored.set()
