"""Test helper: a MicroPython interpreter (real wasm runtime under Node) exposing the board
channel API (``device_id``, ``send``, ``on``) that :func:`attach_ble` needs.

This stands in for ``hil.sim.board.VirtualBoard`` only as far as the channel goes, so the BLE
module can be tested through the whole stack; tests with a real ``VirtualBoard`` live in
``test_virtual_board_ble.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.sim import SIM_DIR
from hil.sim.mprun import node_binary

HOST = Path(__file__).with_name("mp_channel_host.mjs")
MPY_DIR = SIM_DIR / "mpy"


class ChannelBoard:
    """One MicroPython interpreter with ``hil/sim/mpy`` on its path (``script`` runs at start)."""

    def __init__(self, device_id: str, script: Path | None = None, libs: tuple[Path, ...] = ()) -> None:
        self.device_id = device_id
        self._libs = (MPY_DIR, *libs)
        self._script = script
        self._proc: asyncio.subprocess.Process | None = None
        self._handlers: dict[str, Callable[[str], Any]] = {}
        self.output: asyncio.Queue[str] = asyncio.Queue()
        self.errors: list[str] = []
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            node_binary(), str(HOST), str(SIM_DIR), os.pathsep.join(map(str, self._libs)), *([str(self._script)] if self._script else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), 20)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            msg = json.loads(line)
            if "ch" in msg:
                handler = self._handlers.get(msg["ch"])
                if handler is not None:
                    handler(msg["p"])
            elif "out" in msg:
                self.output.put_nowait(msg["out"])
            elif "err" in msg:
                self.errors.append(msg["err"])
            elif msg.get("ready"):
                self._ready.set()
            elif msg.get("done"):
                self._done.set()

    # -- the channel API of VirtualBoard --
    def send(self, channel: str, payload: str) -> None:
        self._write({"ch": channel, "p": payload})

    def on(self, channel: str, callback: Callable[[str], Any]) -> None:
        self._handlers[channel] = callback

    # -- test conveniences --
    def _write(self, msg: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def exec(self, code: str) -> None:
        """Run more code in the interpreter and wait for it to finish."""
        self._done.clear()
        self._write({"exec": code})
        await asyncio.wait_for(self._done.wait(), 10)

    async def expect(self, prefix: str, timeout: float = 5.0) -> str:
        """Wait for a printed line starting with ``prefix`` (earlier lines are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.output.get()
                if line.startswith(prefix):
                    return line

    async def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 5)
        except asyncio.TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
        self._proc = None
