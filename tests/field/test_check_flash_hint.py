"""The commands ``civicedge check`` suggests paste into a shell as they are: every echoed argument is
shell-quoted, so a port path with a space or a quote gives back that path, not three words."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from hil.sim.board import VirtualBoard
from hil.sim.flash import install_firmware

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def _check(*args: str, timeout_s: float = 90.0) -> tuple[int, dict[str, Any], str]:
    """``civicedge check ... --json`` in a process (this loop keeps serving the board): exit code, record, stderr."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hil.cli.main", "check", *args, "--json",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out_b, err_b = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, json.loads(out_b.decode()), err_b.decode()


async def test_suggested_commands_quote_a_port_with_a_space_and_a_quote(tmp_path: Path, sim_available: None) -> None:
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", device_id="sl-quote-1", flash_dir=flash, speed=10, install=False)
    install_firmware(flash, board.config)
    # Never flashed with civicedge flash (no manifest), and a /board.json of another kind than its identity:
    # check reports both at once, each with a command naming the port.
    (flash / "firmware.json").unlink()
    config = json.loads((flash / "board.json").read_text())
    config["kind"] = "bin"
    (flash / "board.json").write_text(json.dumps(config))
    await board.start()
    try:
        port = tmp_path / "rig port 'A' $HOME"
        port.symlink_to(board.console_path)
        rc, doc, err = await _check("--port", str(port), "--gateway", "http://127.0.0.1:19549")
        assert rc == 1 and doc["result"] == "problem", err
        damaged = next(p for p in doc["problems"] if "incomplete or damaged" in p)
        command = damaged.split("; run ", 1)[1]
        assert shlex.split(command) == ["civicedge", "flash", "--firmware-only", "--board", "streetlight-esp32",
                                        "--port", str(port)], damaged
        kind = next(p for p in doc["problems"] if "its /board.json is for a bin" in p)
        assert kind.endswith(f"--port {shlex.quote(str(port))}"), kind
        assert shlex.split(kind.rsplit("--port ", 1)[1]) == [str(port)], kind
        assert f"problem: {damaged}" in err, err  # what a person reads is the same command
    finally:
        await board.stop()
