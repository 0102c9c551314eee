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
  no ACK of their device passes them while it re-sends them). A StorageError fails the batch unsplit.
  Reports failing alone while others are stored are :attr:`IngestService.reports_problem` (a warning),
  commits storing nothing :attr:`IngestService.store_problem` (critical);
* an authentic report under a committed seq whose stored frame digest differs is not a re-send (devices
  re-send byte-identical frames) but a restarted seq counter: rejected (``seq_reused``), never acknowledged;
* the window is rebuilt from the store at start, so it survives restarts;
* memory stays bounded under overload: at ``max_in_flight`` reports in flight :attr:`IngestService.room`
  is cleared (serial transports stop reading, so the OS buffers and then the devices hold the
  data), and at twice that, frames are shed unacknowledged (devices re-send them later).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine

from gateway.errors import GatewayError, ProtocolError, RejectedReport, StorageError
from gateway.log_limit import CountedWarning, LogLimiter, more_since
from gateway.metrics import GatewayMetrics
from gateway.pipeline.seq_gaps import acknowledged_before
from gateway.pipeline.verify import OutOfRange, Verified, Verifier
from gateway.protocol.frame import FRAME_ACK, build_frame
from gateway.storage.store import BatchResult, ReportRecord, ReportStore, WindowDuplicate

log = logging.getLogger(__name__)

REPLAY_WINDOW = 256
ACK_TIMEOUT_S = 5.0
# A device re-sends its un-acknowledged outbox when no ACK came 5 s after its last send; hold
# cumulative ACKs at a seq gap this long so a frame lost on the link is re-sent before the ACK
# would make the device drop it. Gaps that persist are legitimate (seq reservation skipped on reboot).
GAP_HOLD_S = 15.0
MAX_IN_FLIGHT = 5000
# Committed seqs above a device's ACK floor kept in memory (and reloaded at a restart); more are
# forgotten, highest first, and known again when the device re-sends them.
ABOVE_MAX = 2 * REPLAY_WINDOW
OVERLOAD_LOG_EVERY_S = 10.0
# While the broker is down and the outbox at its cap every commit drops: one warning per minute, with the count.
OUTBOX_DROP_LOG_EVERY_S = 60.0
# A board whose clock was set back far re-releases every period since: one warning per minute, with the count.
WINDOW_DUP_LOG_EVERY_S = 60.0
# Frames from unregistered (never added, or revoked) devices are rejected at INFO; a WARNING per reason
# at most once a minute names them, so a board left out of the registry shows at the default log level.
UNREGISTERED_LOG_EVERY_S = 60.0
UNREGISTERED_NAMED = 5  # device ids named in one such line (more are "and others"; ids are unauthenticated)
UNREGISTERED_LINKS_NAMED = 3
# Rejections raised after the tag verified: the seq is authentic, the report is refused for good.
AUTHENTIC_REJECTIONS = frozenset({"policy", "kind", "body"})
# Frames of a registered device whose tag fails (reason hmac): a board left on its old key after a key
# rotation loses all its data, each frame otherwise only an INFO line. One WARNING per device at most
# once per 10 min, with the count (never the key or the tag). Registered ids only: bounded by the registry.
HMAC_LOG_EVERY_S = 600.0
# Frames of a retired device (its board moved to another gateway, or taken out of service, and still in
# reach): refused, never acknowledged, not a security event. One WARNING per device at most once per 10 min,
# with the count, naming `devices reinstate`. Authentic frames of registered ids only: bounded by the registry.
RETIRED_LOG_EVERY_S = 600.0
# An authentic report the policy gate refuses is acknowledged past (the device deletes it): its data is
# lost, most likely because the board runs another policy.json. One warning per minute, with the count.
POLICY_LOG_EVERY_S = 60.0
# A non-personal value outside its field's policy valid_range (a faulty sensor) is dropped, the rest of
# its report stored. A sensor gone wrong sends one in every report: one WARNING per device and field at
# most once a minute, with the count.
RANGE_LOG_EVERY_S = 60.0
# A gap in a device's seqs passed after the timed hold (a device without 'h'): data the city may have lost
# (reports acknowledged after a restored backup) or seqs skipped at a reboot. One WARNING per device at
# most once per 10 min, with the number of seqs given up since.
GAP_LOG_EVERY_S = 600.0
# Seqs a device's 'h' says it no longer holds that were acknowledged before and are not in this store
# (gateway.pipeline.seq_gaps: a restored older backup, a replaced store, a board on two gateways): one
# WARNING per device per gateway run, at the first such stretch. A restore shows at the first contact after
# the start; a board on two gateways (docs/scale-out.md) would otherwise warn every time the other one
# acknowledged it, so later stretches are DEBUG lines, counted in civicedge_seqs_not_held_total.
# An authentic report under a seq stored with another frame (a board whose seq counter restarted under an id
# with stored reports): refused, never acknowledged. One WARNING per device at most once per 10 min, with the count.
REUSED_LOG_EVERY_S = 600.0
# A frame the registry cannot check (its key file gone: a data directory moved away while the gateway runs)
# is counted as rejection reason registry_unreadable; its ERROR at most once a minute, with the count.
UNVERIFIED_LOG_EVERY_S = 60.0
# A report failing alone with an unexpected error (a bug it sets off; the reports committed with it are stored)
# stays in reports_problem until it commits, its device's ACK floor passes it, or it was not re-sent for
# POISON_FORGET_S (a device re-sends at most 60 s apart while it holds it). At most POISON_MAX are kept, the
# least recently failed forgotten first. Their ERROR, with the traceback, at most once per device per
# POISON_LOG_EVERY_S, counting the failures since (a device re-sends such a report every 5 s).
POISON_FORGET_S = 600.0
POISON_MAX = 64
POISON_LOG_EVERY_S = 600.0
MAX_SEQ = 0xFFFFFFFF  # the last report seq (u32)
# Bytes of a committed frame's digest kept per seq in a device window's ``recent`` (a re-send is compared there).
DIGEST_PREFIX = 8
_PREFIX_HEX = 2 * DIGEST_PREFIX
MAX_DEVICE_WARNINGS = 1024  # devices with their own warning limit per kind of warning (a fleet's old boards)
# A table of per-device warnings: keyed by device id, or (device id, field) for a warning per field.
_DeviceWarnings = dict[str | tuple[str, str], CountedWarning]


