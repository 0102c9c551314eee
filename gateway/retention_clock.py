"""The time retention removes values by, and when it must not trust the gateway's clock at all.

Retention removes field values for good, by the gateway's clock: a clock stepped forward (a bad NTP or
GPS source, an RTC that lost its battery, an operator's typo, a simulated clock moved on) removes
months of data in one pass. Two checks keep it to a plausible clock:

* **Against the data.** Every stored report carries its reception time (``received_at``), stamped by
  the same clock. A clock earlier than the last stored report's (by more than
  :data:`CLOCK_BACK_TOLERANCE_S`) was set back; one later than it by more than the retention interval
  plus :data:`AHEAD_MARGIN_S` has either jumped or received nothing for that long. Either way the pass
  is skipped (reason ``clock_behind`` / ``clock_ahead``): a WARNING when it starts, the counter
  ``civicedge_retention_skipped_total{reason}``, and a ``/healthz`` reason while it lasts. A gateway
  started after a long stop resumes on its own: once a report arrives, the last reception time is the
  clock's again. An empty store has nothing to check against (and nothing to remove).
* **Against the time elapsed.** While the gateway runs, the wall clock is compared with the monotonic
  clock between passes. A step of more than :data:`STEP_TOLERANCE_S` either way is not followed: the
  removal time is the wall clock less the forward steps seen since the start (never negative), so a
  clock that jumps ahead while reports keep arriving (and keep being stamped by it, which defeats the
  first check) removes nothing early; a step back that undoes a jump undoes its offset (and the reports
  stamped while it was ahead, now ahead of the clock by up to that offset, do not make it ``clock_behind``).
  A forward step
  of a clock that was *behind* the stored reports is a correction (NTP after a boot without a real-time
  clock) and is followed up to the data check's margin. Logged at WARNING once per step. Time measured
  since a pass that ran is real time: a gateway that stops receiving reports keeps removing by it
  (without this, stored values would outlive their retention once the devices fall silent). The gateway
  measures elapsed time with :func:`elapsed_clock`, which counts suspend (``CLOCK_BOOTTIME`` on Linux;
  ``time.monotonic`` does not): a suspended host or VM that resumes with its wall clock right is not a
  forward step (else each resume added the time suspended to the offset, saved for good, and withheld ACK
  time). (A VM paused by its hypervisor stops both clocks: NTP stepping its wall clock forward by the pause
  afterwards is a forward step like any other, recorded as an offset until the operator confirms.) Not applied under ``[sim_clock]``: the simulation moves its clock as it likes
  and time elapsed means nothing there (the first check still applies).

  The offset outlives a restart: the part the operator has not confirmed is saved in the store's ``meta``
  row (:data:`META_KEY`, ``step``: the offset, the clock's reading at the last pass, and how far the stored
  reports may be ahead), or else the first report after the restart, stamped by the jumped clock, makes the
  data check agree and retention (past the first pass's large-removal rule) and ACK time sync
  (:meth:`RetentionClock.stepped_ahead`) trust the jump again. It is saved when a pass sees it: the running
  gateway runs its pass as soon as it sees a step (:meth:`RetentionClock.stepped_since_pass`, looked at every
  :data:`CONFIRM_POLL_S`), and a stop records a step since the last pass (:meth:`RetentionClock.note_stop`).
  At the first pass after the start (or the first ACK, if earlier) the clock is compared with its saved
  reading:

  - not set back by more than :data:`STEP_TOLERANCE_S`: the offset still counts, but until a pass has run in
    this run the data check is made in the clock's own terms, against the later of the last stored report
    and that saved reading (the offset counts there only for steps measured in this run): a clock that jumped
    again while the gateway was stopped is ``clock_ahead`` (held) as it is without a saved step, not hidden by
    the saved offset;
  - set back by more (the clock put right while the gateway was stopped): the step back undoes as much of the
    offset, as it does while running. The time the gateway was stopped cannot be told, so what is left is at
    most that time, or a clock set back only part of the way: within the data check's margin (the interval
    plus :data:`AHEAD_MARGIN_S`, a forward error the data check follows anyway) it is dropped (the clock was
    put right); beyond it, retention is *held* as for ``clock_ahead`` (below: ``/healthz`` ``retention_held``,
    released after :data:`CONFIRM_SPAN_S` of agreement or by a confirm) *and* what is left is kept as the
    offset until the operator confirms: the reports that end the hold by agreement are stamped by that clock,
    which may still be ahead, so removal is late (by at most the time stopped) rather than early, and ACK time
    stays withheld (:meth:`RetentionClock.stepped_ahead`).

  The reports stamped while the clock was ahead are then ahead of it by up to the offset undone: a clock
  behind the newest of them by no more than that is not skipped as ``clock_behind`` (before, it was until a
  report stamped by the new clock was stored: with no device reporting, until real time caught up with the
  jump); the allowance ends once the newest stored report agrees with the clock, and is set afresh at a step
  back once a report was stored since the last one. A clock set back further is ``clock_behind`` as before.
  The offset ends when the operator confirms (:meth:`RetentionClock.confirm`, taken at the next pass: that
  pass and the next remove by the clock itself, and nothing is saved), or a step back undoes it. While it
  lasts it is the gauge ``civicedge_retention_clock_offset_seconds`` and ``civicedge gateway retention`` shows it.

A suspicion outlives a restart, and reports do not confirm the clock that stamps them. A pass skipped as
``clock_ahead`` *holds* retention (reason ``held``): the hold is saved in the store's ``meta`` table
(:data:`META_KEY`, with the time of the last pass that ran; one that held only its report rows
removed the field values by that time, and counts) and kept after the clock agrees with the
data again, because the data after the jump was stamped by the same clock. It is released once the
clock has agreed with the stored reports for :data:`CONFIRM_SPAN_S` of time measured while the gateway
runs (the monotonic clock; the gateway's clock under ``[sim_clock]``), or at once when the operator
confirms (``civicedge gateway retention --confirm`` writes :data:`CONFIRM_FILE` in the data directory).
A pass that would remove more than :data:`HOLD_SHARE` of a field's stored values (at least
:data:`HOLD_MIN_VALUES` of them) whose retention did not change since the last pass is held the same way,
with an ERROR, before anything is removed: a clock that was already wrong when the gateway started
passes both checks above. The rule applies only where nothing else vouches for the clock: the first pass
of a run, and the first after a pass skipped as ``clock_behind`` / ``clock_ahead``. Once a pass has run,
the next ones of the same run are checked by the time elapsed (the step check; under ``[sim_clock]``, whose
clock the simulation moves on purpose, the data check alone), and their share may be large for good
reasons: a fleet fallen silent sees its last values go, a retention shorter than the interval removes
most of a field each pass. docs/gateway.md (Retention) explains the cases.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

# How far the clock may be behind the last stored report's reception time (NTP slewing, a report
# stamped just before a small correction) before the pass is skipped as a clock set back.
CLOCK_BACK_TOLERANCE_S = 300.0
# How far beyond one retention interval the clock may be ahead of the last stored report before the
# pass is skipped: devices report every 15 min (some once a day), so a day without any report is a
# gateway that was off, cut off, or whose clock jumped. A forward jump smaller than this is followed.
AHEAD_MARGIN_S = 86400.0
# A wall-clock step (wall minus monotonic time between two passes) larger than this is not followed.
STEP_TOLERANCE_S = 300.0
# While passes are skipped they are tried again this often (s), so a gateway that receives a report
# resumes within a minute (and /healthz clears), not after a whole interval.
SKIPPED_RETRY_S = 60.0
# A held retention is released once the clock has agreed with the stored reports for this long (s).
CONFIRM_SPAN_S = 86400.0
# A pass that would remove more than this share of a field's stored values, and at least
# HOLD_MIN_VALUES of them, is held (unless its retention changed since the last pass, or confirmed).
HOLD_SHARE = 0.5
HOLD_MIN_VALUES = 50
# The store's meta row holding what the checks know (a hold, the last pass that ran), as JSON.
META_KEY = "retention_clock"
# Written in the data directory by `civicedge gateway retention --confirm`; read (and removed) by the
# next pass, which then runs whatever it removes.
CONFIRM_FILE = "retention-confirm"
# How a pass that took the operator's confirmation ended without finishing (CONFIRM_FILE is used up by it: a
# confirmation is for the clock as it read then, never carried over a restart), as the state saves it.
CONFIRM_ENDED = {"stopped": "the gateway stopped or was killed during it", "failed": "it failed",
                 "skipped": "it was skipped (the clock was behind the stored reports)"}
# How often (s) the running gateway looks for CONFIRM_FILE between passes (one stat, no store read): a
# confirm wakes the retention task within this, not at the next pass (interval_s may be an hour).
CONFIRM_POLL_S = 2.0


def elapsed_clock() -> Callable[[], float]:
    """The clock the step check measures elapsed time with: one that counts time suspended
    (``CLOCK_BOOTTIME``, Linux) where there is one, else ``time.monotonic``."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    clock_gettime = time.clock_gettime
    return lambda: clock_gettime(boottime)


