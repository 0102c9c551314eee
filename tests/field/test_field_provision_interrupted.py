"""QA: Ctrl-C while provision restarted the firmware or watched it start lost the label of a board that
was already provisioned and registered, and printed nothing. The label and what to do next are shown."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from gateway.registry import Registry
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]


async def test_ctrl_c_after_registering_still_prints_the_label(tmp_path: Path, sim_available: None) -> None:
    registry = tmp_path / "registry"
    Registry(registry).close()
    board = VirtualBoard("streetlight-esp32", device_id="sl-int-1", flash_dir=tmp_path / "flash", speed=10)
    await board.start()
    try:
        await board.wait_console("sl-int-1 running", timeout_s=60)
        since = len(board.console_log)
        cmd = [sys.executable, "-m", "hil.cli.main", "provision", "--port", board.console_path, "--id", "sl-int-2",
               "--zone", "centre", "--location", "52.37,4.89", "--registry", str(registry), "--force",
               "--skip-firmware-check"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE,
                                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # Ctrl-C while provision watches the restarted firmware start (3 s), not at a fixed time.
        await board.wait_console("sl-int-2 running", timeout_s=60, since=since)
        proc.send_signal(signal.SIGINT)
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
        out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
        assert proc.returncode == 130, out + err
        assert "LABEL: sl-int-2 | zone centre | key " in out, out + err
        assert "interrupted: the board is provisioned (identity written, registered)" in err, err
        assert f"civicedge check --port {board.console_path} --registry {registry}" in err, err
        assert "Traceback" not in err
    finally:
        await board.stop()
