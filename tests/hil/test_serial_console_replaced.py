"""A board's console that is gone by teardown is not reopened: a pty's number goes to the next pty.

Seen in CI: the serial backend's teardown reopened ``/dev/pts/0`` to restart the firmware it had
stopped, but that board was gone and the number served another test's board, whose console was then
"busy" (and would have been soft-reset, and could have been given an identity put back).
"""

from __future__ import annotations

import os
import select
import time
import tty
from pathlib import Path

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.backends.errors import BoardIdentityError
from hil.backends.serial.driver import SerialDriver
from hil.boards import load_board


def _new_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def _handle(tmp_path: Path, console: str) -> BoardHandle:
    definition = load_board("streetlight-esp32")
    return BoardHandle(backend="serial", definition=definition, identity=make_identity(definition),
                       workdir=tmp_path, console_url=console)


def test_a_stopped_boards_console_taken_by_another_pty_is_left_alone(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.sim import console_registry

    monkeypatch.setenv(console_registry.ENV_DIR, str(tmp_path / "run"))
    master, slave, path = _new_pty()
    handle = _handle(tmp_path, path)
    handle.dut  # opened on the board's console, as the identity check does
    handle.extras["firmware_stopped"] = True  # the harness stopped its firmware (raw REPL)
    handle.close_dut()
    assert not handle.console_replaced()
    os.close(slave)
    os.close(master)  # the board is gone ...
    # A node's ctime has the kernel's coarse clock (a tick, ~4 ms): ptys made within one tick look alike.
    time.sleep(0.05)
    other_master, other_slave, other_path = _new_pty()  # ... and the next pty may get its number
    try:
        if other_path != path:
            os.close(other_slave)
            os.close(other_master)
            pytest.skip(f"the kernel gave the new pty another number ({other_path}, not {path})")
        assert handle.console_replaced()
        handle.extras["saved_identity"] = object()  # an identity to put back: never onto another board
        driver = SerialDriver(selector=path, lease_dir=tmp_path / "leases")
        with pytest.raises(BoardIdentityError) as err:
            driver.stop(handle)
        assert "not the board's any more" in str(err.value)
        # Nothing was written to the other board's console: no Ctrl-C, no soft reset, no file.
        assert select.select([other_master], [], [], 0.3)[0] == []
        handle.extras.pop("saved_identity", None)
        handle.extras["firmware_stopped"] = True
        driver.stop(handle)  # the restart is skipped, quietly
        assert select.select([other_master], [], [], 0.3)[0] == []
    finally:
        os.close(other_slave)
        os.close(other_master)