@dataclass
class LargeRemovalHold:
    """What makes a retention pass hold instead of removing (gateway.storage.ReportStore.apply_retention).

    Attributes:
        share: a field losing more than this share of its stored values holds the pass ...
        min_values: ... if it loses at least this many.
        exempt: ``(kind, field)`` whose retention changed since the last pass (removed as asked).
        held: filled by the store: one line per field that held the pass (empty: the pass ran).
    """

    share: float = HOLD_SHARE
    min_values: int = HOLD_MIN_VALUES
    exempt: frozenset[tuple[str, str]] = frozenset()
    held: list[str] = field(default_factory=list)


def _days(seconds: float) -> str:
    return "%.1f days" % (seconds / 86400) if abs(seconds) >= 86400 else "%.0f s" % seconds


def _when(t: float | None) -> str:
    if not _plausible(t):
        return "an unknown time"  # (a saved time that could not be read)
    assert t is not None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


# Saved times and spans beyond this (s; the year 5138) are not the gateway's: NaN, 1e300 and the like made
# time.gmtime raise at every pass.
_PLAUSIBLE_MAX_S = 1e11


def _plausible(v: object) -> bool:
    """A finite number of seconds in [0, 1e11] (not a bool): a time or span the gateway can have saved."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and 0 <= v <= _PLAUSIBLE_MAX_S)



def parse_saved_state(saved: str) -> tuple[dict[str, Any] | None, float | None, dict[str, int] | None,
                                           dict[str, float] | None]:
    """The hold, last pass time, its retention and the unconfirmed forward step (``{"offset", "at",
    "stamped"}``, or None; rows saved before it existed have none) from the ``meta`` row :data:`META_KEY`
    (:meth:`RetentionClock.state`'s JSON).

    A field that cannot be read is left out on its own, with a WARNING, and the rest kept: a hold stays a
    hold (a ``since`` that is not a plausible time becomes None, shown as an unknown time; an ``agreed_s``
    that is not a plausible span starts the span again), a bad ``ran_at`` or ``step`` is dropped (a step
    with keys of a later version is read by the three it needs).

    Raises:
        ValueError: the row is not one the gateway writes (saying what is wrong); the gateway then starts
            its checks afresh, not held.
    """
    state = json.loads(saved)
    if not isinstance(state, dict):
        raise ValueError("JSON, but not an object")
    hold = state.get("hold")
    if hold is not None and not (isinstance(hold, dict) and hold.get("reason") in ("clock_ahead", "large_removal")
                                 and "since" in hold and "agreed_s" in hold):
        raise ValueError("bad hold %r" % (hold,))
    if hold is not None:
        if hold["since"] is not None and not _plausible(hold["since"]):
            log.warning("retention: the saved hold's start %r is not a time; kept as unknown", hold["since"])
            hold["since"] = None
        if not _plausible(hold["agreed_s"]):
            log.warning("retention: the saved hold's agreed span %r is not a span; it starts again", hold["agreed_s"])
            hold["agreed_s"] = 0.0
    ran_at, days = state.get("ran_at"), state.get("days")
    if ran_at is not None and not _plausible(ran_at):
        log.warning("retention: the saved time of the last pass %r is not a time; left out", ran_at)
        ran_at = None
    if days is not None and not (isinstance(days, dict) and all(isinstance(v, int) for v in days.values())):
        raise ValueError("bad days %r" % (days,))
    step = state.get("step")
    if step is not None:
        if (isinstance(step, dict) and all(k in step and _plausible(step[k]) for k in ("offset", "at", "stamped"))):
            step = {k: float(step[k]) for k in ("offset", "at", "stamped")}
        else:
            log.warning("retention: the saved clock step %r cannot be read; left out (the rest of the saved "
                        "state is kept)", step)
            step = None
    return hold, ran_at, days, step


def parse_saved_confirm(saved: str) -> dict[str, Any] | None:
    """The operator's confirmation a pass took and did not finish with (``{"given", "taken", "ended"}``: when
    it was written, the gateway clock at the pass, and how the pass ended: None while it runs, else a key of
    :data:`CONFIRM_ENDED`) from the ``meta`` row :data:`META_KEY`, or None (none saved, or one that cannot be
    read: it only informs, so it is left out with a WARNING)."""
    try:
        state = json.loads(saved)
    except ValueError:
        return None  # (parse_saved_state says so)
    use = state.get("confirm") if isinstance(state, dict) else None
    if use is None:
        return None
    if not (isinstance(use, dict) and use.get("ended") in (None, *CONFIRM_ENDED)
            and all(use.get(k) is None or _plausible(use.get(k)) for k in ("given", "taken"))):
        log.warning("retention: the saved confirmation %r cannot be read; left out", use)
        return None
    return {"given": use.get("given"), "taken": use.get("taken"), "ended": use.get("ended")}


def confirm_command_for(config_file: Path | None) -> str:
    """The confirm command the operator is told to run: with the gateway's ``--config`` (when it has a config
    file), so it confirms this gateway's retention, not the built-in defaults' data directory's."""
    return "civicedge gateway retention --confirm" + (
        "" if config_file is None else " --config %s" % shlex.quote(str(config_file.resolve())))


