"""QA: a refused provision or flash left a street light's firmware stopped at the REPL until the
stretched watchdog reset it (10 minutes). A command that stopped the firmware and changed nothing
restarts it before exiting; a flash that left the firmware incomplete does not (and says so)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.field.device import SERVICE_WINDOW_S
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]

SPEED = 10
RUNNING = "streetlight sl-rst-1 running"
# Well within the watchdog's service window (600 s of board time = 60 s here): a restart, not a reset.
BACK_WITHIN_S = 25.0


async def test_refused_provision_and_flash_restart_the_firmware(tmp_path: Path, civicedge_cli: CliRun) -> None:
    assert SERVICE_WINDOW_S / SPEED > BACK_WITHIN_S + 20
    run = civicedge_cli

    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard("streetlight-esp32", device_id="sl-rst-1", flash_dir=tmp_path / "flash", speed=SPEED)
    await board.start()
    try:
        await board.wait_console(RUNNING, timeout_s=60)
        port = board.console_path

        since = len(board.console_log)
        rc, out = await run("provision", "--port", port, "--id", "sl-rst-2", "--zone", "north",
                            "--location", "52.1,4.2", "--registry", str(registry), "--skip-firmware-check")
        assert rc == 2 and "already provisioned" in out, out
        await board.wait_console(RUNNING, timeout_s=BACK_WITHIN_S, since=since)

        since = len(board.console_log)
        rc, out = await run("flash", "--firmware-only", "--board", "bin-esp32c3", "--port", port)
        assert rc == 2 and "ESP32-C3" in out, out
        await board.wait_console(RUNNING, timeout_s=BACK_WITHIN_S, since=since)

        # --stay-at-repl is honoured on a refusal too.
        since = len(board.console_log)
        rc, out = await run("provision", "--port", port, "--id", "sl-rst-2", "--zone", "north",
                            "--location", "52.1,4.2", "--registry", str(registry), "--skip-firmware-check",
                            "--stay-at-repl")
        assert rc == 2, out
        await asyncio.sleep(8)
        assert b"running" not in board.console_log[since:]
    finally:
        await board.stop()
