"""QA: provision registered a key on a board that did not run our firmware (no /firmware.json, or
files an interrupted flash left changed) and printed success; a flash that failed mid-copy must not
restart into broken code, and says so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.dut.dut import Dut
from hil.dut.errors import DutError
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


async def test_provision_refuses_a_board_without_our_firmware_and_reports_a_start_failure(
        tmp_path: Path, civicedge_cli: CliRun, monkeypatch: pytest.MonkeyPatch) -> None:
    run = civicedge_cli

    registry = tmp_path / "registry"
    Registry(registry).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, speed=20)
    await board.start()
    try:
        (flash / "firmware.json").unlink()  # firmware files copied by hand (mpremote cp), no /firmware.json
        port = board.console_path
        prov = ["provision", "--port", port, "--id", "sl-0061", "--zone", "centre", "--location", "52.37,4.89",
                "--registry", str(registry)]

        def registered() -> list[str]:
            reg = Registry(registry)
            try:
                return [r.id for r in reg.list()]
            finally:
                reg.close()

        rc, out = await run(*prov)
        assert rc == 2, out
        assert (f"the board on {port} has no /firmware.json" in out and "nothing was registered" in out
                and f"flash it first: civicedge flash --firmware-only --board streetlight-esp32 --port {port}" in out), out
        assert registered() == [] and not (flash / "identity.json").exists()

        rc, out = await run("flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 0, out
        module = flash / "lib" / "civic" / "report.mpy"
        good = module.read_bytes()
        module.write_bytes(good[: len(good) // 2])  # as an interrupted copy leaves it
        rc, out = await run(*prov)
        assert rc == 2 and f"the board on {port}: its firmware files differ from its /firmware.json" in out, out
        assert "/lib/civic/report.mpy" in out, out
        assert registered() == []

        # A flash that fails mid-copy does not restart the now incomplete firmware, and says so.
        real_sync = Dut.sync_files

        def failing_sync(self: Dut, files: object, **kw: object) -> object:
            module.write_bytes(b"half")
            raise DutError("the link dropped")

        monkeypatch.setattr(Dut, "sync_files", failing_sync)
        rc, out = await run("flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        monkeypatch.setattr(Dut, "sync_files", real_sync)
        assert rc == 2, out
        assert (f"the firmware on {port} is incomplete, so it was not restarted" in out
                and "re-run to repair it: civicedge flash --board streetlight-esp32" in out), out
        since = len(board.console_log)
        await asyncio.sleep(4)
        assert b"civicedge:" not in board.console_log[since:] and b"Traceback" not in board.console_log[since:]
        rc, out = await run("flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 0, out

        # The firmware refuses to start after the restart: provision says so instead of "restarted".
        (flash / "board.json").write_text(json.dumps({"kind": "streetlight"}))
        rc, out = await run(*prov, "--skip-firmware-check")
        assert rc == 2, out
        assert "holds its new identity, but its firmware does not run; its console says: civicedge: cannot start" \
            in out and "firmware restarted" not in out, out
        assert registered() == ["sl-0061"]
    finally:
        await board.stop()