class _UnregisteredFrames:
    """Frames from devices of one rejection reason (``unknown_device`` or ``revoked``) since the last
    warning about them: the first few ids and links, bounded (a flood of made-up ids must not grow it)."""

    def __init__(self, reason: str, clock: Callable[[], float]) -> None:
        self.reason = reason
        self.limit = LogLimiter(UNREGISTERED_LOG_EVERY_S, clock)
        self._clock = clock
        self.frames = 0
        self._since = 0.0
        self._devices: dict[str, None] = {}  # insertion order: the first seen are named
        self._more_devices = False
        self._links: dict[str, None] = {}
        self._more_links = False

    def add(self, device: str, link: str) -> None:
        """Count one frame from ``device`` on ``link``."""
        if not self.frames:
            self._since = self._clock()
        self.frames += 1
        if device not in self._devices:
            if len(self._devices) < UNREGISTERED_NAMED:
                self._devices[device] = None
            else:
                self._more_devices = True
        if link not in self._links:
            if len(self._links) < UNREGISTERED_LINKS_NAMED:
                self._links[link] = None
            else:
                self._more_links = True

    def take(self) -> str:
        """The warning for the frames counted so far (device ids and links only, never a key); start over."""
        devices = ", ".join(self._devices) + (" and others" if self._more_devices else "")
        links = ", ".join(self._links) + (" and others" if self._more_links else "")
        elapsed = self._clock() - self._since
        count = "1 frame" if self.frames == 1 else "%d frames in the last %.0f s" % (self.frames, elapsed)
        if self.reason == "revoked":
            line = ("revoked device(s) %s still sending (%s) on %s: their frames are not stored; a revoked id "
                    "stays revoked (power the board off, or provision it under a new id)" % (devices, count, links))
        else:
            line = ("frames from unregistered device(s) %s (%s) on %s: register with `civicedge gateway devices "
                    "add --id ID ...` (their frames are not stored until then)" % (devices, count, links))
        self.frames, self._devices, self._more_devices, self._links, self._more_links = 0, {}, False, {}, False
        return line


@dataclass(frozen=True)
class Link:
    """Where a frame came from and how to answer on the same link.

    Attributes:
        name: ``serial:<port>`` or ``ble:<address>``.
        kind: ``serial`` or ``ble``.
        send: coroutine function sending one raw frame to the device (the transport encodes it).
        fresh: called (or None) when a report that came on this link was newly stored: it came from
            a device holding its key, where an ACK alone may answer a replayed, already stored frame.
    """

    name: str
    kind: str
    send: Callable[[bytes], Awaitable[None]]
    fresh: Callable[[], None] | None = None


def _prefix(digest: str) -> bytes:
    """The first :data:`DIGEST_PREFIX` bytes of a hex frame digest (what ``recent`` keeps per seq)."""
    return bytes.fromhex(digest[:_PREFIX_HEX])


