"""A board port another process holds (a gateway's serial link opens it exclusively) is named as in use.

Before the fix the serial backend failed with mpremote's ``DeviceConnectError: ... cannot open /dev/pts/N:
failed to access /dev/pts/N``, which does not say the port is taken, nor by whom.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from hil.backends.board import BoardHandle, BoardStateError, Strategy, make_identity
from hil.backends.errors import PortInUseError
from hil.backends.serial.driver import SerialDriver
from hil.boards import load_board

pytestmark = pytest.mark.timeout(60)

# What the gateway's serial link does with its port: pyserial's exclusive open, held.
HOLDER = """
import sys, serial
port = serial.Serial(sys.argv[1], exclusive=True)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_pty() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A pty whose slave another process holds exclusively (as the gateway holds its serial port)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield path, holder
    finally:
        holder.kill()
        holder.wait()
        os.close(master)


def test_a_held_console_is_said_to_be_in_use_by_its_holder(held_pty: tuple[str, subprocess.Popen[str]],
                                                           tmp_path: Path) -> None:
    path, holder = held_pty
    definition = load_board("streetlight-esp32")
    handle = BoardHandle(backend="serial", definition=definition, identity=make_identity(definition), workdir=tmp_path)
    strategy = Strategy(SerialDriver(selector=path, lease_dir=tmp_path / "leases"))
    try:
        with pytest.raises(BoardStateError) as err:
            strategy.transition(handle, "reporting")
    finally:
        strategy.power_off(handle)
    cause = err.value.__cause__
    assert isinstance(cause, PortInUseError), repr(cause)
    assert cause.port == path and [pid for pid, _ in cause.holders] == [holder.pid]
    assert f"the console {path} is in use by pid {holder.pid} (python" in str(cause)
    # Nothing stays leased: the next run can take the board once the holder lets go.
    assert handle.resource is None
