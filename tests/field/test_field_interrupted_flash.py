"""An interrupted flash says what state the board is in; the next flash repairs it, stale
``.part`` files (half-written temp files of the interrupted copy) included."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]


async def test_interrupted_flash_says_how_to_repair_and_the_next_flash_cleans_up(
        tmp_path: Path, sim_available: None) -> None:
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=100)
    await board.start()
    try:
        cmd = [sys.executable, "-m", "hil.cli.main", "flash", "--firmware-only", "--board", "streetlight-esp32",
               "--port", board.console_path]
        # A test run in the background inherits SIGINT ignored; the CLI must see Ctrl-C as a user would.
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT,
                                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Ctrl-C while files are being written (a half-written X.part on the board's flash), not at a
        # fixed time: a slow machine may still be starting, a fast one already done.
        for _ in range(3000):
            if any(flash.rglob("*.part")) or proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        assert proc.returncode is None, "flash ended before it wrote a file"
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode(errors="replace")
        assert proc.returncode == 130, text
        assert "interrupted: the board may hold a partly written firmware" in text
        assert "re-run to repair it: civicedge flash --board streetlight-esp32" in text and "--firmware-only" in text
        assert "Traceback" not in text

        stale = flash / "lib" / "civic" / "hal" / "clock.py.part"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"half a module")
        theirs = flash / "data" / "upload.part"  # not the firmware's: left alone
        theirs.parent.mkdir(parents=True, exist_ok=True)
        theirs.write_bytes(b"someone else's")
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, out.decode(errors="replace")
        assert not stale.exists()
        assert list(flash.rglob("*.part")) == [theirs]
    finally:
        await board.stop()


async def test_flash_interrupted_before_copying_says_nothing_was_written() -> None:
    """QA: Ctrl-C while flash waited for the REPL said the board may hold a partly written firmware."""
    master, slave = os.openpty()
    try:
        cmd = [sys.executable, "-m", "hil.cli.main", "flash", "--firmware-only", "--board", "streetlight-esp32",
               "--port", os.ttyname(slave), "--repl-timeout", "60"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT,
                                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Ctrl-C once the CLI talks to the port (it waits for a REPL that never answers).
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, os.read, master, 64), 60)
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode(errors="replace")
        assert proc.returncode == 130, text
        assert "interrupted: nothing was written to the board" in text, text
        assert "partly written" not in text and "Traceback" not in text
    finally:
        os.close(master)
        os.close(slave)