@dataclass
class _DeviceWindow:
    """Per-device state. ``floor``: every seq <= floor is committed or its gap was given up on;
    ``above``: committed seqs above ``floor``, each with the (monotonic) time it became known, which
    is when the gap below it, if any, became visible. ``info_seq``/``info_runs``: the highest seq
    received with an ``h`` (protocol §2) and that ``h``: the freshest statement of which lower seqs
    the device still holds; ``plain_seq``: the highest seq received without one. ``wait_floor``/
    ``wait_since``/``wait_warned``: since when ACKs wait at ``floor`` for a seq the device may hold,
    and whether that was logged."""

    committed_hi: int = 0
    accepted_hi: int = 0
    floor: int = 0
    # committed seqs near the top -> their frame digest's first DIGEST_PREFIX bytes (None: not known here,
    # asked of the store): a re-send is byte-identical, another frame under the seq a restarted counter
    recent: dict[int, bytes | None] = field(default_factory=dict)
    above: dict[int, float] = field(default_factory=dict)
    pending: dict[int, "asyncio.Future[None]"] = field(default_factory=dict)
    info_seq: int = 0
    info_runs: tuple[int, ...] = ()
    plain_seq: int = 0
    wait_floor: int = -1
    wait_since: float = 0.0
    wait_warned: bool = False

    def note_held(self, seq: int, held: tuple[int, ...] | None) -> None:
        """Record an authentic report's ``h`` (the one framed last, highest seq, is the freshest) or
        that it had none."""
        if held is None:
            self.plain_seq = max(self.plain_seq, seq)
        elif seq > self.info_seq:
            self.info_seq, self.info_runs = seq, held

    @property
    def speaks_held(self) -> bool:
        """The device's latest report states its held seqs (a report without ``h`` framed after it,
        firmware rolled back, puts the device back on the timed hold)."""
        return self.info_seq > self.plain_seq

    def not_held_upto(self, s: int) -> int | None:
        """If the device's freshest ``h`` says it no longer holds ``s``, the last seq of that stretch
        (up to the next held, committed or unstated seq minus one); else None."""
        if s >= self.info_seq:
            return None  # framed after the freshest statement (or none yet)
        runs = self.info_runs
        stop = min(self.info_seq, min(self.above, default=self.info_seq))
        for i in range(0, len(runs), 2):
            if runs[i] <= s <= runs[i + 1]:
                return None  # held: it will be re-sent
            if runs[i] > s:
                stop = min(stop, runs[i])
                break
        return stop - 1

    def jump(self, to: int) -> None:
        """Give up on the seqs from ``floor + 1`` to ``to``: they are acknowledged past."""
        self.floor = to
        for s in [s for s in self.above if s <= to]:
            del self.above[s]


def _trim_above(win: _DeviceWindow) -> None:
    """Memory stays bounded however long a frame is kept back: beyond :data:`ABOVE_MAX`, forget the
    highest seqs above the floor (no gap is given up: they are committed or refused for good, and
    re-sent they are known again)."""
    if len(win.above) > ABOVE_MAX:
        for s in sorted(win.above)[ABOVE_MAX // 2:]:
            del win.above[s]


# (report, commit future, link to ACK it on after the commit, or None when a handler task acks)
_Queued = tuple[Verified, "asyncio.Future[None]", "Link | None"]


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
    once), the committed parts' results merged, and why parts failed."""

    result: BatchResult = field(default_factory=BatchResult)
    committed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    error: GatewayError | None = None  # the store failed (not split): the rest of the batch failed with it
    bug: Exception | None = None  # the first unexpected error
    poison: list[tuple[ReportRecord, Exception]] = field(default_factory=list)  # records failing alone
    floors_saved: bool = False


