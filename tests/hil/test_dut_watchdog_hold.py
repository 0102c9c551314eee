"""A test that stops the firmware at the REPL keeps the board: its watchdog is held at once.

The firmware starts a hardware watchdog (30 s) that it feeds from its asyncio loop; Ctrl-C stops
the loop, and an ESP32 watchdog cannot be stopped. ``hil_board.dut`` therefore stretches and feeds
it in the same write as the Ctrl-C that stops the firmware. Before, the first ``exec`` on a board
at ``speed=300`` (the 30 s are 0.1 s of wall time) failed whenever the host was busy (several
sessions at once): the watchdog reset the board between the DUT's Ctrl-C and its Ctrl-A or its
code, and the board answered as the friendly REPL (``paste mode``) or with nothing.
"""

from __future__ import annotations

import time

import pytest

from hil.backends.board import BoardHandle, watchdog_hold_ms, WATCHDOG_HOLD_MAX_MS, WATCHDOG_HOLD_S

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("sim_available")]

WDT_RESET = 3  # the simulator's reset cause for a watchdog expiry (machine.WDT_RESET)


def _boots(board: BoardHandle) -> int:
    return int(board.control.state()["stats"]["boots"])


@pytest.mark.sim(speed=300)
def test_board_stopped_at_the_repl_is_not_reset_by_its_watchdog(hil_board: BoardHandle) -> None:
    boots = _boots(hil_board)
    dut = hil_board.dut
    dut.exec("import machine")
    assert dut.on_stop_result is not None and dut.on_stop_result.strip() == "True"  # a watchdog was held
    time.sleep(1.0)  # 300 s of board time: ten times the firmware's watchdog timeout
    assert dut.eval("6*7") == 42
    state = hil_board.control.state()
    assert _boots(hil_board) == boots, hil_board.control.console_text()[-2000:]
    assert state["cause"] != WDT_RESET and state["mode"] == "raw"


@pytest.mark.sim(speed=3000)
def test_watchdog_is_held_before_any_round_trip(hil_board: BoardHandle) -> None:
    # At 3000x the watchdog's 30 s are 10 ms of wall time: less than a host round trip on the pty,
    # so only code that runs in the same write as the Ctrl-C holds it in time. Several rounds of
    # stop / exec / restart, each one a chance for the race.
    boots = _boots(hil_board)
    for round_ in range(3):
        assert hil_board.dut.eval("6*7") == 42
        time.sleep(0.2)
        assert hil_board.dut.eval("'still here'") == "still here"
        assert _boots(hil_board) == boots + round_, hil_board.control.console_text()[-2000:]
        hil_board.restart_firmware()  # returns once the firmware says it runs again


def test_hold_lasts_the_same_wall_time_at_any_speed() -> None:
    assert watchdog_hold_ms(1.0) == WATCHDOG_HOLD_S * 1000
    assert watchdog_hold_ms(300) == WATCHDOG_HOLD_S * 1000 * 300
    assert watchdog_hold_ms(0) == WATCHDOG_HOLD_S * 1000  # as fast as possible: wall rate at the REPL
    assert watchdog_hold_ms(None) == WATCHDOG_HOLD_S * 1000  # paused clock
    assert watchdog_hold_ms(1e9) == WATCHDOG_HOLD_MAX_MS


@pytest.mark.sim(speed=0)
def test_board_stopped_at_the_repl_at_speed_0_is_not_time_warped(hil_board: BoardHandle) -> None:
    # At speed 0 the clock jumps to the next timer; a board stopped at the REPL waits for console
    # input instead, at wall rate (docs/simulator.md). Before, the clock jumped at once to the held
    # watchdog's expiry (2^31-1 ms at speed 0) and the board reset under the test.
    boots = _boots(hil_board)
    dut = hil_board.dut
    assert dut.eval("6*7") == 42
    assert dut.on_stop_result is not None and dut.on_stop_result.strip() == "True"  # a watchdog was held
    before, wall0 = int(hil_board.control.state()["now"]), time.monotonic()
    time.sleep(3.0)
    assert dut.eval("'still here'") == "still here"
    state = hil_board.control.state()
    assert _boots(hil_board) == boots, hil_board.control.console_text()[-2000:]
    assert state["cause"] != WDT_RESET and state["mode"] == "raw"
    elapsed_ms = int(state["now"]) - before
    assert 0 <= elapsed_ms <= (time.monotonic() - wall0) * 1000 + 1000, elapsed_ms  # wall rate, no jump
