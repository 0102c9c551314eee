"""Fixtures for simulator tests: virtual boards with small test programs on their flash."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
import serial

from hil.sim.board import VirtualBoard

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed virtual start for reproducible runs
TEST_KEY = "11" * 32

BoardFactory = Callable[..., Awaitable[VirtualBoard]]


def write_files(flash: Path, files: dict[str, str]) -> None:
    """Put files (path -> text) on a flash directory."""
    for name, text in files.items():
        path = flash / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_identity(flash: Path, device_id: str, kind: str) -> None:
    """A fixed identity (known key), so two runs produce byte-identical frames."""
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "identity.json").write_text(json.dumps(
        {"id": device_id, "kind": kind, "zone": "z1", "lat": "52.0", "lon": "4.0", "key": TEST_KEY}))


@pytest.fixture
async def make_board(tmp_path: Path) -> AsyncIterator[BoardFactory]:
    """Start virtual boards; every one is stopped (and its Node host ended) after the test."""
    boards: list[VirtualBoard] = []

    async def make(board: str = "streetlight-esp32", *, files: dict[str, str] | None = None,
                   name: str = "b", install: bool = False, speed: float | None = None,
                   **kw: object) -> VirtualBoard:
        flash = kw.pop("flash_dir", None) or tmp_path / name
        flash = Path(str(flash))
        flash.mkdir(parents=True, exist_ok=True)
        write_files(flash, files or {})
        b = VirtualBoard(board, flash_dir=flash, install=install, speed=speed,
                         start_ms=kw.pop("start_ms", START_MS), **kw)  # type: ignore[arg-type]
        boards.append(b)
        await b.start()
        return b

    yield make
    for b in boards:
        await b.stop()


class SerialReader:
    """Non-blocking reads of a pty with pyserial (opened like a USB serial port)."""

    def __init__(self, path: str, baud: int = 115200) -> None:
        self.port = serial.Serial(path, baud, timeout=0)
        self.buf = bytearray()

    async def read_until(self, needle: bytes, timeout_s: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while needle not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not received; got {bytes(self.buf)[-300:]!r}")
            self.buf += self.port.read(4096)
            await asyncio.sleep(0.01)
        idx = self.buf.index(needle) + len(needle)
        out = bytes(self.buf[:idx])
        del self.buf[:idx]
        return out

    async def collect(self, seconds: float) -> bytes:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.buf += self.port.read(4096)
            await asyncio.sleep(0.01)
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def open_serial() -> "Callable[..., SerialReader]":
    """Open ptys with pyserial; closed after the test."""
    opened: list[SerialReader] = []

    def opener(path: str, baud: int = 115200) -> SerialReader:
        r = SerialReader(path, baud)
        opened.append(r)
        return r

    yield opener  # type: ignore[misc]
    for r in opened:
        r.close()


def node_alive(pid: int) -> bool:
    """Whether a process exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


__all__ = ["START_MS", "TEST_KEY", "SerialReader", "node_alive", "write_files", "write_identity"]
