"""provision on a board that was never flashed prints the exact flash command (port and board) at once,
instead of "run flash first or pass --board"."""

from __future__ import annotations

from pathlib import Path

import pytest
from field_cli import civicedge

from gateway.registry import Registry
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.mark.parametrize(("board_name", "chip_board"), [("streetlight-esp32", "streetlight-esp32"),
                                                        ("bin-esp32c3", "bin-esp32c3")])
async def test_never_flashed_board_gets_the_flash_command(board_name: str, chip_board: str, tmp_path: Path,
                                                          sim_available: None) -> None:
    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard(board_name, flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        rc, out = await civicedge("provision", "--port", port, "--id", "sl-new", "--zone", "centre", "--location",
                                  "52.1,4.2", "--registry", str(registry))
        flat = " ".join(out.split())
        assert rc == 2, out
        assert f"the board on {port} was never flashed with the civicedge firmware" in flat, out
        assert f"flash it first: civicedge flash --firmware-only --port {port} --board {chip_board};" in flat, out
        assert "or pass --board" not in flat
        reg = Registry(registry)
        try:
            assert reg.list() == []  # nothing registered
        finally:
            reg.close()
    finally:
        await board.stop()
