"""Whether an ACK may carry the gateway's time (protocol §3, ``{"t": ...}``), report by report.

A board takes any step of its clock forward at once but steps back only 5 min an hour (protocol §3), so
boards synced to a gateway clock 200 days ahead date their reports in the future for years after that
clock is put right. So while the gateway distrusts its own clock, an ACK carries no time (``{}``) to a
board whose clock disagrees with it:

* **The clock was found ahead of the stored reports** (retention's ``clock_ahead`` check, or a hold it
  began that nobody confirmed: :attr:`RetentionClock.suspects_clock_ahead`): a clock already wrong at
  start. A gateway that was off for days is ahead of its stored reports too, so only a board whose
  report ended more than :data:`DATA_AGREE_S` before the gateway's clock goes without.
* **The clock jumped forward while the gateway ran** (:meth:`RetentionClock.stepped_ahead`, seen at once
  against the monotonic clock): every set board whose report ended more than :data:`STEP_AGREE_S` before
  the gateway's clock goes without, until a step back undoes it or the operator confirms the clock
  (``civicedge gateway retention --confirm``), which ends the steps seen so far (saved over a restart until
  then: gateway/retention_clock.py).

A board whose clock was never set always gets the time: it reports nothing until an ACK sets its clock
(its boot report is dated before :data:`CLOCK_SET_AFTER`), and boards that lost power during a long
gateway outage must not stay silent until the operator acts. A board already ahead (its report ends
after the gateway's clock) gets it too. The report an ACK answers may be an old one from the board's
outbox (a backlog after an outage): its ACK then goes without the time, which is harmless, since the
board takes the time from the ACK of its newest report.

While time is withheld from any board and the clock is still suspect, :meth:`AckTime.problem` is the
``/healthz`` warning ``ack_time_withheld`` (naming the boards and the confirm command); it clears once the
clock is trusted again (confirmed, put right), without waiting for an ACK; an ACK that carries the time to a
board within a day of the clock while the clock is still found ahead does not clear it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from gateway.health import Problem
from gateway.log_limit import LogLimiter, more_since
from gateway.retention_clock import RetentionClock
from gateway.storage.store import ReportRecord

log = logging.getLogger(__name__)

# A report dated before this (2024-01-01, the firmware's VALID_AFTER) comes from a clock never set.
CLOCK_SET_AFTER = 1704067200
# Clock found ahead of the stored reports: a board whose report ended longer ago than this disagrees.
DATA_AGREE_S = 86400.0
# Clock stepped forward while running: a board whose report ended longer ago than this disagrees (a
# window report is sent when its window closes, so one of the board's own clock ends within seconds).
STEP_AGREE_S = 900.0
WARN_EVERY_S = 600.0
# Boards named in the /healthz message (the count says how many in all).
NAMED_BOARDS = 5


class AckTime:
    """The ``time_sync`` the ingest service asks before each ACK (:class:`gateway.pipeline.ingest.IngestService`).

    Args:
        retention_clock: the gateway's retention clock check (its suspicion of the clock).
        clock: the gateway's clock (unix seconds).
        confirm_command: the command that confirms the clock, for the WARNING.
        on_withheld: called for each ACK sent without the time (a metric counter), or None.
    """

    def __init__(self, retention_clock: RetentionClock, clock: Callable[[], float],
                 confirm_command: str = "civicedge gateway retention --confirm",
                 on_withheld: Callable[[], None] | None = None) -> None:
        self._rc = retention_clock
        self._clock = clock
        self._confirm = confirm_command
        self._on_withheld = on_withheld
        self.withheld = False  # an ACK went without the time since the clock was last trusted
        self._boards: dict[str, None] = {}  # the boards it went to since then, in order (the fleet at most)
        self._why = ""
        self._log = LogLimiter(WARN_EVERY_S, time.monotonic)

    def __call__(self, report: ReportRecord) -> bool:
        """True when the ACK answering ``report`` may carry the time."""
        end = report.w + report.l
        now = self._clock()
        behind = now - end
        if end < CLOCK_SET_AFTER or behind <= STEP_AGREE_S:
            return True  # never set, or agrees: most ACKs never look at the clock's suspicion
        stepped, suspect = self._rc.stepped_ahead(now), self._rc.suspects_clock_ahead
        if stepped:
            why = "jumped forward while the gateway ran"
        elif suspect and behind > DATA_AGREE_S:
            why = "is ahead of the stored reports (or not yet confirmed since it was; see /healthz)"
        else:
            if not suspect:  # (a board within a day while the clock is suspect: the warning stays)
                self._resume()
            return True
        self.withheld, self._why = True, why
        self._boards[report.device] = None
        if self._on_withheld is not None:
            self._on_withheld()
        more = self._log.allow()  # per ACK: at most a line every 10 min, with the count
        if more is not None:
            log.warning("ACK time sync withheld: the gateway clock (%s) %s, and %s's report ended %.1f days before "
                        "it (its clock is behind, or it was an old report from its outbox); boards whose clocks "
                        "disagree keep them until the gateway's clock is put right and confirmed (%s)%s", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), why,
                        report.device, behind / 86400.0, self._confirm,
                        more_since(more, "ACK(s) sent without the time"))
        return False

    def problem(self) -> Problem | None:
        """The ``/healthz`` warning ``ack_time_withheld`` while ACKs went without the time to a board and the
        gateway clock is still suspect, else None (cheap: no store read; on the event loop)."""
        if not self.withheld:
            return None
        now = self._clock()
        if not (self._rc.stepped_ahead(now) or self._rc.suspects_clock_ahead):
            self._resume()  # confirmed or put right: the next ACK of those boards carries the time
            return None
        boards = list(self._boards)
        named = ", ".join(boards[:NAMED_BOARDS]) + (", ..." if len(boards) > NAMED_BOARDS else "")
        return Problem("ack_time_withheld",
                       "ACK time sync withheld from %d board(s) whose clocks disagree with the gateway clock, or "
                       "that sent an old report from their outbox (%s): "
                       "it %s; they keep their own time until the gateway clock is put right, or confirmed with "
                       "`%s` after checking it (date -u)" % (len(boards), named, self._why, self._confirm),
                       "time_sync")

    def _resume(self) -> None:
        if self.withheld:
            self.withheld = False
            self._boards.clear()
            self._log.reset()
            log.info("ACK time sync resumed: the gateway clock is trusted again")
