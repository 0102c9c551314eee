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
  first check) removes nothing early; a step back that undoes a jump undoes its offset. A forward step
  of a clock that was *behind* the stored reports is a correction (NTP after a boot without a real-time
  clock) and is followed up to the data check's margin. Logged at WARNING once per step. Time measured
  since a pass that ran is real time: a gateway that stops receiving reports keeps removing by it
  (without this, stored values would outlive their retention once the devices fall silent). Not applied under ``[sim_clock]``: the simulation moves its clock as it likes
  and time elapsed means nothing there (the first check still applies).

What no check can tell: a clock that was already wrong when the gateway started and has stamped reports
since. docs/gateway.md (Retention) says so.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

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


def _days(seconds: float) -> str:
    return "%.1f days" % (seconds / 86400) if abs(seconds) >= 86400 else "%.0f s" % seconds


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


class RetentionClock:
    """Decides, before each retention pass, the time to remove by, or that the pass is skipped.

    Args:
        interval_s: the retention interval (``[retention] interval_s``).
        monotonic: the monotonic clock to measure elapsed time with; None under ``[sim_clock]``.

    Attributes:
        problem: why passes are skipped now (for ``/healthz``), or None.
        reason: the metric label of :attr:`problem` (``clock_behind`` / ``clock_ahead``), or None.
        offset: forward steps of the wall clock seen while running, not followed (s).
    """

    def __init__(self, interval_s: float, monotonic: Callable[[], float] | None = time.monotonic) -> None:
        self._interval = interval_s
        self._mono = monotonic
        self._prev: tuple[float, float] | None = None
        # (removal time, monotonic time) of the last pass that ran: while no step is seen, time elapsed
        # since then is real, so a gateway that stops receiving reports keeps removing (not "ahead")
        self._ran: tuple[float, float] | None = None
        self.offset = 0.0
        self.problem: str | None = None
        self.reason: str | None = None

    def removal_time(self, now: float, last_received: float | None) -> float | None:
        """The time to remove values by (``now`` less the steps not followed), or None to skip the pass.

        Args:
            now: the gateway's clock.
            last_received: ``received_at`` of the last stored report (None: the store holds none).
        """
        self._follow_steps(now, last_received)
        problem, reason = self._check(now, last_received)
        if problem is None:
            if self.problem is not None:
                log.warning("retention resumes: the gateway clock (%s) agrees with the last stored report again",
                            _when(now))
        elif reason != self.reason:
            log.warning("retention skipped: %s", problem)
        self.problem, self.reason = problem, reason
        if problem is not None:
            return None
        if self._mono is not None:
            self._ran = (now - self.offset, self._mono())
        return now - self.offset

    def _check(self, now: float, last: float | None) -> tuple[str | None, str | None]:
        if last is None:
            return None, None
        if now < last - CLOCK_BACK_TOLERANCE_S:
            return ("the gateway clock (%s) is %s behind the last stored report's reception time (%s): the clock was "
                    "set back; nothing is removed until it is right again" % (_when(now), _days(last - now),
                                                                             _when(last)), "clock_behind")
        ahead = now - self.offset - last
        if self._ran is not None and self._mono is not None:
            # time measured since a pass that ran is real time, reports or not
            ahead = min(ahead, now - self.offset - (self._ran[0] + self._mono() - self._ran[1]))
        if ahead > self._interval + AHEAD_MARGIN_S:
            return ("the gateway clock (%s) is %s ahead of the last stored report's reception time (%s): either the "
                    "clock jumped or no report arrived for that long; nothing is removed until a report arrives "
                    "(check the clock: date -u, timedatectl)" % (_when(now), _days(ahead), _when(last)),
                    "clock_ahead")
        return None, None

    def _follow_steps(self, now: float, last: float | None) -> None:
        if self._mono is None:
            return
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
        self.offset = max(0.0, self.offset + step)
        if seen > 0 and step == 0:
            what = "retention follows it (the clock was behind the stored reports: a correction)"
        elif step > 0:
            what = "retention does not follow it: it removes by the clock less %s until the gateway restarts" % (
                _days(self.offset))
        elif before > 0:
            what = "retention removes by the clock less %s now (an earlier forward step undone)" % _days(self.offset)
        else:
            what = "retention follows it (a clock set back removes nothing early)"
        log.warning("the gateway clock stepped %s by %s while the gateway ran (wall clock against the time elapsed); "
                    "%s", "forward" if seen > 0 else "back", _days(abs(seen)), what)
