"""Speed 0 (as fast as possible) and a board stopped at its REPL.

At speed 0 the clock jumps to the next timer. A board whose firmware was stopped at the REPL
(Ctrl-C from a DUT, mpremote or a person) waits for console input, which comes in wall time: the
clock then runs at wall rate, so the firmware's unfed watchdog (30 s) does not fire the moment the
board is idle. Jumps resume as soon as Python code sleeps on a timer again (the firmware after a
soft reset, code typed at the REPL). A board nobody typed at (its code returned or crashed to the
REPL) keeps the jumps: its watchdog fires at once in wall time.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.sim.conftest import write_identity

pytestmark = pytest.mark.timeout(180)

WDT_RESET = 3  # machine.WDT_RESET, the simulator's reset cause for a watchdog expiry
WATCHDOG_MS = 30_000  # the streetlight firmware's watchdog (wdt_ms of its board definition)


async def _now(board) -> int:
    return int((await board.state())["now"])


async def _jumps(board, *, at_least_ms: int, within_s: float = 20.0) -> int:
    """Wait until the virtual clock is ``at_least_ms`` ahead; returns the wall seconds it took."""
    start, t0 = await _now(board), time.monotonic()
    while await _now(board) - start < at_least_ms:
        assert time.monotonic() - t0 < within_s, f"the clock did not move {at_least_ms} ms in {within_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_firmware_stopped_at_the_repl_is_not_time_warped_into_its_watchdog(make_board, tmp_path):
    flash = tmp_path / "sl"
    write_identity(flash, "sl-0", "streetlight")
    board = await make_board(install=True, flash_dir=flash, device_id="sl-0", paced=False, seed=1, speed=0)
    end = await board.wait_console("civicedge: streetlight sl-0 running", timeout_s=60)
    # The running firmware sleeps on timers: the clock jumps (an hour of samples in seconds).
    await _jumps(board, at_least_ms=3_600_000)

    boots = (await board.state())["stats"]["boots"]
    board.write_console(b"\x03")  # stop it at the REPL, no watchdog hold: 30 s left on its watchdog
    end = await board.wait_console(">>> ", since=end)
    before, wall0 = await _now(board), time.monotonic()
    await asyncio.sleep(4.0)  # idle at the REPL; before the fix the clock jumped to the watchdog's expiry
    board.write_console(b"print('ANSWER', 6 * 7)\r")
    end = await board.wait_console("ANSWER 42", since=end)
    state = await board.state()
    waited_ms = (time.monotonic() - wall0) * 1000
    assert state["stats"]["boots"] == boots and state["cause"] != WDT_RESET, board.console_text()[-2000:]
    assert not [e for e in board.events if e.get("ev") == "wdt"]
    # wall rate: at most the wall time waited (plus a host tick), far from the watchdog's 30 s
    elapsed = int(state["now"]) - before
    assert 0 <= elapsed <= waited_ms + 1000 and elapsed < WATCHDOG_MS, (elapsed, waited_ms)

    # A soft reset runs the firmware again: its timers jump the clock again.
    board.write_console(b"\x04")
    await board.wait_console("civicedge: streetlight sl-0 running", since=end, timeout_s=60)
    await _jumps(board, at_least_ms=3_600_000)
    assert not [e for e in board.events if e.get("ev") == "wdt"]


NAPPER = """
import asyncio, time
async def _nap(s):
    await asyncio.sleep(s)
    print('NAPPED', time.time())
def nap(s):
    asyncio.create_task(_nap(s))
async def tick():
    while True:
        await asyncio.sleep(1)
asyncio.create_task(tick())
print('UP', time.time())
"""


async def test_code_typed_at_the_repl_that_sleeps_still_jumps(make_board):
    board = await make_board(files={"main.py": NAPPER}, speed=0)
    end = await board.wait_console("UP ")
    board.write_console(b"\x03")
    end = await board.wait_console(">>> ", since=end)
    # time.sleep moves the clock at once, as it always did
    board.write_console(b"t = time.time(); time.sleep(100); print('SLEPT', time.time() - t)\r")
    end = await board.wait_console("SLEPT 100", since=end)
    # an asyncio sleep of an hour started at the REPL: Python sleeps on a timer, so the clock jumps
    board.write_console(b"print('FROM', time.time()); nap(3600)\r")
    end = await board.wait_console("NAPPED ", since=end, timeout_s=20)
    text = board.console_text()
    napped = int(text.split("NAPPED ")[-1].split()[0]) - int(text.split("FROM ")[-1].split()[0])
    assert 3600 <= napped < 3700, napped
    # and with nothing sleeping any more, the board waits at wall rate again
    before = await _now(board)
    await asyncio.sleep(1.0)
    assert await _now(board) - before < 5000


UNATTENDED = """
import machine
w = machine.WDT(timeout=30000)
print('UP', machine.reset_cause())
"""


async def test_a_board_nobody_typed_at_still_jumps_to_its_watchdog(make_board):
    # Its code returned to the REPL with the watchdog running and no one at the console (like a
    # firmware that crashed): at speed 0 the 30 s pass at once, as before.
    board = await make_board(files={"main.py": UNATTENDED}, speed=0)
    t0 = time.monotonic()
    await board.wait_console("UP 3", timeout_s=10)  # the watchdog's reset, in far less than 30 s
    assert time.monotonic() - t0 < 10
