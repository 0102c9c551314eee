"""QA: Ctrl-C while provision read the board after connecting (its /board.json, in the "connect to the
board" step) or checked its firmware exited 130 with no line saying where the board stands. Real SIGINT
to a real ``civicedge provision``, made deterministic by a relay between it and the virtual board that
holds the board's answer once provision asks for the file: the interrupt comes while it waits."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
import threading
import tty
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway.registry import Registry
from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


class SlowLink:
    """A pty relaying a board's console that stops passing the board's answers once the host has sent
    ``trigger`` (the board seems slow), until :meth:`release`."""

    def __init__(self, board_port: str, trigger: bytes) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._board = os.open(board_port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._board)
        self._trigger = trigger
        self._sent = b""
        self.holding = threading.Event()
        self._released = threading.Event()
        self._stop = threading.Event()
        self._held = b""
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._board], [], [], 0.05)
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:
                    data = b""
                if data:
                    os.write(self._board, data)
                    if not self.holding.is_set():
                        self._sent = (self._sent + data)[-4096:]
                        if self._trigger in self._sent:
                            self.holding.set()
            if self._board in ready:
                data = os.read(self._board, 4096)
                if self.holding.is_set() and not self._released.is_set():
                    self._held += data
                else:
                    os.write(self._master, self._held + data)
                    self._held = b""

    def release(self) -> None:
        """Pass the board's answers again (the held ones first)."""
        self._released.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self._master, self._slave, self._board):
            os.close(fd)


@pytest.fixture
async def running_board(tmp_path: Path) -> AsyncIterator[VirtualBoard]:
    board = VirtualBoard("streetlight-esp32", device_id="sl-cc-1", flash_dir=tmp_path / "flash", speed=10)
    await board.start()
    try:
        await board.wait_console("sl-cc-1 running", timeout_s=60)
        yield board
    finally:
        await board.stop()


@pytest.mark.parametrize(("trigger", "step"), [(b"board.json", "connect to the board"),
                                               (b"firmware.json", "check the firmware")])
async def test_ctrl_c_while_provision_reads_the_board_says_where_it_stands(
        tmp_path: Path, running_board: VirtualBoard, trigger: bytes, step: str) -> None:
    board = running_board
    registry = tmp_path / "registry"
    Registry(registry).close()
    link = SlowLink(board.console_path, trigger)
    try:
        since = len(board.console_log)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hil.cli.main", "provision", "--port", link.path, "--id", "sl-cc-2", "--zone",
            "centre", "--location", "52.37,4.89", "--registry", str(registry), "--force",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        for _ in range(3000):
            if link.holding.is_set() or proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
        assert link.holding.is_set(), "provision never asked the board for " + trigger.decode()
        await asyncio.sleep(0.5)  # provision waits for the held answer now
        proc.send_signal(signal.SIGINT)
        link.release()  # the board answers again: provision gives its firmware back
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 90)
        out, err = out_b.decode(errors="replace"), " ".join(err_b.decode(errors="replace").split())
        assert proc.returncode == 130, out + err
        assert f"✗ {step}" in out + err, out + err
        assert ("interrupted while checking the board: nothing was written to it and nothing was registered; its "
                f"firmware is restarted; re-run: civicedge provision --port {link.path} --id sl-cc-2") in err, err
        assert "Traceback" not in err
        reg = Registry(registry)
        try:
            assert reg.lookup("sl-cc-2") is None
        finally:
            reg.close()
        await board.wait_console("sl-cc-1 running", since=since, timeout_s=60)  # its firmware runs again
    finally:
        link.close()
