"""flash --firmware-only on a provisioned board restarts its firmware (a street light is not left dark
at the REPL until its watchdog resets it) and points at check; an unprovisioned board is said to wait
for provisioning."""

from __future__ import annotations

from pathlib import Path

import pytest
from field_cli import civicedge

from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(200), pytest.mark.slow]

BOARD = "streetlight-esp32"


async def test_flash_restarts_a_provisioned_board(tmp_path: Path, sim_available: None) -> None:
    board = VirtualBoard(BOARD, device_id="sl-flash-1", flash_dir=tmp_path / "flash", speed=10)
    await board.start()
    try:
        await board.wait_console("sl-flash-1 running", timeout_s=60)
        since = len(board.console_log)
        rc, out = await civicedge("flash", "--firmware-only", "--board", BOARD, "--port", board.console_path)
        flat = " ".join(out.split())
        assert rc == 0, out
        assert "firmware restarted as sl-flash-1" in flat and f"next: civicedge check --port {board.console_path}" \
            in flat, out
        assert "civicedge provision" not in flat, out
        # The firmware runs again right after the flash (not 10 minutes later by its watchdog).
        await board.wait_console("sl-flash-1 running", since=since, timeout_s=15)
    finally:
        await board.stop()


async def test_flash_says_an_unprovisioned_board_waits(tmp_path: Path, sim_available: None) -> None:
    board = VirtualBoard(BOARD, flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        rc, out = await civicedge("flash", "--firmware-only", "--board", BOARD, "--port", board.console_path)
        flat = " ".join(out.split())
        assert rc == 0, out
        assert "it has no identity yet: the board waits at the MicroPython REPL (its firmware does not run) until " \
            "it is provisioned; next: civicedge provision --port" in flat, out
        assert "firmware restarted" not in flat
    finally:
        await board.stop()
