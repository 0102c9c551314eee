"""provision --board reads the board definition file once (review: it loaded it up to four times, for
the early check, the chip check, the kind and the board config), and that one definition is what
the board gets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.boards import BoardDefinition, load_board
from hil.field import provision_cmd
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def test_provision_loads_its_board_definition_once(tmp_path: Path, sim_available: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.cli.main import main as civicedge_main

    loaded: list[str] = []

    def counting_load(name: str) -> BoardDefinition:
        loaded.append(name)
        return load_board(name)

    monkeypatch.setattr(provision_cmd, "load_board", counting_load)
    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        rc = await asyncio.to_thread(civicedge_main, [
            "provision", "--port", board.console_path, "--id", "sl-0032", "--zone", "centre",
            "--location", "52.37,4.89", "--registry", str(registry), "--board", "streetlight-esp32",
            "--skip-firmware-check", "--stay-at-repl"])
        assert rc == 0
        assert loaded == ["streetlight-esp32"]
        config = json.loads((flash / "board.json").read_text())
        assert config == load_board("streetlight-esp32").to_device_config()
        assert json.loads((flash / "identity.json").read_text())["kind"] == "streetlight"
    finally:
        await board.stop()
