"""A field tool holding a running board at the REPL keeps the firmware's watchdog from resetting it.

Real MicroPython (the simulator) running the shipped streetlight firmware, whose watchdog is 30 s
of board time: at speed 50 that is 0.6 s of wall time, shorter than a REPL session.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hil.dut import Dut
from hil.dut.errors import DutError
from hil.field.device import SERVICE_WINDOW_S, hold_watchdog, open_board
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]

SPEED = 50


def wdt_resets(board: VirtualBoard) -> int:
    return sum(1 for e in board.events if e.get("ev") == "wdt")


async def running_board(tmp_path: Path) -> tuple[VirtualBoard, int]:
    board = VirtualBoard("streetlight-esp32", device_id="sl-wdt-1", flash_dir=tmp_path / "flash", speed=SPEED)
    await board.start()
    return board, await board.wait_console("streetlight sl-wdt-1 running", timeout_s=60)


async def test_a_held_board_is_not_reset_mid_session_and_returns_to_service_after_the_window(tmp_path: Path) -> None:
    board, started = await running_board(tmp_path)
    try:
        # Without the hold (a plain raw REPL), the firmware's watchdog resets the board under the
        # session and the firmware starts again.
        def unheld() -> None:
            dut = Dut(board.console_path)
            try:
                dut.enter_raw_repl(timeout_s=10)
                time.sleep(2.0)  # 100 s of board time: three watchdog periods
            except DutError:
                pass  # the reset can come while the raw REPL is still being entered
            finally:
                dut.close()

        await asyncio.to_thread(unheld)
        await board.wait_console("streetlight sl-wdt-1 running", timeout_s=30, since=started)
        assert wdt_resets(board) >= 1

        # Through the field tools' open_board the watchdog is stretched and fed: the same session
        # survives many watchdog periods with the board's state intact.
        def held() -> tuple[object, bool, int, int]:
            dut = open_board(board.console_path, timeout_s=10)
            # Counted once the hold is in place: on a loaded machine the watchdog may fire between
            # Ctrl-C and the hold, and open_board then holds the restarted firmware's (a retry).
            before, since = wdt_resets(board), len(board.console_log)
            try:
                dut.exec("_civic_probe = 2")
                time.sleep(2.0)  # 100 s of board time
                again = hold_watchdog(dut)  # holding again is harmless (a tool that retries does)
                time.sleep(1.0)
                return dut.eval("_civic_probe"), again, before, since
            finally:
                dut.close()

        probe, again, before, since = await asyncio.to_thread(held)
        assert probe == 2 and again is True
        assert wdt_resets(board) == before
        assert b"running" not in board.console_log[since:]

        # Left at the REPL, the board resets itself back into service after the window.
        await board.wait_console("streetlight sl-wdt-1 running", timeout_s=SERVICE_WINDOW_S / SPEED + 30,
                                 since=since)
        assert wdt_resets(board) == before + 1
    finally:
        await board.stop()


async def test_a_board_without_a_running_watchdog_is_left_alone(tmp_path: Path) -> None:
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", speed=SPEED)  # not provisioned
    await board.start()
    try:
        await board.wait_console("not provisioned", timeout_s=60)

        def session() -> bool:
            dut = open_board(board.console_path, timeout_s=10)
            try:
                return hold_watchdog(dut)
            finally:
                dut.close()

        assert await asyncio.to_thread(session) is False
        await asyncio.sleep(2.0)  # no watchdog was started by the tool either
        assert wdt_resets(board) == 0
    finally:
        await board.stop()
