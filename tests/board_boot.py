"""Waiting out a virtual board's boot in wall time, for tests that advance its paused clock.

A board's boot after a reset, a deep-sleep wake, a power loss or a soft reboot loads MicroPython
in wall time while the virtual clock stands still (hil.sim.js board.mjs, state ``booting``). A
test that advances the clock a fixed number of times over a boot spends those advances on a board
that is not running yet: on a loaded machine (CI: 2 cores, several workers) a boot outlasted 30
and 50 advances. Waiting while the board is ``booting`` keeps the firmware's own virtual time what
the test meant, whatever the load.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

BOOT_WAIT_S = 60.0
"""Wall time a boot may take before a test gives up (a boot takes ~0.1 s on an idle machine)."""


async def wait_while_booting(board: Any, timeout_s: float = BOOT_WAIT_S) -> dict[str, Any]:
    """Wait in wall time while ``board`` (a hil.sim.board.VirtualBoard) is booting.

    A board that is ``off`` waits for its virtual power-on delay and is returned at once (only
    advancing the clock brings it up).

    Args:
        board: the virtual board.
        timeout_s: wall seconds to wait at most.

    Returns:
        The board's state (``VirtualBoard.state()``) once it is not booting.

    Raises:
        AssertionError: still booting after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        st: dict[str, Any] = await board.state()
        if st["state"] != "booting":
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{board.device_id} still booting after {timeout_s:.0f} s of wall time")
        await asyncio.sleep(0.05)


async def advance_booted(board: Any, seconds: int, *, step_s: int = 1) -> dict[str, Any]:
    """Advance the paused clock ``seconds`` in steps of ``step_s``, waiting out any boot after each.

    Returns:
        The board's state after the last step.
    """
    st: dict[str, Any] = {}
    for _ in range(0, seconds, step_s):
        await board.advance(step_s, chunk_s=step_s)
        st = await wait_while_booting(board)
    return st
