"""Ctrl-C during a flash that changed no firmware file (QA: `sync 45 files: 0/0 copied`, then Ctrl-C
in `verify by hash` said the board "may hold a partly written firmware" and left it stopped at the
REPL: a street light dark until someone flashed it again)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def test_ctrl_c_after_nothing_was_copied_says_the_firmware_is_intact_and_restarts_it(
        tmp_path: Path, sim_available: None) -> None:
    flash = tmp_path / "flash"
    # Installed as `flash --source` installs it: the flash below finds every file up to date.
    board = VirtualBoard("streetlight-esp32", device_id="sl-int-1", flash_dir=flash, speed=10)
    await board.start()
    node = board.host.pid
    assert node is not None
    stopped = False
    try:
        await board.wait_console("sl-int-1 running", timeout_s=60)
        manifest = flash / "firmware.json"
        before = manifest.stat().st_mtime_ns
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hil.cli.main", "flash", "--firmware-only", "--source", "--board",
            "streetlight-esp32", "--port", board.console_path, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # The manifest is rewritten as `verify by hash` starts, after the sync: freeze the board there
        # (its Node host stopped), so the Ctrl-C lands while flash waits for the board in that step.
        for _ in range(12000):
            if proc.returncode is not None or any(flash.glob("firmware.json.part")) or (
                    manifest.exists() and manifest.stat().st_mtime_ns != before):
                break
            await asyncio.sleep(0.005)
        assert proc.returncode is None, "flash ended before it verified"
        os.kill(node, signal.SIGSTOP)
        stopped = True
        since = len(board.console_log)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)
        os.kill(node, signal.SIGCONT)
        stopped = False
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        text = out.decode(errors="replace")
        assert proc.returncode == 130, text
        assert "0/0 copied" in text, text  # the case: nothing to copy
        assert "verify by hash" in text, text
        assert "partly written" not in text and "Traceback" not in text, text
        assert "interrupted: no firmware file on the board was changed" in text, text
        assert "the firmware is intact and was restarted" in text, text
        # Restarted, as a failed flash that changed nothing restarts it: the light is not left dark.
        await board.wait_console("sl-int-1 running", since=since, timeout_s=60)
    finally:
        if stopped:
            os.kill(node, signal.SIGCONT)
        await board.stop()


async def test_ctrl_c_before_the_first_file_was_replaced_checks_the_firmware_and_restarts_it(
        tmp_path: Path, sim_available: None) -> None:
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", device_id="sl-int-2", flash_dir=flash, speed=10)
    await board.start()
    node = board.host.pid
    assert node is not None
    stopped = False
    try:
        await board.wait_console("sl-int-2 running", timeout_s=60)
        # An older release: one module differs from this tree's, and the board's manifest says so.
        module = flash / "lib" / "civic" / "apps" / "base.py"
        module.write_bytes(module.read_bytes() + b"\n# an older release\n")
        doc = json.loads((flash / "firmware.json").read_text())
        doc["files"]["/lib/civic/apps/base.py"] = hashlib.sha256(module.read_bytes()).hexdigest()
        (flash / "firmware.json").write_text(json.dumps(doc, sort_keys=True))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hil.cli.main", "flash", "--firmware-only", "--source", "--board",
            "streetlight-esp32", "--port", board.console_path, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Freeze the board while it writes the new module's temp file (base.py.part): not renamed yet.
        for _ in range(12000):
            if proc.returncode is not None or any(module.parent.glob("base.py.part")):
                break
            await asyncio.sleep(0.005)
        assert proc.returncode is None, "flash ended before it wrote the module"
        os.kill(node, signal.SIGSTOP)
        stopped = True
        since = len(board.console_log)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)
        os.kill(node, signal.SIGCONT)
        stopped = False
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        text = out.decode(errors="replace")
        assert proc.returncode == 130, text
        assert b"older release" in module.read_bytes()  # the old module is still the one in place
        assert "partly written" not in text and "Traceback" not in text, text
        assert "interrupted: no firmware file on the board was changed (0 of 1 copied)" in text, text
        assert "the firmware is intact and was restarted" in text, text
        await board.wait_console("sl-int-2 running", since=since, timeout_s=60)
    finally:
        if stopped:
            os.kill(node, signal.SIGCONT)
        await board.stop()
