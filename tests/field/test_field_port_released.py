"""A refused field command closes the board's port before it returns.

``civicedge flash`` left its open board (and pyserial's exclusive lock on the port) behind when it
refused a board (a damaged /identity.json, a definition of another chip): the ``Dut`` was only freed
when the garbage collector next ran, so the next command in the same process (the ``civicedge_cli``
fixture runs them in-process) found the port "busy", or not, depending on when it ran. The garbage
collector is off while each command runs here, so such a leak shows every time.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
import serial

from gateway.registry import Registry
from hil.sim.board import VirtualBoard
from conftest import CliRun

pytestmark = [pytest.mark.timeout(170), pytest.mark.slow]

TRUNCATED = b'{"id": "sl-0060", "key": "abc'


def _fds_on(port: str) -> set[str]:
    """This process's descriptors open on the device node of ``port`` (by ``st_rdev``: links resolved)."""
    rdev = os.stat(port).st_rdev
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            info = os.stat(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == rdev:
            found.add(fd)
    return found


def _lock_error(port: str) -> str | None:
    """Why pyserial's exclusive lock on ``port`` cannot be taken now, or None when it can."""
    probe = serial.Serial(port=None, exclusive=True)
    probe.port = port
    try:
        probe.open()
    except serial.SerialException as exc:
        return str(exc)
    probe.close()
    return None


async def _run_and_check_released(run: CliRun, port: str, *args: str) -> tuple[int, str]:
    """``run(*args)`` with the garbage collector off; asserts the command left ``port`` closed and unlocked."""
    before = _fds_on(port)
    gc.disable()
    try:
        rc, out = await run(*args)
        left_open = _fds_on(port) - before
        locked = _lock_error(port)
    finally:
        gc.enable()
    assert not left_open, f"{args[0]} left {len(left_open)} descriptor(s) open on {port}: {out}"
    assert locked is None, f"{args[0]} left {port} locked ({locked}): {out}"
    return rc, out


async def test_refused_flash_check_and_provision_close_the_port(
        tmp_path: Path, sim_available: None, civicedge_cli: CliRun) -> None:
    run = civicedge_cli
    registry = tmp_path / "registry"
    Registry(registry).close()
    db = tmp_path / "store.db"
    sqlite3.connect(db).close()
    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        linked = tmp_path / "rig port 'A'"  # the console through a symlink with a space and a quote
        linked.symlink_to(port)
        prov = ["provision", "--zone", "centre", "--location", "52.37,4.89", "--registry", str(registry),
                "--board", "streetlight-esp32", "--skip-firmware-check"]
        rc, out = await _run_and_check_released(run, port, *prov, "--id", "sl-0060", "--port", port)
        assert rc == 0, out

        # Refused before anything is written: a definition for another chip.
        rc, out = await _run_and_check_released(run, port, "flash", "--firmware-only", "--board", "bin-esp32c3",
                                                "--port", port)
        assert rc == 2 and "ESP32-C3" in out, out

        (flash / "identity.json").write_bytes(TRUNCATED)
        for via in (port, str(linked)):
            rc, out = await _run_and_check_released(run, port, "flash", "--firmware-only", "--board",
                                                    "streetlight-esp32", "--port", via)
            assert rc == 2 and "damaged /identity.json" in out, out
            rc, out = await _run_and_check_released(run, port, "check", "--port", via, "--db", str(db),
                                                    "--timeout", "5")
            assert rc == 2 and "damaged /identity.json" in out, out
            rc, out = await _run_and_check_released(run, port, *prov, "--id", "sl-0061", "--port", via)
            assert rc == 2 and "damaged /identity.json" in out and "--force" in out, out

        rc, out = await _run_and_check_released(run, port, *prov, "--id", "sl-0061", "--port", str(linked), "--force")
        assert rc == 0, out
        assert json.loads((flash / "identity.json").read_text())["id"] == "sl-0061"
    finally:
        await board.stop()


async def test_a_port_where_no_repl_answers_is_closed(silent_pty: str, civicedge_cli: CliRun,
                                                      tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    sqlite3.connect(db).close()
    rc, out = await _run_and_check_released(civicedge_cli, silent_pty, "check", "--port", silent_pty, "--db",
                                            str(db), "--repl-timeout", "0.5")
    assert rc == 2 and "no MicroPython REPL answered" in out, out
