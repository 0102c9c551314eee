"""A port held by a program that takes no lock (cat, screen) is named at once ("in use by PID N
(cat)"), instead of a 10 s wait ending in "no MicroPython REPL answered"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from field_cli import civicedge

from hil.field.ports import port_holders
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(120)]

# A far end in another process, as `civicedge sim` is: it holds the pty's master and its own slave fd.
_FAR_END = "import os, time\nm, s = os.openpty()\nprint(os.ttyname(s), flush=True)\ntime.sleep(60)\n"


def _cat(port: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["cat", port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not port_holders(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_holders_are_the_readers_not_the_far_end(silent_pty: str) -> None:
    assert port_holders(silent_pty) == []  # this process (both ends) is not listed
    cat = _cat(silent_pty)
    try:
        assert port_holders(silent_pty) == [(cat.pid, "cat")]
    finally:
        cat.kill()
        cat.wait()
    far = subprocess.Popen([sys.executable, "-c", _FAR_END], stdout=subprocess.PIPE)
    try:
        assert far.stdout is not None
        port = far.stdout.readline().decode().strip()
        assert port.startswith("/dev/pts/")
        assert port_holders(port) == []  # it holds the master: the board's side, not a competitor
    finally:
        far.kill()
        far.wait()


@pytest.mark.slow
async def test_flash_and_provision_name_the_program_holding_the_port(tmp_path: Path, sim_available: None) -> None:
    board = VirtualBoard("streetlight-esp32", flash_dir=tmp_path / "flash", install=False, speed=10)
    await board.start()
    cat = _cat(board.console_path)
    try:
        port = board.console_path
        started = time.monotonic()
        rc, out = await civicedge("flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        flat = " ".join(out.split())
        assert rc == 2 and f"is in use by PID {cat.pid} (cat)" in flat, out
        assert "no MicroPython REPL answered" not in flat and time.monotonic() - started < 8, out
        rc, out = await civicedge("provision", "--port", port, "--id", "sl-1", "--zone", "centre", "--location",
                                  "52.1,4.2", "--registry", str(tmp_path))
        assert rc == 2 and f"is in use by PID {cat.pid} (cat)" in " ".join(out.split()), out
    finally:
        cat.kill()
        cat.wait()
        await board.stop()
    assert not (tmp_path / "flash" / "main.py").exists()