def confirm_note(use: dict[str, Any], confirm_command: str) -> str:
    """What the operator is told of a confirmation used by a pass that did not finish (``use``: as
    :func:`parse_saved_confirm` gives it, ``ended`` None read as ``stopped``)."""
    return ("the operator's confirmation given at %s was used by the retention pass of %s (gateway clock), which did "
            "not finish: %s; a confirmation is good for one pass, so nothing is removed on it any more: confirm "
            "again: %s" % (_when(use["given"]), _when(use["taken"]), CONFIRM_ENDED[use["ended"] or "stopped"],
                           confirm_command))


class RetentionClock:
    """Decides, before each retention pass, the time to remove by, or that the pass is skipped.

    Args:
        interval_s: the retention interval (``[retention] interval_s``).
        monotonic: the monotonic clock to measure elapsed time with; None under ``[sim_clock]``.

    Attributes:
        problem: why passes are skipped now (for ``/healthz``), or None.
        reason: the metric label of :attr:`problem` (``clock_behind`` / ``clock_ahead`` / ``held``), or None.
        offset: forward steps of the wall clock seen while running (or saved before a restart and not
            undone since), not followed (s).
        hold: the hold retention is under (saved with :meth:`state`, taken back by :meth:`restore`), or None.
    """

    def __init__(self, interval_s: float, monotonic: Callable[[], float] | None = time.monotonic,
                 confirm_command: str = "civicedge gateway retention --confirm") -> None:
        self._interval = interval_s
        # What the messages tell the operator to run: with the running gateway's --config, so the command
        # confirms this gateway's retention, not the built-in defaults' data directory's.
        self.confirm_command = confirm_command
        self._mono = monotonic
        self._prev: tuple[float, float] | None = None
        # (removal time, monotonic time) of the last pass that ran: while no step is seen, time elapsed
        # since then is real, so a gateway that stops receiving reports keeps removing (not "ahead")
        self._ran: tuple[float, float] | None = None
        self.offset = 0.0
        # The unconfirmed step saved before this start (offset, clock at the last pass, stamped), judged
        # against the clock at the first pass or ACK (_take_saved_step), then None.
        self._saved_step: tuple[float, float, float] | None = None
        self._judged_at: float | None = None  # the clock it was judged at (saved until a pass has run)
        # A saved step that still counts (clock not set back while stopped): (its offset, the clock's reading
        # at the last pass before this start). Until a pass has run in this run, the data check is made in the
        # clock's own terms against that reading: the saved offset says nothing of a jump made while stopped.
        self._carried: tuple[float, float] | None = None
        # How far the stored reports may be ahead of the clock: stamped while it was ahead by an offset
        # since undone (a step back, or the clock put right while stopped); 0 once the newest agrees.
        self._stamped = 0.0
        # The newest stored report's reception time when that allowance was set: a newer one since was stamped
        # under the offset in force then, so a later step back sets the allowance afresh (not the larger of both).
        self._stamped_last: float | None = None
        self._vouch = False  # the operator confirmed: the next pass ends the offset
        self.problem: str | None = None
        self.reason: str | None = None
        # A hold (saved in the store's meta, restore()): {"reason": "clock_ahead" | "large_removal",
        # "since": clock time it began, "detail": what was seen, "agreed_s": time the clock has agreed since}
        self.hold: dict[str, Any] | None = None
        # removal time of the last pass that removed field values (one that ran, or held its rows only):
        # time the clock was trusted at (saved: outlives a restart)
        self._ran_at: float | None = None
        self._removal: float | None = None  # the removal time removal_time() last gave
        self._days: dict[str, int] | None = None  # the retention of that pass, "kind.field" -> days
        self._since_pass: tuple[float, float | None] | None = None  # (clock, monotonic) at the previous pass
        self._ahead = ""  # the clock_ahead finding, in short (a hold's detail)
        self._confirmed = False  # the operator confirmed (or the hold's span ended): the next pass runs
        # The operator's confirmation taken by a pass ({"given": the file's time, "taken": the clock at the pass,
        # "ended": None while that pass runs}): saved with the state until that pass ran (or the hold it was
        # for ended), so a start after a stop during the pass tells the operator it is used up, not silently
        # held again. _confirm_told: the operator was told so (a WARNING) in this run.
        self._confirm_use: dict[str, Any] | None = None
        self._confirm_told = False
        # restore() found a confirmation saved while its pass ran: what it read differs from state() (to save).
        self.confirm_cut_off = False
        # A pass ran in this run and none was skipped since: the large-removal rule does not apply (the
        # time elapsed vouches for the clock since, see the module docstring).
        self._continuous = False

    def restore(self, saved: str | None) -> None:
        """Take back what the checks knew before a restart (the ``meta`` row :data:`META_KEY`, or None).

        A row that cannot be read is logged and left out (the checks start afresh, as before it existed).
        """
        if saved is None:
            return
        try:
            hold, ran_at, days, step = parse_saved_state(saved)
        except ValueError as exc:
            log.warning("retention: the saved state of its clock checks (meta %s) cannot be read (%s); starting "
                        "afresh", META_KEY, exc)
            return
        self.hold, self._ran_at, self._days = hold, ran_at, days
        use = parse_saved_confirm(saved)
        if use is not None:  # saved while its pass ran (ended None): the gateway stopped (or was killed) during it
            self.confirm_cut_off = use["ended"] is None
            self._confirm_use = dict(use, ended=use["ended"] or "stopped")
        if step is not None and self._mono is not None:  # (no step check under [sim_clock])
            self._saved_step = (float(step["offset"]), float(step["at"]), float(step["stamped"]))
        if hold is not None:
            log.warning("retention is held since %s (saved before this start): %s", _when(hold["since"]),
                        hold.get("detail", hold["reason"]))

    def state(self) -> str:
        """What to save in the store's ``meta`` row :data:`META_KEY` (JSON) so a restart does not forget it."""
        state: dict[str, Any] = {"hold": self.hold, "ran_at": self._ran_at, "days": self._days,
                                 "step": self._step_state()}
        if self._confirm_use is not None:  # (left out when none: rows saved before it are unchanged)
            state["confirm"] = self._confirm_use
        return json.dumps(state, sort_keys=True)

    def _step_state(self) -> dict[str, float] | None:
        """The unconfirmed forward step and the reports' allowance to save (None: nothing to keep)."""
        if self._saved_step is not None:  # not judged yet (no pass, no ACK): kept as it was
            offset, saved_at, stamped = self._saved_step
            return {"offset": offset, "at": saved_at, "stamped": stamped}
        at = self._prev[0] if self._prev is not None else self._judged_at
        if at is None or (self.offset == 0 and self._stamped == 0):
            return None
        return {"offset": self.offset, "at": at, "stamped": self._stamped}

    def _take_saved_step(self, now: float) -> None:
        """Judge the step saved before this start against the clock ``now`` (once; module docstring)."""
        if self._saved_step is None:
            return
        offset, at, stamped = self._saved_step
        self._saved_step, self._judged_at = None, now
        self._stamped = max(self._stamped, stamped)
        back = at - now
        if back <= STEP_TOLERANCE_S:
            self.offset = max(self.offset, offset)
            if offset > 0:
                self._carried = (offset, at)
                log.warning("the gateway clock stepped forward by %s in an earlier run, not confirmed (saved): "
                            "retention removes by the clock less it, and ACKs carry no time to boards whose clocks "
                            "disagree, until the clock is put right or the operator confirms it (%s)",
                            _days(offset), self.confirm_command)
            return
        # Set back while the gateway was stopped: the step back undoes as much of the offset (as while
        # running); what is left is at most the time the gateway was stopped.
        self._stamped = max(self._stamped, offset)
        left = offset - back
        if left > self._interval + AHEAD_MARGIN_S:
            # Put right, or set back only part of the way: the time stopped cannot be told, so what is left is
            # both held, as a clock found ahead (seen), and kept as the offset until the operator confirms:
            # reports stamped by a clock still ahead would release the hold by agreement, and removal (and ACK
            # time) must then still be late, never early.
            self.offset = max(self.offset, left)
            detail = ("the gateway clock (%s) was %s behind its reading at the last pass before this start, which "
                      "had stepped forward by %s (not confirmed): %s unexplained (the gateway stopped that long, or "
                      "the clock was set back only part of the way)" % (_when(now), _days(back), _days(offset),
                                                                         _days(left)))
            if self.hold is None or self.hold["reason"] != "clock_ahead":  # (a large removal's is asked again)
                self.hold = {"reason": "clock_ahead", "since": now, "detail": detail, "agreed_s": 0.0}
            log.warning("retention held: %s; nothing is removed until the clock has agreed with the stored reports "
                        "for %s, then by the clock less %s (ACKs carry no time meanwhile), until the operator confirms "
                        "it (check the clock: date -u; then %s)", detail, _days(CONFIRM_SPAN_S), _days(left),
                        self.confirm_command)
        elif offset > 0:
            log.warning("the gateway clock is %s behind its reading at the last pass before this start, which had "
                        "stepped forward by %s (not confirmed): taken as the clock put right while the gateway was "
                        "stopped; retention follows the clock again", _days(back), _days(offset))

    def confirm(self, now: float, given: float | None = None) -> None:
        """The operator confirmed the clock and what retention removes: the next pass runs, held or not, by
        the clock itself (the offset of the steps seen up to it ends: they are the operator's clock).
        ``given``: when the confirmation was written (its file's time), to name it if its pass does not finish."""
        self._confirmed = True
        self._vouch = True
        self._confirm_use, self._confirm_told = {"given": given, "taken": now, "ended": None}, False
        if self.hold is not None:
            log.warning("retention: the operator confirmed the gateway clock (%s); the pass held since %s runs now",
                        _when(now), _when(self.hold["since"]))
        else:
            log.warning("retention: the operator confirmed the gateway clock (%s); nothing was held, the next pass "
                        "runs whatever it removes", _when(now))

    def large_removal_hold(self, retention_days: dict[tuple[str, str], int]) -> LargeRemovalHold | None:
        """The hold rule for the pass about to run, or None when the pass runs whatever it removes (confirmed,
        or a hold's span ended). Fields whose retention changed since the last pass that ran are exempt."""
        if self._confirmed or self._continuous:
            return None
        saved = self._days or {}
        exempt = frozenset(k for k, d in retention_days.items() if "%s.%s" % k in saved and saved["%s.%s" % k] != d)
        return LargeRemovalHold(exempt=exempt)

    def held(self, now: float, fields: list[str], *, rows_only: bool = False) -> None:
        """The store held the pass (``fields``: what it would have removed): hold retention, ERROR once.

        ``rows_only``: only report rows were held (ReportStore.begin_retention): the field values went, by
        the removal time this clock gave for the pass. That time is remembered (and saved) as a pass that ran
        for the clock check against the data: else a gateway whose devices fell silent, restarted during a
        hold of its rows, found its clock "ahead" of the last pass and held the values too. The retention
        remembered for the large-removal rule stays that of the last pass that ran whole, so a field whose
        retention changed keeps its kind's rows exempt until the rows went.
        """
        if rows_only and self._removal is not None:
            self._ran_at = self._removal
            if self._mono is not None:
                self._ran = (self._removal, self._mono())
        detail = ("a pass would remove %s (more than %d %% of what is stored of a %s); held until the gateway "
                  "clock has agreed with the stored reports for %s or the operator confirms" % (
                      "; ".join(fields), HOLD_SHARE * 100, "kind's report rows" if rows_only else "field",
                      _days(CONFIRM_SPAN_S)))
        if self.hold is None or self.hold["reason"] != "large_removal":
            log.error("retention held: %s: %s; if the clock (date -u) and the retention are right, "
                      "run `%s`", detail,
                      "the report rows wait, field values past their retention are still removed" if rows_only
                      else "nothing is removed", self.confirm_command)
            self.hold = {"reason": "large_removal", "since": now, "detail": detail,
                         "agreed_s": 0.0 if self.hold is None else self.hold["agreed_s"]}
        self.problem, self.reason = self._noted("retention held: " + detail), "held"

    def ran(self, removal_time: float, retention_days: dict[tuple[str, str], int]) -> None:
        """A pass ran (it removed what it found): any hold is over."""
        if self.hold is not None:
            log.warning("retention resumes: the pass held since %s ran", _when(self.hold["since"]))
        self.hold, self._confirmed, self.problem, self.reason = None, False, None, None
        self._confirm_use = None  # (its pass ran, or the hold it was for is over)
        self._continuous = True
        self._carried = None  # time measured since this pass is real time (the step check takes over)
        self._ran_at = removal_time
        self._days = {"%s.%s" % k: d for k, d in sorted(retention_days.items())}

    def resumed(self, now: float, removal_time: float, retention_days: dict[tuple[str, str], int],
                rows_held: list[str]) -> None:
        """A pass cut off before (a stop, a failure) was finished by its own ``removal_time`` and retention
        (gateway/storage/field_retention.py): remembered as a pass that ran (a hold it ran under is over), or,
        when its report rows were held (``rows_held``), as :meth:`held` with ``rows_only`` remembers one.
        Unlike :meth:`ran`, it vouches for no clock of this run: the next pass is still checked as the first.
        The time remembered is never later than the removal time :meth:`removal_time` last gave (the checked
        clock): a later one, saved, would hide a clock that jumps ahead after it.
        """
        if self._removal is not None:
            removal_time = min(removal_time, self._removal)
        if self._ran_at is None or removal_time > self._ran_at:
            self._ran_at = removal_time
        if rows_held:
            removal, self._removal = self._removal, None  # (no time measured since: the pass began before)
            self.held(now, rows_held, rows_only=True)
            self._removal = removal
            return
        if self.hold is not None:
            log.warning("retention resumes: the pass held since %s was finished", _when(self.hold["since"]))
        self.hold, self.problem, self.reason = None, None, None
        if self._confirm_use is not None and self._confirm_use["ended"] is not None:
            self._confirm_use = None  # the hold it was for is over (a confirmation in use is for the pass after)
        self._days = {"%s.%s" % k: d for k, d in sorted(retention_days.items())}

    def not_run(self) -> None:
        """The pass failed before it ran (an error, logged by the caller): a confirmation was for that pass,
        and the next pass is checked as the first one after a gap."""
        self._continuous = False
        if self._confirmed:
            self._confirmed = False
            self._end_confirm_use("failed")
            log.warning("retention: the pass the operator confirmed did not run; confirm again if it is still "
                        "held (%s)", self.confirm_command)

    def offset_problem(self) -> str | None:
        """The ``/healthz`` warning ``retention_clock_offset`` while :attr:`offset` is not 0, else None."""
        if self.offset <= 0:
            return None
        return ("retention removes by the gateway clock less %s: forward step(s) of the clock not followed, not "
                "confirmed (kept over a restart): values are kept that much past their retention and ACKs carry no "
                "time to boards whose clocks disagree; check the clock (date -u, timedatectl), then `%s`"
                % (_days(self.offset), self.confirm_command))

    @property
    def hold_reason(self) -> str | None:
        """The reason of the hold retention is under (``clock_ahead`` / ``large_removal``), or None."""
        return None if self.hold is None else str(self.hold["reason"])

    @property
    def suspects_clock_ahead(self) -> bool:
        """The last check found the gateway's clock ahead of the stored reports (``clock_ahead``), or a
        hold it began is not yet confirmed (reports stamped by that clock do not vouch for it).

        The gateway then sends ACKs without a time: a board takes any step forward at once but comes
        back only 5 min an hour (docs/protocol.md §3), so a clock 200 days ahead would date its reports
        in the future for years after the gateway's clock is put right.
        """
        if self.reason == "clock_ahead":
            return True
        return self.hold is not None and self.hold.get("reason") == "clock_ahead" and not self._confirmed

    def stepped_ahead(self, now: float) -> bool:
        """The wall clock jumped forward while the gateway ran and retention does not follow the jump: a
        step found at a pass (:attr:`offset`, saved over a restart until a step back undoes it) that the operator
        has not confirmed since (:meth:`confirm`, taken at the next pass), or one since the last pass (``now``
        against the monotonic clock, without waiting for the next pass), unless the clock was behind the
        stored reports at the last pass (then a forward step is a correction). Never under ``[sim_clock]``
        (no monotonic clock to compare with)."""
        self._take_saved_step(now)  # an ACK before the first pass of a run: the saved step counts already
        if self.offset > 0:
            return True
        if self._mono is None or self._prev is None or self.reason == "clock_behind":
            return False
        prev_now, prev_mono = self._prev
        return (now - prev_now) - (self._mono() - prev_mono) > STEP_TOLERANCE_S

    def stepped_since_pass(self, now: float) -> bool:
        """The wall clock stepped (either way, more than :data:`STEP_TOLERANCE_S`) since the last pass, against
        the monotonic clock; no store read. The retention task then runs its pass at once, so the step is
        recorded (and saved) before a restart could forget it. Never under ``[sim_clock]``."""
        if self._mono is None or self._prev is None:
            return False
        prev_now, prev_mono = self._prev
        return abs((now - prev_now) - (self._mono() - prev_mono)) > STEP_TOLERANCE_S

    def note_stop(self, now: float, last_received: float | None) -> None:
        """The gateway stops: a step since the last pass is recorded as a pass would (then saved with
        :meth:`state`), else the next start would trust the clock it stepped to."""
        if self.stepped_since_pass(now):
            self._follow_steps(now, last_received)

    def removal_time(self, now: float, last_received: float | None) -> float | None:
        """The time to remove values by (``now`` less the steps not followed), or None to skip the pass.

        Args:
            now: the gateway's clock.
            last_received: ``received_at`` of the last stored report (None: the store holds none).
        """
        self._follow_steps(now, last_received)
        if self._vouch:
            if self.offset > 0:
                log.warning("retention: the operator confirmed the gateway clock: the forward step(s) of %s not "
                            "followed so far are the clock's; retention removes by the clock from now on",
                            _days(self.offset))
            self._vouch, self.offset, self._carried = False, 0.0, None
        agreed = self._agreed_since_last_pass(now)
        problem, reason = self._check(now, last_received)
        if reason == "clock_ahead" and self._confirmed:
            problem = reason = None  # the operator confirmed this clock (a gateway off that long, say)
        if problem is None:
            if self.hold is not None and not self._confirmed:
                # Reports stamped by a clock do not confirm it: only time it has agreed with them does.
                self.hold["agreed_s"] = float(self.hold["agreed_s"]) + agreed
                if self.hold["agreed_s"] >= CONFIRM_SPAN_S:
                    log.warning("retention: the gateway clock (%s) has agreed with the stored reports for %s since "
                                "the hold of %s; the held pass runs", _when(now), _days(self.hold["agreed_s"]),
                                _when(self.hold["since"]))
                    self._confirmed = True
                elif self.hold["reason"] == "large_removal":
                    # The store is asked again (the hold rule applies): a pass no longer that large (the
                    # retention set back, the clock put right) runs and ends the hold. Still held meanwhile.
                    self._removal = now - self.offset
                    return now - self.offset
                else:
                    problem, reason = self._held_problem(), "held"
                    if self.reason in ("clock_ahead", "clock_behind"):
                        log.warning("%s", problem)
            elif self.problem is not None and self.hold is None:  # (a hold's end is logged by ran())
                log.warning("retention resumes: the gateway clock (%s) agrees with the last stored report again",
                            _when(now))
        else:
            if self.hold is not None:
                self.hold["agreed_s"] = 0.0  # the span starts again once it agrees
            elif reason == "clock_ahead":
                self.hold = {"reason": "clock_ahead", "since": now, "detail": self._ahead, "agreed_s": 0.0}
            if reason != self.reason:
                log.warning("retention skipped: %s", problem)
        self.problem, self.reason = (None if problem is None else self._noted(problem)), reason
        if problem is not None:
            # A skip breaks the continuity the large-removal rule relies on, and uses up a confirmation
            # (else one consumed by a pass skipped as clock_behind would later let a genuine clock_ahead by).
            self._continuous = False
            if self._confirmed and reason != "held":
                self._confirmed = False
                self._end_confirm_use("skipped")
                self.problem = self._noted(problem)
                log.warning("retention: the pass the operator confirmed was skipped (%s); confirm again once the "
                            "clock is right", reason)
            return None
        if self._mono is not None:
            self._ran = (now - self.offset, self._mono())
        self._removal = now - self.offset
        return now - self.offset

    def _end_confirm_use(self, ended: str) -> None:
        """The pass that took the operator's confirmation ended without running (``ended``: failed, skipped);
        the caller logs it (so it is not said again with the problem)."""
        if self._confirm_use is not None and self._confirm_use["ended"] is None:
            self._confirm_use["ended"] = ended
        self._confirm_told = True

    def _noted(self, problem: str) -> str:
        """``problem`` (why retention is held or skipped now) and, while a hold lasts, the operator's confirmation
        its pass used up without finishing (:func:`confirm_note`; said at WARNING once a run, the first time)."""
        use = self._confirm_use
        if use is None or use["ended"] is None or self.hold is None:
            return problem
        note = confirm_note(use, self.confirm_command)
        if not self._confirm_told:
            self._confirm_told = True
            log.warning("retention: %s", note)
        return "%s; %s" % (problem, note)

    def _held_problem(self) -> str:
        assert self.hold is not None
        return ("retention held since %s (%s); reports stamped by the gateway clock since do not confirm it: "
                "retention resumes once the clock has agreed with the stored reports for %s (%s so far), or after "
                "`%s`" % (_when(self.hold["since"]), self.hold.get("detail", self.hold["reason"]),
                          _days(CONFIRM_SPAN_S), _days(self.hold["agreed_s"]), self.confirm_command))

    def _agreed_since_last_pass(self, now: float) -> float:
        """Time elapsed since the previous pass of this run (monotonic; the clock under [sim_clock]), >= 0."""
        mono = self._mono() if self._mono is not None else None
        prev, self._since_pass = self._since_pass, (now, mono)
        if prev is None:
            return 0.0
        return max(0.0, (mono - prev[1]) if mono is not None and prev[1] is not None else now - prev[0])

    def _check(self, now: float, last: float | None) -> tuple[str | None, str | None]:
        if last is None or now >= last - CLOCK_BACK_TOLERANCE_S:
            self._stamped = 0.0  # the newest stored report agrees with the clock: no allowance needed any more
        if last is None:
            return None, None
        if self._stamped > 0 and self._stamped_last is None:
            self._stamped_last = last  # (an allowance saved before this start)
        # Reports stamped while the clock was ahead by an offset since undone are ahead of it by up to that.
        if now < last - self._stamped - CLOCK_BACK_TOLERANCE_S:
            return ("the gateway clock (%s) is %s behind the last stored report's reception time (%s): the clock was "
                    "set back; nothing is removed until it is right again" % (_when(now), _days(last - now),
                                                                             _when(last)), "clock_behind")
        # The last pass that ran (saved before a restart) is time the clock was trusted at, reports or not.
        ref, what = last, "the last stored report's reception time"
        if self._ran_at is not None and self._ran_at > last + CLOCK_BACK_TOLERANCE_S:
            ref, what = self._ran_at, "the last retention pass that ran"
        ahead = now - self.offset - max(last, self._ran_at or last)
        if self._carried is not None:
            # No pass has run in this run under a saved step: in the clock's own terms against its reading at the
            # last pass (a jump made while stopped is not in the saved offset); the offset counts only for
            # the steps measured in this run.
            carried, at = self._carried
            wall_ahead = now - max(0.0, self.offset - carried) - max(last, at, self._ran_at or last)
            if wall_ahead > ahead:
                ahead, ref, what = wall_ahead, max(last, at), "its reading at the last pass before this start"
        if self._ran is not None and self._mono is not None:
            # time measured since a pass that ran is real time, reports or not
            ahead = min(ahead, now - self.offset - (self._ran[0] + self._mono() - self._ran[1]))
        if ahead > self._interval + AHEAD_MARGIN_S:
            self._ahead = "the gateway clock (%s) was %s ahead of %s (%s)" % (_when(now), _days(ahead), what, _when(ref))
            return ("the gateway clock (%s) is %s ahead of %s (%s): either the clock jumped or no report arrived for "
                    "that long; nothing is removed until the clock has agreed with reports stamped by it for %s, or "
                    "the operator confirms it (check the clock: date -u, timedatectl; then %s)"
                    % (_when(now), _days(ahead), what, _when(ref), _days(CONFIRM_SPAN_S), self.confirm_command),
                    "clock_ahead")
        return None, None

    def _follow_steps(self, now: float, last: float | None) -> None:
        if self._mono is None:
            return
        self._take_saved_step(now)
        mono = self._mono()
        prev, self._prev = self._prev, (now, mono)
        if prev is None:
            return
        step = (now - prev[0]) - (mono - prev[1])
        if abs(step) <= STEP_TOLERANCE_S:
            return
        before, seen = self.offset, step
        if step > 0 and self.reason == "clock_behind" and last is not None:
            # The clock was behind the stored reports at the last pass and stepped forward: a correction
            # (NTP after a boot without a real-time clock), followed as far as the data check accepts
            # a clock ahead of the data. (Judged by the last pass: reports stamped after a jump would
            # make any jump look like this.)
            step = max(0.0, now - max(now - step, last + self._interval + AHEAD_MARGIN_S))
        if step < 0 and before > 0:
            # The reports stamped while it was ahead: by up to the offset undone, or (no report stored since an
            # earlier allowance) by as much as those newest reports were.
            same = last is not None and last == self._stamped_last
            self._stamped = max(self._stamped, before) if same else before
            self._stamped_last = last
        self.offset = max(0.0, self.offset + step)
        if seen > 0 and step == 0:
            what = "retention follows it (the clock was behind the stored reports: a correction)"
        elif step > 0:
            what = ("retention does not follow it: it removes by the clock less %s until a step back undoes it "
                    "(kept over a restart), or the operator confirms it (%s)" % (
                        _days(self.offset), self.confirm_command))
        elif before > 0:
            what = "retention removes by the clock less %s now (an earlier forward step undone)" % _days(self.offset)
        else:
            what = "retention follows it (a clock set back removes nothing early)"
        log.warning("the gateway clock stepped %s by %s while the gateway ran (wall clock against the time elapsed); "
                    "%s", "forward" if seen > 0 else "back", _days(abs(seen)), what)
