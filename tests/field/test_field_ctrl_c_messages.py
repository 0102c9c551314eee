"""Ctrl-C during provision's connect step or check's wait exits 130 with one line saying the board's
state, not silently."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]


async def _start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil.cli.main", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


async def _wait_port_open(proc: asyncio.subprocess.Process, port: str, timeout_s: float = 60.0) -> None:
    """Wait until ``proc`` holds ``port`` open: it is in its connect step (a fixed sleep raced a slow
    interpreter start on a loaded machine, and the SIGINT then killed it before its handler was in)."""
    target = os.path.realpath(port)
    deadline = time.monotonic() + timeout_s
    fds = Path(f"/proc/{proc.pid}/fd")
    while time.monotonic() < deadline:
        for fd in (fds.iterdir() if fds.exists() else ()):
            try:
                if os.path.realpath(os.readlink(fd)) == target:
                    await asyncio.sleep(0.5)  # past the open, into the wait for the REPL
                    return
            except OSError:
                continue
        assert proc.returncode is None, "provision ended before it opened the port"
        await asyncio.sleep(0.05)
    raise AssertionError(f"provision did not open {port} within {timeout_s} s")


async def _interrupt(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    return out_b.decode(errors="replace"), " ".join(err_b.decode(errors="replace").split())


async def test_ctrl_c_while_check_waits(tmp_path: Path, sim_available: None) -> None:
    store = tmp_path / "reports.sqlite"
    store.write_bytes(b"")  # a store without reports: check waits
    board = VirtualBoard("streetlight-esp32", device_id="sl-wait-1", flash_dir=tmp_path / "flash", speed=10)
    await board.start()
    try:
        await board.wait_console("sl-wait-1 running", timeout_s=60)
        since = len(board.console_log)
        proc = await _start("check", "--port", board.console_path, "--db", str(store), "--timeout", "120")
        await board.wait_console("sl-wait-1 running", since=since, timeout_s=60)  # restarted: check waits now
        await asyncio.sleep(1.0)
        out, err = await _interrupt(proc)
        assert proc.returncode == 130, out + err
        assert "interrupted: still waiting for a report of sl-wait-1; nothing was changed on the board (its " \
            "firmware runs)" in err, err
        assert "Traceback" not in err
    finally:
        await board.stop()


async def test_ctrl_c_while_provision_connects(tmp_path: Path, silent_pty: str) -> None:
    # A board that does not answer: provision is in its connect step for up to --repl-timeout.
    proc = await _start("provision", "--port", silent_pty, "--id", "sl-1", "--zone", "centre", "--location",
                        "52.1,4.2", "--registry", str(tmp_path), "--repl-timeout", "30")
    await _wait_port_open(proc, silent_pty)
    out, err = await _interrupt(proc)
    assert proc.returncode == 130, out + err
    assert "interrupted while connecting to the board: nothing was written to it and nothing was registered" in err, err
    assert "Traceback" not in err