class IngestService:
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
                 batch_max: int = 200, clock: Callable[[], float] = time.time, gap_hold_s: float = GAP_HOLD_S,
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
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._windows: dict[str, _DeviceWindow] = {}
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
        # Failed commits since the last one that succeeded (a full disk fails every batch until space is
        # freed): logged once per OVERLOAD_LOG_EVERY_S with a count, reported by :attr:`store_problem`.
        self._failing: int = 0
        self._failing_error: GatewayError | None = None
        # the latest failing commit stored this many of its ``_failing_size`` reports before the store failed
        self._failing_stored = 0
        self._failing_size = 0
        # Reports failing alone (the rest of their commits stored: a bug each one sets off), by (device, seq),
        # until resolved (see POISON_FORGET_S): :attr:`reports_problem`, never :attr:`store_problem`.
        self._poisoned: dict[tuple[str, int], _Poisoned] = {}
        self._poison_warnings: _DeviceWarnings = {}  # device id -> its ERROR limit (see _reports_failed)
        self._stored_last = False  # the latest commit stored its reports (the store works; none yet at start)
        self._fail_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)
        self._bug_log = LogLimiter(OVERLOAD_LOG_EVERY_S, log_clock)  # tracebacks of unexpected commit errors
        self._batch_settled = False  # _commit settled the batch it handles (_abandon must not again)
        self._unverified_log = LogLimiter(UNVERIFIED_LOG_EVERY_S, log_clock)
        self._drop_warning = CountedWarning(
            OUTBOX_DROP_LOG_EVERY_S, log_clock, "MQTT outbox at its cap: dropped %d more message(s) since the last "
            "such line; the reports stay stored, only their upstream copies are lost", log)
        self._window_dup_warning = CountedWarning(
            WINDOW_DUP_LOG_EVERY_S, log_clock, "%d more release(s) for periods already stored acknowledged, not "
            "stored, since the last such line", log)
        self._unregistered = {r: _UnregisteredFrames(r, log_clock) for r in ("unknown_device", "revoked")}
        self._log_clock = log_clock
        self._hmac_warnings: _DeviceWarnings = {}  # device id -> its warning (see _hmac_failed)
        self._retired_warnings: _DeviceWarnings = {}  # device id -> its warning (see _retired_frame)
        self._policy_warning = CountedWarning(
            POLICY_LOG_EVERY_S, log_clock, "%d more report(s) refused by the privacy policy gate since the last "
            "such line", log)
        self._coarse_warning = CountedWarning(
            POLICY_LOG_EVERY_S, log_clock, "%d more report(s) with values off the gateway policy's quantum stored "
            "rounded to it since the last such line", log)
        # reports with non-personal fields dropped (sent over a shorter period than their release_every_s:
        # a board on older firmware), warned per device, so each such board is named
        self._dropped_warnings: _DeviceWarnings = {}
        # values dropped outside their valid_range (a faulty sensor), warned per (device, field)
        self._range_warnings: _DeviceWarnings = {}
        # seq gaps given up after the timed hold, warned per device (see _gap_given_up)
        self._gap_warnings: _DeviceWarnings = {}
        self._lost_warned: set[str] = set()  # devices _seqs_lost warned about in this run
        # reports under seqs committed with another frame (a restarted counter), warned per device
        self._reused_warnings: _DeviceWarnings = {}
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
            since = self._monotonic()
            self._windows[dev] = _DeviceWindow(committed_hi=hi, accepted_hi=hi, floor=floor,
                                               above=dict.fromkeys(above, since),
                                               recent=dict.fromkeys(above))
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
        if (seq in win.pending or seq in win.recent or seq <= win.committed_hi
                or seq <= win.accepted_hi - REPLAY_WINDOW):
            self._handling += 1
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
    def store_problem(self) -> str | None:
        """Why the last commit failed, while commits fail (None once one stores its reports again); for health
        checks (``commits_failing``). Reports failing alone while the others are stored are not this: they are
        :attr:`reports_problem`."""
        if not self._failing:
            return None
        if self._failing_stored:  # the store failed part way through a batch committed in parts
            return ("report store commits failing (%d in a row; the latest stored %d of its %d reports, then the "
                    "store failed: the others are not acknowledged): %s" % (
                        self._failing, self._failing_stored, self._failing_size, self._failing_error))
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
                self._metrics.ingest_paused.set(1)
                self._metrics.ingest_pauses.inc()
                more = self._pause_log.allow()
                if more is not None:
                    log.warning("ingest backlog at %d reports: pausing serial reads until it falls to %d%s", n,
                                self.max_in_flight * 3 // 4, more_since(more, "pause(s)"))
                    self._resume_unlogged = True
        elif n <= self.max_in_flight * 3 // 4:
            self.room.set()
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
        for warning in (self._drop_warning, self._window_dup_warning, self._policy_warning, self._coarse_warning,
                        *self._hmac_warnings.values(), *self._dropped_warnings.values(),
                        *self._range_warnings.values(), *self._gap_warnings.values(),
                        *self._reused_warnings.values(), *self._retired_warnings.values(),
                        *self._poison_warnings.values()):
            warning.flush()
        self._unregistered_ended()
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

    def _window(self, dev: str) -> _DeviceWindow:
        win = self._windows.get(dev)
        if win is None:
            win = self._windows[dev] = _DeviceWindow()
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
                    _trim_above(win)  # refused reports get no ACK, which trims it otherwise
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
        finally:
            self._handling -= 1
            self._pressure()

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
                    win.recent[seq] = _prefix(str(digest)) if digest else None
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
        await self._queue.put((verified, fut, None))
        if await self._committed(fut):
            if link.fresh is not None:
                link.fresh()  # not stored before (checked above): a new report
            await self._ack(verified, link)

    async def _answer_copy(self, verified: Verified, link: Link, win: _DeviceWindow) -> bool:
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
                if digest and seq in win.recent:
                    win.recent[seq] = known = _prefix(str(digest))
            if known is not None and known != _prefix(rec.digest):
                self._seq_reused(verified, link, win)
                return True
        self._metrics.duplicates.inc()
        log.debug("duplicate %s seq %d on %s: re-acknowledging", verified.frame.device_id, seq, link.name)
        if in_flight is not None and not await self._committed(in_flight):
            return True
        self._known_above(win, seq)
        await self._ack(verified, link)
        return True

    def _seq_reused(self, verified: Verified, link: Link, win: _DeviceWindow) -> None:
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

    def _known_above(self, win: _DeviceWindow, seq: int) -> None:
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

    async def _ack(self, verified: Verified, link: Link) -> None:
        dev = verified.frame.device_id
        win = self._window(dev)
        ack = self._advance_floor(dev, win)
        if ack > self._saved_floor.get(dev, 0):
            self._dirty_floors[dev] = ack
        lowest = min(win.pending, default=ack + 1)
        if lowest <= ack:
            ack = lowest - 1  # an earlier report is still uncommitted: do not acknowledge past it
        if ack < 1:
            return
        body = {"t": int(self._clock())} if self._time_sync is None or self._time_sync(verified.record) else {}
        frame = build_frame(FRAME_ACK, dev, ack, body, verified.key, verified.frame.version)
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):  # no extra Task per ACK, unlike wait_for
                await link.send(frame)
        except TimeoutError:
            log.debug("ack timeout device=%s seq=%d link=%s (the device will resend)", dev, ack, link.name)
        except (GatewayError, OSError) as exc:
            log.debug("ack failed device=%s seq=%d link=%s: %s (the device will resend)", dev, ack, link.name, exc)

    def _advance_floor(self, dev: str, win: _DeviceWindow) -> int:
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

    def _seqs_lost(self, dev: str, first: int, last: int) -> None:
        """Warn that seqs ``first..last`` of ``dev``, which it no longer holds, were acknowledged before but are
        not in this store (:func:`~gateway.pipeline.seq_gaps.acknowledged_before`): once per device per run
        (later stretches at DEBUG; all are counted in ``civicedge_seqs_not_held_total``)."""
        if dev in self._lost_warned:
            log.debug("%s: seqs %d..%d acknowledged before, not in this store (warned once in this run)",
                      dev, first, last)
            return
        if len(self._lost_warned) < MAX_DEVICE_WARNINGS:  # authentic ids only (h is signed): bounded anyway
            self._lost_warned.add(dev)
        log.warning("%s: seqs %d..%d were acknowledged before but are not in this store: the device no longer holds "
                    "them (its 'h'), more than a reboot skips, with its outbox below its cap; acknowledging past "
                    "them. Likely a restored older backup, a store moved or replaced, or another gateway acknowledged "
                    "them (a board on two gateways); or, once, a board re-provisioned with a --seq-start far above "
                    "its last seq. Their reports are not here (in the newer store or the other gateway, if anywhere). "
                    "Said once per device until the gateway restarts; later such seqs count in "
                    "civicedge_seqs_not_held_total", dev, first, last)

    def _gap_given_up(self, dev: str, first: int, last: int) -> None:
        """Warn that seqs ``first..last`` of ``dev`` are acknowledged past without arriving, at most once per
        :data:`GAP_LOG_EVERY_S` per device, counting the seqs given up since the last such line."""
        self._metrics.seqs_given_up.inc(last - first + 1)
        counted = self._device_warning(self._gap_warnings, dev, GAP_LOG_EVERY_S,
                                       "seq(s) of %s given up since the last such line (never arrived, acknowledged "
                                       "past)").count(last - first + 1)
        if counted is None:
            return
        log.warning("%s: gap accepted seqs=%d..%d: never arrived, acknowledging past them: reports the device sent "
                    "and no longer holds are lost (a store restored from a backup misses those acknowledged after "
                    "it), or seqs it skipped at a reboot were never sent (boards without 'h' in their reports cannot "
                    "tell the gateway which)%s", dev, first, last,
                    more_since(counted[0] - (last - first + 1), "seq(s) of this device given up"))

    def _wait_held(self, dev: str, win: _DeviceWindow, now: float) -> int:
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
        _trim_above(win)
        return win.floor

    def _settled(self, count: int) -> None:
        """``count`` reports queued by feed() are committed (their ACK tasks exist) or failed."""
        self._outstanding -= count
        if self._outstanding <= 0:
            self._outstanding = 0
            self._drained.set()
        self._pressure()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._batch_s
            while len(batch) < self._batch_max:
                try:  # take what is already queued without a wait_for per report
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            self._batch_settled = False
            try:
                await self._commit(batch)
            except Exception:  # a bug after the store call: the writer must outlive it (module docstring)
                self._abandon(batch)

    def _abandon(self, batch: list[_Queued]) -> None:
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

    def _commit_failed(self, size: int, exc: GatewayError, *, stored: int = 0) -> None:
        """Count a failed commit and log it, at most one line per :data:`OVERLOAD_LOG_EVERY_S` (a full
        disk fails every batch: hundreds of lines a minute), saying how many it left out. ``stored``: how
        many reports of the batch parts committed before it failed (:attr:`store_problem` describes the
        latest failing commit)."""
        self._metrics.store_commit_failures.inc()
        self._failing += 1
        self._failing_error = exc
        self._failing_stored, self._failing_size = stored, size + stored
        more = self._fail_log.allow()
        if more is not None:
            log.error("commit of %d report(s) failed, not acknowledging them (devices re-send): %s%s", size, exc,
                      more_since(more, "failed commit(s)"))

    def _outbox_dropped(self, n: int) -> None:
        """Warn about upstream messages dropped at the outbox cap, at most once per interval, with the count."""
        counted = self._drop_warning.count(n)
        if counted is not None:
            dropped, commits = counted
            log.warning("MQTT outbox at its cap ([mqtt] outbox_max_bytes): dropped %d message(s)%s; the reports stay "
                        "stored, only their upstream copies are lost", dropped,
                        " in %d commit(s) since the last such line" % commits if commits > 1 else "")

    def _window_duplicates(self, dups: list[WindowDuplicate]) -> None:
        """Count releases not stored because their period's release was, and warn at most once per
        :data:`WINDOW_DUP_LOG_EVERY_S` naming the last one and counting the others since the last such
        line (a board re-releases every period since its clock was set back: one line each would flood)."""
        self._metrics.duplicate_windows.inc(len(dups))
        counted = self._window_dup_warning.count(len(dups))
        if counted is None:
            return
        d = dups[-1]
        log.warning("%s: %s release of %s for the period %s (w=%d, l=%d s) is already stored (seq %d): seq %d "
                    "acknowledged, not stored (its clock was set back?)%s", d.device, d.type, ",".join(d.fields),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.w)), d.w, d.l, d.kept_seq, d.seq,
                    more_since(counted[0] - 1, "such release(s)"))

    @staticmethod
    def _unregistered_frame(frames: _UnregisteredFrames, device: str, link: Link) -> None:
        """Count a frame from an unknown or revoked device; warn with the ones since the last such line
        at most once per :data:`UNREGISTERED_LOG_EVERY_S` (each frame is also an INFO rejection)."""
        frames.add(device, link.name)
        if frames.limit.allow() is not None:
            log.warning("%s", frames.take())

    def _device_warning(self, table: _DeviceWarnings, device: str, every_s: float,
                        held: str, *, fld: str | None = None) -> CountedWarning:
        """``device``'s own rate-limited warning in ``table``, made on first use (``held``: the line for
        the count held back, with ``%s`` for the device). With ``fld``, one per device and field (keyed
        ``(device, fld)``, ``%s`` is ``"<device> <fld>"``). At :data:`MAX_DEVICE_WARNINGS` entries the
        table starts afresh, logging what it held: a flood of ids cannot grow it."""
        key: str | tuple[str, str] = device if fld is None else (device, fld)
        warning = table.get(key)
        if warning is None:
            if len(table) >= MAX_DEVICE_WARNINGS:
                for held_back in table.values():
                    held_back.flush()
                table.clear()
            who = device if fld is None else "%s %s" % (device, fld)
            warning = table[key] = CountedWarning(every_s, self._log_clock,
                                                  "%d more " + held % who.replace("%", "%%"), log)
        return warning

    def _hmac_failed(self, device: str, link: Link) -> None:
        """Warn that frames of the registered ``device`` fail their HMAC check, at most once per
        :data:`HMAC_LOG_EVERY_S` per device, counting the others since the last such line. Names the
        device and link only: never the key, the tag or the frame."""
        counted = self._device_warning(self._hmac_warnings, device, HMAC_LOG_EVERY_S,
                                       "frame(s) of %s failed their HMAC check since the last such line (not stored, "
                                       "not acknowledged)").count()
        if counted is None:
            return
        log.warning("frames of registered device %s fail their HMAC check on %s: not stored and not acknowledged, so "
                    "the board keeps its reports (until its outbox cap, then it drops the oldest); it most likely still "
                    "holds an old key, not the registry's (was its key rotated? `civicedge gateway devices "
                    "rotate-key`, or re-provisioned elsewhere). Without loss: give the registry the board's key (the "
                    "\"key\" of its /identity.json, `mpremote connect PORT cat :/identity.json`) with `PUT "
                    "/api/admin/devices/%s` and \"replace\": true, its registered kind, zone and location "
                    "(docs/api.md); then it delivers what it holds. Only if the board may not keep that key: re-key "
                    "it (`civicedge provision ... --force --take-over --discard-unsent`, docs/field.md), which drops "
                    "its un-sent reports. Or someone sends frames under its id%s",
                    device, link.name, device, more_since(counted[0] - 1, "such frame(s)"))

    def _retired_frame(self, device: str, link: Link) -> None:
        """Warn that the retired ``device`` still sends, at most once per :data:`RETIRED_LOG_EVERY_S` per
        device, counting the others since the last such line."""
        counted = self._device_warning(self._retired_warnings, device, RETIRED_LOG_EVERY_S,
                                       "frame(s) of retired device %s refused since the last such line (not stored, "
                                       "not acknowledged)").count()
        if counted is None:
            return
        log.warning("retired device %s still sends on %s: its frames are refused and not acknowledged, so the board "
                    "keeps its reports for the gateway that serves it now. If it is back with this gateway: "
                    "`civicedge gateway devices reinstate %s` (or POST /api/admin/devices/%s/reinstate)%s",
                    device, link.name, device, device, more_since(counted[0] - 1, "such frame(s)"))

    def _policy_refused(self, exc: RejectedReport) -> None:
        """Warn about an authentic report the policy gate refused, at most once per
        :data:`POLICY_LOG_EVERY_S`, naming its device, seq and rule (the gate's messages quote no
        personal value) and counting the others since the last such line."""
        counted = self._policy_warning.count()
        if counted is None:
            return
        rule = str(exc).split(": ", 1)[-1]  # the verifier's message is "<device> seq <n>: <rule>"
        log.warning("%s seq %s refused by the privacy policy gate: %s; it is authentic, so it is acknowledged and "
                    "deleted on the device: its data is lost (a board flashed with a looser policy.json than the "
                    "gateway's? docs/privacy.md, policy changes)%s", exc.device_id, exc.seq, rule,
                    more_since(counted[0] - 1, "policy refusal(s)"))

    def _dropped(self, device: str, seq: int, fields: tuple[str, ...]) -> None:
        """Count the fields dropped from a stored report and warn, at most once per
        :data:`POLICY_LOG_EVERY_S` for each device, naming them."""
        self._metrics.fields_dropped.labels("release_period").inc(len(fields))
        counted = self._device_warning(self._dropped_warnings, device, POLICY_LOG_EVERY_S,
                                       "report(s) of %s with fields over a shorter period than their release period "
                                       "dropped since the last such line").count()
        if counted is None:
            return
        log.warning("%s seq %d: %s sent over a shorter period than its release period (policy release_every_s), "
                    "dropped: not stored or published, the rest of the report kept (the board runs older firmware: "
                    "flash the new firmware)%s", device, seq, ", ".join(fields),
                    more_since(counted[0] - 1, "such report(s) of this device"))

    def _out_of_range(self, rec: ReportRecord, values: tuple[OutOfRange, ...]) -> None:
        """Count the values dropped from a stored report outside their field's ``valid_range`` and warn,
        at most once per :data:`RANGE_LOG_EVERY_S` for each device and field, naming the device, the
        field, the value and the range (ranges are on non-personal fields only, so the value says nothing
        about people)."""
        self._metrics.fields_dropped.labels("out_of_range").inc(len(values))
        for v in values:
            self._metrics.values_out_of_range.labels(rec.kind, v.field).inc()
            counted = self._device_warning(self._range_warnings, rec.device, RANGE_LOG_EVERY_S,
                                           "%s value(s) outside the policy valid_range dropped since the last "
                                           "such line", fld=v.field).count()
            if counted is None:
                continue
            log.warning("%s seq %d: %s = %d is outside its valid_range [%d, %d] (policy), dropped: not stored or "
                        "published, the rest of the report kept (a faulty sensor or firmware: check the board)%s",
                        rec.device, rec.seq, v.field, v.value, v.low, v.high,
                        more_since(counted[0] - 1, "such value(s) of this device and field"))

    def _coarsened(self, device: str, seq: int, fields: tuple[str, ...]) -> None:
        """Warn, at most once per :data:`POLICY_LOG_EVERY_S`, that a report was stored with values rounded
        to the gateway policy's quantum (the board runs a policy with a finer one)."""
        counted = self._coarse_warning.count()
        if counted is None:
            return
        log.warning("%s seq %d: %s off the gateway policy's quantum, stored rounded to it (the board runs another "
                    "policy.json: flash it with the gateway's)%s", device, seq, ", ".join(fields),
                    more_since(counted[0] - 1, "such report(s)"))

    def _unregistered_ended(self) -> None:
        """At stop: log the frames from unregistered devices held back by the limit."""
        for frames in self._unregistered.values():
            if frames.frames:
                log.warning("%s", frames.take())
            frames.limit.reset()

    async def _store_parts(self, records: list[ReportRecord], floors: dict[str, int]) -> _Stored:
        """Commit ``records`` with ``floors``; a part failing with an unexpected error (a bug, likely set off
        by one odd record) is retried in halves, down to single records, so that record fails alone.

        Parts are committed in record order. At most ``2 * len(records).bit_length()`` parts are split, so
        a batch holding one such record costs about ``2 * log2(n) + 1`` commits, and a bug that every
        record sets off does not cost ``2n - 1``. A :class:`GatewayError` (a full disk, a locked or damaged
        store) is not about a record: not split, and what was not committed yet fails with it. Each failed
        part's transaction was rolled back by the store (its chain head and outbox totals in memory only
        move on a commit), so committing the halves again is safe.
        """
        out = _Stored()
        parts = [(0, len(records))]  # a stack of [lo, hi) ranges, the lowest on top
        splits = 2 * len(records).bit_length()
        saved: dict[str, int] | None = floors  # ACK floors ride with the first part committed
        while parts:
            lo, hi = parts.pop()
            if out.error is not None:  # the store fails (not a record): the rest is not tried
                out.failed.extend(range(lo, hi))
                continue
            try:
                result = await self.run_in_store(self.store.insert_batch, records[lo:hi], saved)
            except asyncio.CancelledError:
                raise
            except GatewayError as exc:
                out.error = exc
                out.failed.extend(range(lo, hi))
                continue
            except Exception as exc:  # a bug, not the disk: the writer must outlive it (devices re-send)
                if out.bug is None:
                    out.bug = exc
                if hi - lo == 1:
                    out.poison.append((records[lo], exc))
                elif splits > 0:
                    splits -= 1
                    mid = (lo + hi) // 2
                    parts += [(mid, hi), (lo, mid)]
                    continue
                out.failed.extend(range(lo, hi))
                continue
            assert isinstance(result, BatchResult)
            merged = out.result
            merged.inserted += result.inserted
            merged.duplicates += result.duplicates
            merged.window_duplicates += result.window_duplicates
            merged.outbox_dropped += result.outbox_dropped
            out.committed.extend(range(lo, hi))
            saved = None
        out.floors_saved = saved is None
        return out

    @staticmethod
    def _internal(stored: _Stored, size: int) -> StorageError:
        """The error the reports of a commit failing with an unexpected error fail with."""
        bug = stored.bug
        assert bug is not None
        error = StorageError("storing %d of %d reports failed: unexpected %s (see the traceback logged)"
                             % (len(stored.failed), size, type(bug).__name__), reason="internal")
        error.__cause__ = bug
        return error

    def _bug_failed(self, stored: _Stored, size: int) -> StorageError:
        """Log an unexpected error of a commit storing nothing (or failing at the store after some parts) once
        per burst, with the traceback (of a report that set it off alone when one was found, named by device
        and seq), and return the error its reports fail with."""
        bug = stored.bug
        assert bug is not None
        failed = len(stored.failed)
        more = self._bug_log.allow()
        if more is not None:
            exc = stored.poison[0][1] if stored.poison else bug
            what = "commit of %d report(s)" % size
            if stored.poison:
                shown = stored.poison[:UNREGISTERED_NAMED]
                what = "storing " + ", ".join("%s seq %d" % (rec.device, rec.seq) for rec, _ in shown)
                if len(stored.poison) > len(shown):
                    what += " and %d more" % (len(stored.poison) - len(shown))
            log.error("%s failed with an unexpected error (a civicedge bug: please report it with this traceback): "
                      "%d of the %d report(s) of the commit not stored or acknowledged (their devices re-send them), "
                      "%d stored%s", what, failed, size, len(stored.committed), more_since(more, "such error(s)"),
                      exc_info=(type(exc), exc, exc.__traceback__))
        return self._internal(stored, size)

    def _fails_alone(self, stored: _Stored) -> bool:
        """Whether the reports failing in ``stored`` fail by themselves (each sets off a bug) rather than the
        commit: only unexpected errors, and the rest of the batch stored, or, the whole batch failing,
        each failed report failing alone (the split isolated it) and known to fail alone already, but for
        at most one new one right after a commit that stored its reports (the store works: one report's
        re-send committed on its own, between other devices' batches, is not an outage; two new ones in a
        row, or a bug every report sets off, are)."""
        if stored.error is not None or stored.bug is None:
            return False
        if stored.committed:
            return True
        if len(stored.poison) != len(stored.failed):
            return False
        new = sum(1 for rec, _ in stored.poison if (rec.device, rec.seq) not in self._poisoned)
        return new == 0 or (new == 1 and self._stored_last)

    def _reports_failed(self, batch: list[_Queued], stored: _Stored) -> StorageError:
        """Note the reports of ``stored`` failing alone for :attr:`reports_problem` and log them: an ERROR with
        the traceback at most once per :data:`POISON_LOG_EVERY_S` per device, counting its failures since
        (its device re-sends such a report every few seconds). Counted in ``store_report_failures``, per report,
        not in ``store_commit_failures`` (whose alert pages): not a failing commit (:attr:`store_problem`), the
        others are stored. Returns the error they fail with."""
        self._metrics.store_report_failures.inc(len(stored.failed))
        bug = stored.bug
        assert bug is not None
        alone = {(rec.device, rec.seq): exc for rec, exc in stored.poison}
        now = self._monotonic()
        self._forget_poisoned()
        logged: list[tuple[ReportRecord, Exception, int]] = []
        for i in stored.failed:
            rec = batch[i][0].record
            key = (rec.device, rec.seq)
            exc = alone.get(key, bug)
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
        return self._internal(stored, len(batch))

    def _fail(self, batch: list[_Queued], failed: list[int], exc: GatewayError) -> None:
        """Fail the reports ``batch[i]`` for ``i`` in ``failed``: not stored, not acknowledged (the device
        re-sends them, verified again). Each device's ACK stays below its lowest failed seq while the device
        re-sends it: a timed gap hold (devices without ``h``) counts from this failure, not from when the
        seq above it became known, so a report that keeps failing is never acknowledged past."""
        now = self._monotonic()
        lowest: dict[str, int] = {}
        for i in failed:
            verified, fut, _ = batch[i]
            rec = verified.record
            win = self._window(rec.device)
            if win.pending.get(rec.seq) is fut:
                del win.pending[rec.seq]
            if not fut.done():
                fut.set_exception(exc)
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

    async def _commit(self, batch: list[_Queued]) -> None:
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
        if outcome.failed:
            if self._fails_alone(outcome):
                error: GatewayError | None = self._reports_failed(batch, outcome)
            else:
                internal = self._bug_failed(outcome, len(batch)) if outcome.bug is not None else None
                error = outcome.error or internal  # a failing store says more than the bug
                assert error is not None
                self._commit_failed(len(outcome.failed), error, stored=len(outcome.committed))
            assert error is not None
            self._fail(batch, outcome.failed, error)
        # the store works when its latest commit stored its reports (see _fails_alone)
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
        if self._failing and outcome.error is None:  # reports stored again (some failing alone is not an outage)
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
            recent[seq] = None if dup is not None and (dev, seq) in dup else bytes.fromhex(rec.digest[:_PREFIX_HEX])
            if seq > win.floor:
                win.above.setdefault(seq, now)
            if seq > win.committed_hi:
                win.committed_hi = seq
            # keep the in-memory set bounded to the window
            if len(recent) > 2 * REPLAY_WINDOW:
                floor = win.committed_hi - REPLAY_WINDOW
                win.recent = {s: d for s, d in recent.items() if s > floor}
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
        # One cumulative ACK per device and link covers every report of it in this commit.
        for verified, link in acks.values():
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
