"""Keep systemd's ``STATUS=`` current with the gateway's health, and ping its watchdog.

``gateway run`` says ``READY=1`` with a ``running: ...`` status once; :class:`StatusReporter` then looks
at the gateway's health (:meth:`gateway.service.Gateway.health`: no store read, one ``statvfs``) every
:data:`STATUS_EVERY_S` and sends a new ``STATUS=`` when its codes change (``gateway gw-1 degraded
(warning): link_down serial:/dev/ttyUSB1; mqtt_down``, and back to ``running``), so ``systemctl status``
says what is wrong now. The text holds codes only, no changing figures, so it changes when the state
does, at most once per :data:`STATUS_EVERY_S`.

With ``WatchdogSec=`` in the unit (``$WATCHDOG_USEC``, and ``$WATCHDOG_PID`` this process when set) it
sends ``WATCHDOG=1`` at half that interval from the event loop: a loop that hangs stops the pings and
systemd restarts the gateway (sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable, Sequence

from gateway.health import CRITICAL, Problem, classify, overall, summary
from gateway.systemd import notify

# How often the health is looked at, and the least time between two STATUS= changes.
STATUS_EVERY_S = 5.0
# systemctl status shows one line: a status naming many links is cut here.
STATUS_MAX_CHARS = 400

log = logging.getLogger(__name__)


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """The watchdog's interval in seconds when systemd asks this process for pings, else None.

    ``$WATCHDOG_USEC`` must be a positive integer, and ``$WATCHDOG_PID``, when set, this process's id
    (a child that inherited the variables is not the one watched).
    """
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


def status_text(gateway_id: str, running: str, problems: Sequence[Problem]) -> str:
    """``running`` when there is no problem, else ``gateway <id> degraded (<severity>): <codes>``. A status
    longer than :data:`STATUS_MAX_CHARS` has its critical codes first (then the warnings, each in their
    order) before it is cut: it loses warnings (many ``link_down``), never the code that made it critical."""
    if not problems:
        return running
    text = "gateway %s degraded (%s): %s" % (gateway_id, overall(problems), summary(problems))
    if len(text) > STATUS_MAX_CHARS:
        ordered = sorted(problems, key=lambda p: p.severity != CRITICAL)  # stable: critical first
        text = "gateway %s degraded (%s): %s" % (gateway_id, overall(problems), summary(ordered))
    return text if len(text) <= STATUS_MAX_CHARS else text[:STATUS_MAX_CHARS - 4] + " ..."


class StatusReporter:
    """Sends ``STATUS=`` when the health's codes change, and ``WATCHDOG=1`` when systemd asks for it.

    Args:
        gateway_id: the gateway's id, in the status.
        running: the status while healthy (what ``READY=1`` was sent with).
        health: the gateway's health problems, cheap and on the event loop.
        every_s: how often the health is looked at (and the least gap between two status changes).
        watchdog_s: the watchdog interval (default: :func:`watchdog_interval`); None for no pings.
    """

    def __init__(self, gateway_id: str, running: str, health: Callable[[], Sequence[Problem]], *,
                 every_s: float = STATUS_EVERY_S, watchdog_s: float | None = None) -> None:
        self._id = gateway_id
        self._running = running
        self._health = health
        self._every_s = every_s
        self._watchdog_s = watchdog_s if watchdog_s is not None else watchdog_interval()
        self._sent = running  # READY=1 carried it
        self._stopping = False
        self._failure_logged = False

    def stopping(self) -> None:
        """The gateway stops (``STOPPING=1`` was sent with its own status): only watchdog pings from now on."""
        self._stopping = True

    def _problems(self) -> Sequence[Problem]:
        """The health's problems; a health check that raises is one (critical, as in ``/healthz``), and
        must not end the task: the watchdog pings would stop and systemd kill a gateway that collects."""
        try:
            # A bare string (a check outside the gateway) is classified, as /healthz does: unclassified.
            return [classify(reason) for reason in self._health()]
        except Exception as exc:  # noqa: BLE001 - said in the status, the pings go on
            return [Problem("health_check_failed", "health check failed (%s)" % type(exc).__name__)]

    def _status(self) -> str | None:
        """The new status text when it changed, else None; never raises: whatever goes wrong in making
        it (an unexpected value) is logged once and the ping still goes out."""
        try:
            text = status_text(self._id, self._running, self._problems())
        except Exception:  # noqa: BLE001 - the watchdog pings must go on
            if not self._failure_logged:
                self._failure_logged = True
                log.exception("systemd status: cannot make the status text (the watchdog pings go on)")
            return None
        if text == self._sent:
            return None
        self._sent = text
        return text

    async def run(self) -> None:
        """Until cancelled: look at the health every ``every_s`` (and ping at half the watchdog interval)."""
        tick = self._every_s if self._watchdog_s is None else min(self._every_s, self._watchdog_s / 2)
        per = max(1, round(self._every_s / tick))  # ticks between two looks at the health
        ticks = 0
        while True:
            await asyncio.sleep(tick)
            ticks += 1
            states = ["WATCHDOG=1"] if self._watchdog_s is not None else []
            if not self._stopping and ticks % per == 0:
                text = self._status()
                if text is not None:
                    states.append("STATUS=" + text)
            if states:
                try:
                    notify(*states)
                except Exception:  # noqa: BLE001 - notify() logs its socket errors; anything else once, then on
                    if not self._failure_logged:
                        self._failure_logged = True
                        log.exception("systemd status: cannot notify (the task goes on)")
