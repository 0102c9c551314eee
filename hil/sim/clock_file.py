"""Keep a gateway's ``[sim_clock] follow_file`` at where the simulated boards actually are.

A fixed ``[sim_clock]`` assumes the boards run at exactly the requested speed; a loaded machine runs
them slower (and a run may hold or slow its hosts on purpose), so such a clock runs ahead of them,
and ACK time sync then moves the boards' clocks. :class:`ClockFileWriter` rewrites the file every
:data:`CLOCK_EVERY_S` with the boards' virtual time and the pace they actually ran at over the last
:data:`PACE_WINDOW_S`; the gateway (gateway/config/sim_clock.py) extrapolates between rewrites for
at most 0.5 wall s. ``civicedge demo`` and ``civicedge hil run`` use it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from pathlib import Path
from typing import Awaitable, Callable

from hil.sim.errors import SimError, SimTimeoutError

log = logging.getLogger(__name__)

# How often the file is rewritten (wall s). The gateway extrapolates it for at most 0.5 wall s
# (gateway.config.sim_clock.FOLLOW_EXTRAPOLATE_WALL_S), so the writer must beat that; the gateway's
# error is then about the boards' change of pace over that time (at 1000x, 0.25 s = 250 virtual s).
CLOCK_EVERY_S = 0.25
PACE_WINDOW_S = 5.0  # the pace written is measured over this much wall time
# How long start() waits for the hosts to answer at all (wall s). Hosts busy booting many boards on a
# loaded machine miss a 1 s ping for a while (a demo of 40 + 20 boards on 2 cores failed to start).
START_PATIENCE_S = 30.0


def write_clock_file(path: Path, *, virtual_at: float, wall_at: float, speed: float) -> None:
    """Write a ``[sim_clock] follow_file`` atomically (the gateway may read it at any moment)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"virtual_at": virtual_at, "wall_at": wall_at, "speed": speed}))
    os.replace(tmp, path)


class ClockFileWriter:
    """Rewrites ``path`` from ``virtual_now_s`` (the slowest board's virtual unix time) until stopped.

    Args:
        path: the gateway's ``follow_file``.
        virtual_now_s: where the boards are now; may raise :class:`SimError` while a host ended or
            hangs (the gateway's clock then waits: the caller's own watch tells about the host).
        speed: the requested speed, written until a pace has been measured.
    """

    def __init__(self, path: Path, virtual_now_s: Callable[[], Awaitable[float]], *, speed: float) -> None:
        self.path = path
        self._virtual_now_s = virtual_now_s
        self._speed = speed
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (wall, virtual)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Write the first file with a measured pace, then keep rewriting it in a task.

        The first pace is measured (two samples :data:`CLOCK_EVERY_S` apart), not the requested
        speed: a first file at 1000x, extrapolated through the gateway's boot, put it 20-40 virtual
        minutes ahead of boards that ran at 300x, and the boards then re-reported (demo QA). Start
        it before the gateway, so the gateway's first read is current.
        """
        self._samples.clear()
        deadline = time.monotonic() + START_PATIENCE_S
        await self._update_by(deadline)
        await asyncio.sleep(CLOCK_EVERY_S)
        await self._update_by(deadline)
        self._task = asyncio.create_task(self.follow())

    async def _update_by(self, deadline: float) -> None:
        """:meth:`update`, asking again while no host answers in time, until ``deadline`` (monotonic).

        Raises:
            SimTimeoutError: no host answered by the deadline (with what to try).
            SimError: a host ended.
        """
        while True:
            try:
                await self.update()
                return
            except SimTimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise SimTimeoutError(
                        "%s, for %g s while the boards started: the machine may be too busy for this many boards"
                        " (try fewer boards or a lower --speed)" % (exc, START_PATIENCE_S),
                        op="ping", timeout_s=START_PATIENCE_S) from exc
                await asyncio.sleep(CLOCK_EVERY_S)

    async def update(self) -> None:
        """One rewrite: where the boards are now, at the pace of the last :data:`PACE_WINDOW_S`."""
        samples = self._samples
        before = time.time()
        virtual = await self._virtual_now_s()
        wall = (before + time.time()) / 2  # when the boards were asked, about
        samples.append((wall, virtual))
        while wall - samples[0][0] > PACE_WINDOW_S:
            samples.popleft()
        w0, v0 = samples[0]
        pace = max(0.0, (virtual - v0) / (wall - w0)) if wall - w0 >= CLOCK_EVERY_S / 2 else self._speed
        write_clock_file(self.path, virtual_at=virtual, wall_at=wall, speed=pace)

    async def follow(self) -> None:
        """Rewrite the file every :data:`CLOCK_EVERY_S` until cancelled; a failure is said once and the
        writer goes on (it must not die silently: the gateway's clock would stop)."""
        warned = failed = False
        while True:
            await asyncio.sleep(CLOCK_EVERY_S)
            try:
                await self.update()
            except SimError:  # a host ended or hangs (the caller's watch tells): the gateway's clock waits
                continue
            except OSError as exc:
                if not warned:  # the gateway keeps extrapolating its last clock, then waits
                    warned = True
                    log.warning("cannot update the gateway's clock file %s: %s", self.path, exc)
            except Exception:  # a defect
                if not failed:
                    failed = True
                    log.exception("updating the gateway's clock file %s failed; trying again every %g s",
                                  self.path, CLOCK_EVERY_S)

    async def stop(self) -> None:
        """Stop rewriting (after the gateway stopped: its clock follows the boards until it ends).
        Never raises: a writer that failed is logged, the caller's stop goes on."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # a defect; what the caller stops next must still be stopped
            log.exception("the gateway's clock writer failed")
