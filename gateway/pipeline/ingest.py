"""Ingest: verified reports -> replay window -> batched commit -> ACK on the link they came from.

Guarantees (docs/protocol.md §6):
* an ACK is sent only after the report (and every earlier report of that device we have seen)
  is committed;
* a retransmission of a stored or in-flight report is re-acknowledged, never stored twice;
* a release (a ``win``/``hour``/``day`` report spending ε) for a period and fields the device already
  has released under another seq (its clock was set back far) is acknowledged, counted and logged, and
  not stored (the store decides, :func:`gateway.storage.store.release_key`); its seq is settled like a
  stored one. Aggregates without ``e`` are always stored;
* a report older than the replay window that is not stored is rejected (``replay``);
* a batch whose commit fails with an unexpected error (a bug set off by one odd record) is committed
  again in halves, down to single records: only the reports setting it off fail (not acknowledged, and
  no ACK of their device passes them while it re-sends them), up to 8 of them per batch
  (:data:`~gateway.pipeline.ingest_writer.SPLIT_ISOLATES`) and for at most 2 s of splitting once a first
  one is isolated (:data:`~gateway.pipeline.ingest_writer.SPLIT_TIME_S`; that first one at any cost, down
  to the halving's depth); past that the parts left are tried once, unsplit,
  and a part holding another one fails whole, a failing commit. A report known to fail alone is set aside
  and tried alone after the others (its re-sends do not split every batch they land in). A StorageError
  fails the batch unsplit. Reports failing alone while others are stored are
  :attr:`IngestService.reports_problem` (a warning), commits storing nothing or leaving a part whole
  :attr:`IngestService.store_problem` (critical). A store read failing for a
  re-sent or old seq (its stored digest) leaves that report unacknowledged too, counted with the failing
  commits and logged at most once per :data:`OVERLOAD_LOG_EVERY_S`;
* an authentic report under a committed seq whose stored frame digest differs is not a re-send (devices
  re-send byte-identical frames) but a restarted seq counter: rejected (``seq_reused``), never acknowledged;
* the window is rebuilt from the store at start, so it survives restarts;
* memory stays bounded under overload: at ``max_in_flight`` reports in flight :attr:`IngestService.room`
  is cleared (serial transports stop reading, so the OS buffers and then the devices hold the
  data), and at twice that, frames are shed unacknowledged (devices re-send them later).

The service is split by concern: :mod:`gateway.pipeline.device_window` (a device's replay window and ACK
floor), :mod:`gateway.pipeline.ingest_warnings` (the rate-limited warnings), :mod:`gateway.pipeline.ingest_writer`
(the batch writer and its failure handling); frames in, old seqs and ACKs are here.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine

from gateway.errors import GatewayError, ProtocolError, RejectedReport, StorageError
from gateway.log_limit import LogLimiter, more_since
from gateway.metrics import GatewayMetrics
from gateway.pipeline.device_window import (ABOVE_MAX, DIGEST_PREFIX, MAX_SEQ, REPLAY_WINDOW, DeviceWindow,
                                            RecentDigests, digest_prefix, trim_above)
from gateway.pipeline.ingest_warnings import (GAP_LOG_EVERY_S, HMAC_LOG_EVERY_S, MAX_DEVICE_WARNINGS,
                                              OUTBOX_DROP_LOG_EVERY_S, OVERLOAD_LOG_EVERY_S, POLICY_LOG_EVERY_S,
                                              RANGE_LOG_EVERY_S, RETIRED_LOG_EVERY_S, REUSED_LOG_EVERY_S,
                                              UNREGISTERED_LINKS_NAMED, UNREGISTERED_LOG_EVERY_S, UNREGISTERED_NAMED,
                                              WINDOW_DUP_LOG_EVERY_S)
from gateway.pipeline.ingest_writer import (POISON_FORGET_S, POISON_LOG_EVERY_S, POISON_MAX, BatchQueue,
                                            IngestWriter, Queued)
from gateway.pipeline.link import Link
from gateway.pipeline.seq_gaps import acknowledged_before
from gateway.pipeline.verify import Verified, Verifier
from gateway.protocol.frame import FRAME_ACK, build_frame
from gateway.storage.store import ReportRecord, ReportStore

# What other code and tests import from here. The constants live with the code that reads them (a test
# patching one patches it in that module): ACK_TIMEOUT_S and the others defined below are read here.
__all__ = [
    "ABOVE_MAX", "ACK_TIMEOUT_S", "AUTHENTIC_REJECTIONS", "DIGEST_PREFIX", "GAP_HOLD_S", "GAP_LOG_EVERY_S",
    "HMAC_LOG_EVERY_S", "IngestService", "Link", "MAX_DEVICE_WARNINGS", "MAX_IN_FLIGHT", "MAX_SEQ",
    "OUTBOX_DROP_LOG_EVERY_S", "OVERLOAD_LOG_EVERY_S", "POISON_FORGET_S", "POISON_LOG_EVERY_S", "POISON_MAX",
    "POLICY_LOG_EVERY_S", "RANGE_LOG_EVERY_S", "REPLAY_WINDOW", "RETIRED_LOG_EVERY_S", "REUSED_LOG_EVERY_S",
    "UNREGISTERED_LINKS_NAMED", "UNREGISTERED_LOG_EVERY_S", "UNREGISTERED_NAMED", "UNVERIFIED_LOG_EVERY_S",
    "WINDOW_DUP_LOG_EVERY_S",
]

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 5.0
# A device re-sends its un-acknowledged outbox when no ACK came 5 s after its last send; hold
# cumulative ACKs at a seq gap this long so a frame lost on the link is re-sent before the ACK
# would make the device drop it. Gaps that persist are legitimate (seq reservation skipped on reboot).
GAP_HOLD_S = 15.0
MAX_IN_FLIGHT = 5000
# Rejections raised after the tag verified: the seq is authentic, the report is refused for good.
AUTHENTIC_REJECTIONS = frozenset({"policy", "kind", "body"})
# A frame the registry cannot check (its key file gone: a data directory moved away while the gateway runs)
# is counted as rejection reason registry_unreadable; its ERROR at most once a minute, with the count.
UNVERIFIED_LOG_EVERY_S = 60.0


class IngestService(IngestWriter):
    """Turns frames from any transport into committed, acknowledged reports.

    Args:
        store: the report store (used only from this service's writer thread).
        verifier: stateless checks.
        metrics: counters to update.
        batch_ms / batch_max: commit at least every ``batch_ms`` or every ``batch_max`` reports.
        clock: unix-time source (ACK time sync and ``received_at``).
        gap_hold_s: how long ACKs stay below a gap in a device's seqs before it is accepted.
        monotonic: monotonic clock for the gap hold (simulated time under ``[sim_clock]``: it waits
            for the devices' re-sends, which run on their clock). It may step back: a hold begun at a
            time now in the future counts from now, so it lasts ``gap_hold_s``, not that plus the step.
        log_monotonic: monotonic clock that spaces the rate-limited log lines (None: ``monotonic``);
            the service gives it the wall clock, as the logs are read by people, not devices.
        max_in_flight: reports in flight (received, not yet committed and ACKed) at which
            :attr:`room` is cleared; at twice this many, frames are shed.
        time_sync: asked before each ACK, with the report it answers, whether the ACK may carry the
            clock's time (``t``, protocol §3); False while the gateway distrusts its clock (found ahead of
            its stored reports) and the board's own clock disagrees with it, so the boards' clocks are not
            set ahead with it. None: always.

    Attributes:
        room: set while the backlog is below ``max_in_flight`` (set again at 3/4 of it);
            transports that can stop reading wait for it.
    """

    def __init__(self, *, store: ReportStore, verifier: Verifier, metrics: GatewayMetrics, batch_ms: int = 50,
                 batch_max: int = 2000, clock: Callable[[], float] = time.time, gap_hold_s: float = GAP_HOLD_S,
                 monotonic: Callable[[], float] = time.monotonic, max_in_flight: int = MAX_IN_FLIGHT,
                 log_monotonic: Callable[[], float] | None = None,
                 time_sync: Callable[[ReportRecord], bool] | None = None) -> None:
        self.store = store
        self._time_sync = time_sync
        self._verifier = verifier
        self._metrics = metrics
        self._batch_s = batch_ms / 1000.0
        self._batch_max = batch_max
        self._clock = clock
        self._gap_hold_s = gap_hold_s
        self._monotonic = monotonic
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._queue = BatchQueue(batch_max)
        self._windows: dict[str, DeviceWindow] = {}
        self._dirty_floors: dict[str, int] = {}
        self._saved_floor: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._accepting = False
        self.stored = asyncio.Event()
        # Reports queued by feed() without a handler task; one tracker task stays in ``_tasks`` while
        # any is uncommitted, so "no tasks" still means "everything fed is committed and ACKed".
        self._outstanding = 0
        self._drained = asyncio.Event()
        self.max_in_flight = max(1, max_in_flight)
        self.room = asyncio.Event()
        self.room.set()
        # Under sustained overload these happen many times a second: one line per burst.
        log_clock = monotonic if log_monotonic is None else log_monotonic
        self._shed_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)
        self._pause_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)
        self._resume_unlogged = False  # a logged pause whose end is not logged yet
        self._handling = 0  # _handle_verified tasks running
        self._handlers: dict[str, int] = {}  # the same per device (for settled)
        self._init_writer(log_clock)
        self._unverified_log = LogLimiter(UNVERIFIED_LOG_EVERY_S, log_clock)
        self._read_fail_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)  # store reads of re-sent seqs failing
        self._handler_bug_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)
        self._init_warnings(log_clock)
        # read when /metrics is scraped, not set on every frame (a locked update per frame)
        metrics.ingest_backlog.set_function(lambda: self.backlog)

    async def run_in_store(self, fn: Callable[..., object], *args: object) -> object:
        """Run a store method on the store's single thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def start(self) -> None:
        """Load the persisted replay window and ACK floors, and start the batch writer."""
        maxima = await self.run_in_store(self.store.max_seqs)
        floors = await self.run_in_store(self.store.ack_floors)
        assert isinstance(maxima, dict) and isinstance(floors, dict)
        for dev, hi in maxima.items():
            floor = int(floors.get(dev, 0))
            # Committed seqs above the last ACK: a gap below them is held again after a restart (the
            # lowest ABOVE_MAX; the device re-sends the others, and then they are known again).
            above = await self.run_in_store(self.store.seqs_above, dev, floor, ABOVE_MAX)
            assert isinstance(above, list)
            outside = [s for s in above if not 0 < s <= MAX_SEQ]
            if outside:
                # No frame carries such a seq (u32, never 0): only another program can have written it.
                # Left out of the window (it can never be re-sent) instead of failing the start.
                log.warning("store holds %d report seq(s) of %s outside 1..%d (e.g. %d), which no frame can "
                            "carry: not in the replay window (the store was written by another program?)",
                            len(outside), dev, MAX_SEQ, outside[0])
                above = [s for s in above if 0 < s <= MAX_SEQ]
            since = self._monotonic()
            self._windows[dev] = DeviceWindow(committed_hi=hi, accepted_hi=hi, floor=floor,
                                               above=dict.fromkeys(above, since),
                                               recent=RecentDigests(above))
        self._writer = asyncio.create_task(self._write_loop(), name="ingest-writer")
        self._accepting = True
        log.info("ingest started; replay window restored for %d device(s)", len(maxima))

    def feed(self, raw: bytes | ProtocolError, link: Link) -> None:
        """Hand over one frame (or a link-level decode error, to count) without blocking the transport."""
        if isinstance(raw, ProtocolError):
            self._reject(raw.reason, str(raw), link)
            return
        self._metrics.reports_in(link.kind).inc()
        if not self._accepting:
            log.info("not accepting (shutting down): frame from %s ignored, the device will resend", link.name)
            return
        if self._outstanding + self._handling >= 2 * self.max_in_flight:  # self.backlog, without the call
            self._shed(link)
            return
        # Verified here, synchronously: a Task per frame was most of the ingest cost. Only frames that
        # need the store (old seqs) or wait on an in-flight copy get a handler task.
        verified = self._verify(raw, link)
        if verified is None:
            return
        frame = verified.frame
        seq = frame.seq
        win = self._window(frame.device_id)
        win.note_held(seq, verified.held)
        # (every seq in win.recent is <= committed_hi: no lookup there per frame)
        if seq <= win.committed_hi or seq in win.pending or seq <= win.accepted_hi - REPLAY_WINDOW:
            self._handling += 1
            self._handlers[frame.device_id] = self._handlers.get(frame.device_id, 0) + 1
            self._spawn(self._handle_verified(verified, link))
            self._pressure()
            return
        # New report above everything committed: queue it; the writer ACKs once per device and link.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        win.pending[seq] = fut
        if seq > win.accepted_hi:
            win.accepted_hi = seq
        self._queue.put_nowait((verified, fut, link))
        if self._outstanding == 0:
            self._drained.clear()
            self._spawn(self._drained.wait())
        self._outstanding += 1
        if self._outstanding + self._handling >= self.max_in_flight or not self.room.is_set():
            self._pressure()  # only then can it change anything (per-frame calls were measurable)

    @property
    def backlog(self) -> int:
        """Reports received and not yet resolved: queued for the writer, or re-sent ones being checked."""
        return self._outstanding + self._handling

    def _pressure(self) -> None:
        """Update :attr:`room` (with hysteresis) after the backlog changed."""
        n = self.backlog
        if self.room.is_set():
            if n >= self.max_in_flight:
                self.room.clear()
                self._queue.hurry(True)  # nothing more is read until a commit settles some: no batch to wait for
                self._metrics.ingest_paused.set(1)
                self._metrics.ingest_pauses.inc()
                more = self._pause_log.allow()
                if more is not None:
                    log.warning("ingest backlog at %d reports: pausing serial reads until it falls to %d%s", n,
                                self.max_in_flight * 3 // 4, more_since(more, "pause(s)"))
                    self._resume_unlogged = True
        elif n <= self.max_in_flight * 3 // 4:
            self.room.set()
            self._queue.hurry(False)
            self._metrics.ingest_paused.set(0)
            if self._resume_unlogged:
                self._resume_unlogged = False
                log.info("ingest backlog down to %d reports: reading again", n)

    def _shed(self, link: Link) -> None:
        self._metrics.ingest_shed.inc()
        more = self._shed_log.allow()
        if more is not None:
            log.warning("ingest backlog at %d reports (cap %d): shedding frames from %s unacknowledged; "
                        "devices re-send them%s", self.backlog, 2 * self.max_in_flight, link.name,
                        more_since(more, "frame(s) shed"))

    async def settled(self, device_id: str) -> None:
        """Return once every report of ``device_id`` accepted so far is committed or failed: queued for the
        writer (its future), or being checked against the store by a handler task (which may queue it).

        For a caller that stopped the device's frames from being accepted (retired it) and must then know that
        the store holds all it will ever hold of them, however long the writer's backlog (a device removal,
        :meth:`gateway.web.source.RegistryAdmin.remove`). Bound it with :func:`asyncio.wait_for`.
        """
        while True:
            win = self._windows.get(device_id)
            waits = [f for f in win.pending.values() if not f.done()] if win is not None else []
            if waits:
                await asyncio.wait(waits)
            elif self._handlers.get(device_id):
                await asyncio.sleep(0.01)  # a handler checking a re-sent seq may queue it: look again
            else:
                return

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, commit and acknowledge everything in flight, then stop the writer."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queued = [f for w in self._windows.values() for f in w.pending.values()]
        if queued:  # reports queued by feed(): their ACK tasks start when they are committed
            await asyncio.wait(queued, timeout=timeout)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        self._drained.set()  # a batch cut off by the timeout is never ACKed; release its tracker task
        self._flush_warnings()
        floors, self._dirty_floors = self._dirty_floors, {}
        if floors:
            try:
                await self.run_in_store(self.store.save_floors, floors)
            except GatewayError as exc:
                # A damaged or failing store: the stop still goes on to close it (its checkpoint); the
                # next start resumes from the floors saved last (with each batch).
                log.warning("ACK floors of %d device(s) not saved at stop: %s", len(floors), exc)

    def close(self) -> None:
        """Release the store thread (after :meth:`stop` and after the last ``run_in_store``)."""
        self.executor.shutdown(wait=True)

    def _reject(self, reason: str, message: str, link: Link) -> None:
        self._metrics.reject(reason)
        log.info("rejected reason=%s link=%s: %s", reason, link.name, message)

    def _window(self, dev: str) -> DeviceWindow:
        win = self._windows.get(dev)
        if win is None:
            win = self._windows[dev] = DeviceWindow()
        return win

    def _verify(self, raw: bytes, link: Link) -> Verified | None:
        now = self._clock()
        try:
            return self._verifier.verify(raw, link=link.name, now=now)
        except (ProtocolError, RejectedReport) as exc:
            self._reject(exc.reason, str(exc), link)
            if isinstance(exc, RejectedReport) and exc.reason in self._unregistered and exc.device_id:
                self._unregistered_frame(self._unregistered[exc.reason], exc.device_id, link)
            if isinstance(exc, RejectedReport) and exc.reason == "policy":
                self._policy_refused(exc)
            if isinstance(exc, RejectedReport) and exc.reason == "hmac" and exc.device_id:
                self._hmac_failed(exc.device_id, link)
            if isinstance(exc, RejectedReport) and exc.reason == "retired" and exc.device_id:
                self._retired_frame(exc.device_id, link)
            if isinstance(exc, RejectedReport) and exc.reason in AUTHENTIC_REJECTIONS and exc.device_id:
                # The device really sent this seq and it will never be stored: no gap to wait for.
                win = self._window(exc.device_id)
                if exc.seq is not None and exc.seq > win.floor:
                    win.above.setdefault(exc.seq, self._monotonic())
                    win.note_held(exc.seq, exc.held)
                    trim_above(win)  # refused reports get no ACK, which trims it otherwise
        except GatewayError as exc:  # e.g. a registry key file gone: never break the transport's read loop
            # every frame of every board fails alike (a moved data directory): counted, one line a minute
            self._metrics.reject("registry_unreadable")
            skipped = self._unverified_log.allow()
            if skipped is not None:
                log.error("frame from %s not verified, not stored and not acknowledged (the board keeps it): %s; "
                          "the registry cannot be read (its data directory moved or deleted while the gateway "
                          "runs? see /healthz)%s", link.name, exc, more_since(skipped, "such frame(s)"))
        return None

    async def _handle_verified(self, verified: Verified, link: Link) -> None:
        try:
            await self._handle_old(verified, link)
        except StorageError as exc:  # a store read (the digest of a re-sent or old seq) failed
            self._read_failed(verified, link, exc)
        except Exception:  # a bug: the frame is dropped unanswered (the device re-sends it), logged once a burst
            more = self._handler_bug_log.allow()
            if more is not None:
                log.error("handling %s seq %d from %s failed with an unexpected error (a civicedge bug: please "
                          "report it with this traceback): not acknowledged, the device re-sends it%s",
                          verified.frame.device_id, verified.frame.seq, link.name, more_since(more, "such error(s)"),
                          exc_info=True)
        finally:
            self._handling -= 1
            dev = verified.frame.device_id
            left = self._handlers.get(dev, 1) - 1
            if left > 0:
                self._handlers[dev] = left
            else:
                self._handlers.pop(dev, None)
            self._pressure()

    def _read_failed(self, verified: Verified, link: Link, exc: StorageError) -> None:
        """A report whose seq needs the store (a re-send, or a seq at or below the newest committed) found it
        unreadable: not acknowledged (the device re-sends it), counted with the failing commits (the store fails
        either way: the devices keep their reports until it works again) and logged at most once per
        :data:`OVERLOAD_LOG_EVERY_S` with the reason and how many more failed since (a device re-sends every few
        seconds)."""
        self._metrics.store_commit_failures.inc()
        more = self._read_fail_log.allow()
        if more is not None:
            log.error("reading the report store failed for %s seq %d from %s (a re-sent or old seq): not acknowledged "
                      "(the device re-sends it): %s (reason %s)%s", verified.frame.device_id, verified.frame.seq,
                      link.name, exc, exc.reason, more_since(more, "such failed read(s)"))

    async def _handle_old(self, verified: Verified, link: Link) -> None:
        dev, seq = verified.frame.device_id, verified.frame.seq
        win = self._window(dev)
        if await self._answer_copy(verified, link, win):
            return
        old = seq <= win.accepted_hi - REPLAY_WINDOW
        if old or seq <= win.committed_hi:
            rec = verified.record
            digest = await self.run_in_store(self.store.committed_digest, dev, seq, rec.kind, rec.w + rec.l)
            if digest is not None:
                if digest and digest != verified.record.digest:
                    self._seq_reused(verified, link, win)
                    return
                self._metrics.duplicates.inc()
                if not old:
                    win.recent[seq] = digest_prefix(str(digest)) if digest else None
                self._known_above(win, seq)
                await self._ack(verified, link)
                return
            # Another copy (a link's late delivery and the device's re-send on another link, each with
            # its own task) may have been queued or committed while the store was asked: a second copy
            # queued too would be counted and warned about twice, and orphan the first one's future.
            if await self._answer_copy(verified, link, win):
                return
            if old and seq <= win.floor:
                # Not stored and already acknowledged past (its gap was given up on): a replay. Above
                # the floor it is a seq the ACK still waits for (a frame a link kept back): stored.
                cause = (": its seq counter restarted (reused seqs of it were refused: see the seq_reused warning)"
                         if dev in self._reused_warnings else
                         " (a frame whose gap was given up on, or the device's seq counter restarted under this id)")
                self._reject("replay", "%s seq %d is older than the replay window (newest %d) and below the "
                             "acknowledged seq %d%s" % (dev, seq, win.accepted_hi, win.floor, cause), link)
                return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        win.pending[seq] = fut
        win.accepted_hi = max(win.accepted_hi, seq)
        self._queue.put_nowait((verified, fut, None))
        if await self._committed(fut):
            if link.fresh is not None:
                link.fresh()  # not stored before (checked above): a new report
            await self._ack(verified, link)

    async def _answer_copy(self, verified: Verified, link: Link, win: DeviceWindow) -> bool:
        """Answer a copy of a seq already queued or just committed (a re-send, or another link's delivery):
        counted as a duplicate and acknowledged once that commit succeeded, never queued again. True when
        ``verified`` was such a copy."""
        seq = verified.frame.seq
        in_flight = win.pending.get(seq)
        if in_flight is None and seq not in win.recent:
            return False
        if in_flight is None:
            # Committed earlier: a re-send is byte-identical; another frame under the seq is a restarted
            # counter. Compared with the digest prefix kept in ``recent``; the store is asked (on its one
            # thread) only for a seq whose digest is not kept (loaded at start). A copy arriving while the
            # first is in flight is taken as a re-send: two frames of one key under one seq at once would
            # need two boards holding one key.
            rec = verified.record
            known = win.recent[seq]
            if known is None:
                digest = await self.run_in_store(self.store.committed_digest, rec.device, seq, rec.kind, rec.w + rec.l)
                if digest and digest != rec.digest:  # as in _handle_old: RETIRED_TOO_NEW is no digest (not hex)
                    self._seq_reused(verified, link, win)
                    return True
                if digest and seq in win.recent:
                    win.recent[seq] = known = digest_prefix(str(digest))
            if known is not None and known != digest_prefix(rec.digest):
                self._seq_reused(verified, link, win)
                return True
        self._metrics.duplicates.inc()
        log.debug("duplicate %s seq %d on %s: re-acknowledging", verified.frame.device_id, seq, link.name)
        if in_flight is not None and not await self._committed(in_flight):
            return True
        self._known_above(win, seq)
        await self._ack(verified, link)
        return True

    def _seq_reused(self, verified: Verified, link: Link, win: DeviceWindow) -> None:
        """Refuse an authentic report under a seq committed with another frame: the device's seq counter
        restarted (a new board took the id over, or its flash was erased). Acknowledged it would be deleted
        on the device; counted as a duplicate it would vanish. Never acknowledged, but not kept either: the
        device drops it at its outbox cap or with the first ACK past its seq (docs/protocol.md), so reports
        under reused seqs are lost until the board is provisioned again with the seq floor. A WARNING per
        device at most once per :data:`REUSED_LOG_EVERY_S` names the fix (never a key or frame)."""
        dev, seq = verified.frame.device_id, verified.frame.seq
        self._reject("seq_reused", "%s seq %d is already stored with another frame: the device's seq counter "
                     "restarted" % (dev, seq), link)
        counted = self._device_warning(self._reused_warnings, dev, REUSED_LOG_EVERY_S,
                                       "report(s) of %s under already stored seqs refused since the last such line "
                                       "(seq_reused)").count()
        if counted is None:
            return
        # The ACK floor counts too: refused reports (and gaps given up on) move it past the stored seqs, and a
        # board counting at or below it ignores every ACK (provision reads the same, highest_committed_seq).
        highest = max(win.committed_hi, win.floor, seq)
        # The command as it works on the board holding the id: no --force/--take-over (the key stays; re-keying
        # would meet the refused reports in its outbox). Zone and location are the registry's, at hand here.
        device = verified.device
        fix = shlex.join(["civicedge", "provision", "--port", "PORT", "--id", dev, "--zone", device.zone,
                          "--location", "%s,%s" % (device.lat, device.lon), "--seq-start", str(highest + 1)])
        if highest >= MAX_SEQ:  # no seq above it: --seq-start would be refused
            fix = "the seq space of this id is used up: provision the board under a new id"
        log.warning("%s seq %d on %s: already stored with another frame (highest seq stored or acknowledged %d): "
                    "the board's seq counter restarted under an id with stored reports (a new board took the id "
                    "over, or its flash was erased). Its reports are refused (seq_reused) and lost (never "
                    "acknowledged; the board drops them at its outbox cap or with the next ACK past them) until it "
                    "is provisioned again with the seq floor: %s (--registry DIR | --gateway URL ...), "
                    "docs/field.md%s", dev, seq, link.name, highest, fix,
                    more_since(counted[0] - 1, "such report(s) of this device"))

    def _known_above(self, win: DeviceWindow, seq: int) -> None:
        """A re-sent committed seq above the floor is known again (``above`` may have been trimmed
        or reloaded only in part): the floor can move over it."""
        if seq > win.floor:
            win.above.setdefault(seq, self._monotonic())

    @staticmethod
    async def _committed(fut: "asyncio.Future[None]") -> bool:
        try:
            await asyncio.shield(fut)
            return True
        except GatewayError:
            return False

    def _ack_frame(self, verified: Verified) -> tuple[int, bytes] | None:
        """The cumulative ACK to send the device of ``verified`` now, as ``(seq, frame)``; None when nothing
        can be acknowledged yet (moves its ACK floor first)."""
        dev = verified.frame.device_id
        win = self._window(dev)
        ack = self._advance_floor(dev, win)
        if ack > self._saved_floor.get(dev, 0):
            self._dirty_floors[dev] = ack
        lowest = min(win.pending, default=ack + 1)
        if lowest <= ack:
            ack = lowest - 1  # an earlier report is still uncommitted: do not acknowledge past it
        if ack < 1:
            return None
        body = {"t": int(self._clock())} if self._time_sync is None or self._time_sync(verified.record) else {}
        return ack, build_frame(FRAME_ACK, dev, ack, body, verified.tag_key or verified.key, verified.frame.version)

    def _ack_now(self, verified: Verified, link: Link) -> None:
        """:meth:`_ack` on a link with ``send_nowait``, inline (no Task, no timeout: its writes never wait).
        Called for each device and link of a commit in turn: whatever goes wrong with one ACK is logged and
        stays with it (the commit stands, the other ACKs go out, the device re-sends)."""
        try:
            built = self._ack_frame(verified)
        except Exception:  # a bug: this ACK only (its Task used to fail alone)
            self._ack_bug(verified.frame.device_id, link)
            return
        if built is not None:
            self._send_now(link, verified.frame.device_id, *built)

    def _send_now(self, link: Link, dev: str, ack: int, frame: bytes) -> None:
        send = link.send_nowait
        assert send is not None
        try:
            send(frame)
        except (GatewayError, OSError) as exc:
            log.debug("ack failed device=%s seq=%d link=%s: %s (the device will resend)", dev, ack, link.name, exc)
        except Exception:  # a bug in the link: the commit it follows stands (the device re-sends; a copy is re-ACKed)
            self._ack_bug(dev, link)

    def _ack_bug(self, dev: str, link: Link) -> None:
        """Log an unexpected error of an ACK to ``dev`` on ``link`` with its traceback, once a burst."""
        more = self._handler_bug_log.allow()
        if more is not None:
            log.error("acknowledging %s on %s failed with an unexpected error (a civicedge bug: please report it "
                      "with this traceback); its reports are stored, the device re-sends them and gets the ACK "
                      "then%s", dev, link.name, more_since(more, "such error(s)"), exc_info=True)

    async def _ack(self, verified: Verified, link: Link) -> None:
        built = self._ack_frame(verified)
        if built is None:
            return
        ack, frame = built
        dev = verified.frame.device_id
        if link.send_nowait is not None:
            self._send_now(link, dev, ack, frame)
            return
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):  # no extra Task per ACK, unlike wait_for
                await link.send(frame)
        except TimeoutError:
            log.debug("ack timeout device=%s seq=%d link=%s (the device will resend)", dev, ack, link.name)
        except (GatewayError, OSError) as exc:
            log.debug("ack failed device=%s seq=%d link=%s: %s (the device will resend)", dev, ack, link.name, exc)

    def _advance_floor(self, dev: str, win: DeviceWindow) -> int:
        """Move ``floor`` over committed seqs and over gaps the device no longer holds; return it.

        A report's ``h`` (protocol §2) says which lower seqs the device still holds: missing seqs it
        does not hold (skipped at a reboot, dropped at its outbox cap) are passed at once; one it
        holds is waited for however long it takes, so a link that keeps a frame back (a BLE
        man-in-the-middle suppressing an alarm) can never make an ACK delete it from the outbox.
        The same wait covers a missing seq above the freshest ``h`` from a device that sends it
        (e.g. after a restart, until its re-sends arrive). Devices without ``h`` (older firmware)
        get the timed hold: a gap is passed once visible for ``gap_hold_s``, each gap held from when
        the first seq past it became known, so several gaps are held at the same time.
        """
        above = win.above
        now: float | None = None
        while True:
            while win.floor + 1 in above:
                win.floor += 1
                del above[win.floor]
            if not above:
                return win.floor
            gone = win.not_held_upto(win.floor + 1)
            if gone is not None:
                log.debug("%s: seqs %d..%d are not in the device's outbox (skipped at a reboot or dropped at its "
                          "cap): acknowledging past them", dev, win.floor + 1, gone)
                # The stretch stops below the first committed seq: none of it is stored.
                self._metrics.seqs_not_held.inc(gone - win.floor)
                if acknowledged_before(win.floor, gone, win.info_runs):
                    self._seqs_lost(dev, win.floor + 1, gone)
                win.jump(gone)
                continue
            now = self._monotonic() if now is None else now
            if win.speaks_held:
                return self._wait_held(dev, win, now)
            past = min(above)
            if above[past] > now:  # recorded before the clock stepped back (sim clock): hold from now
                above[past] = now
            if now - above[past] < self._gap_hold_s:
                return win.floor
            self._gap_given_up(dev, win.floor + 1, past - 1)
            win.jump(past - 1)

    def _wait_held(self, dev: str, win: DeviceWindow, now: float) -> int:
        """ACKs stay at ``floor`` while the device may hold a seq above it; warn once after the hold."""
        if win.wait_floor != win.floor:
            win.wait_floor, win.wait_since, win.wait_warned = win.floor, now, False
        else:
            if win.wait_since > now:  # the clock stepped back (sim clock): held for gap_hold_s from now
                win.wait_since = now
            if not win.wait_warned and now - win.wait_since >= self._gap_hold_s:
                win.wait_warned = True
                self._metrics.ack_gap_waits.inc()
                log.warning("%s: seqs %d..%d have not arrived for %.0f s and the device's outbox may still hold "
                            "them; ACKs stay at %d until they do (a link that drops frames selectively?)", dev,
                            win.floor + 1, min(win.above) - 1, now - win.wait_since, win.floor)
        trim_above(win)
        return win.floor
