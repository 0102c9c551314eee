"""Fixtures for the virtual-radio tests: a relay per test, peripherals in their own processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hil.sim.radio.relay import RadioHandle, start_relay

APP = Path(__file__).with_name("peripheral_app.py")
SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"


@pytest.fixture
def radio() -> Iterator[RadioHandle]:
    """A virtual radio relay on a free loopback port."""
    handle = start_relay()
    try:
        yield handle
    finally:
        handle.stop()


class PeripheralProcess:
    """A peripheral app process; ``address`` is its BLE address."""

    def __init__(self, proc: subprocess.Popen[str], info: dict[str, str]) -> None:
        self.proc = proc
        self.address = info["address"]
        self.name = info["name"]

    def kill(self) -> None:
        """Power loss: the process dies without saying goodbye."""
        self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        """Clean stop (stdin closed), then make sure it is gone."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def spawn_peripheral(radio: RadioHandle) -> Iterator[Callable[..., PeripheralProcess]]:
    """Start peripheral processes on the test's radio; all are stopped at teardown."""
    started: list[PeripheralProcess] = []

    def spawn(board_id: str = "sl-test-1", *, url: str | None = None, mtu: int = 256) -> PeripheralProcess:
        proc = subprocess.Popen(
            [sys.executable, str(APP), url or radio.url, "--id", board_id, "--mtu", str(mtu)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"peripheral app {board_id} did not start (exit {proc.poll()})")
        peripheral = PeripheralProcess(proc, json.loads(line))
        started.append(peripheral)
        return peripheral

    yield spawn
    for peripheral in started:
        peripheral.stop()


@pytest.fixture(scope="module")
def shared_radio() -> Iterator[RadioHandle]:
    """One relay for a whole module (tests that leave the radio as they found it)."""
    handle = start_relay()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def shared_board(shared_radio: RadioHandle) -> Iterator[PeripheralProcess]:
    """One peripheral process ``sl-shared-1`` on :func:`shared_radio` for a whole module."""
    proc = subprocess.Popen([sys.executable, str(APP), shared_radio.url, "--id", "sl-shared-1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"shared peripheral did not start (exit {proc.poll()})")
    board = PeripheralProcess(proc, json.loads(line))
    try:
        yield board
    finally:
        board.stop()
