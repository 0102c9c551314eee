"""Device paths and the firmware file set (pure functions)."""

from __future__ import annotations

import hashlib
import os
import tty
from pathlib import Path

import pytest

from hil.dut import Dut
from hil.dut.errors import DevicePathError, DeviceProtocolError, DeviceTimeoutError, parse_exception_line
from hil.dut.files import device_path, firmware_files, parent_dirs


def test_device_path_normalises() -> None:
    assert device_path("lib/civic/x.py") == "/lib/civic/x.py"
    assert device_path("//lib/./civic//x.py") == "/lib/civic/x.py"
    for bad in ("", "/", "/lib/../boot.py", "a\x00b", "."):
        with pytest.raises(DevicePathError):
            device_path(bad)


def test_parent_dirs_parents_first() -> None:
    assert parent_dirs(["/lib/civic/wire/a.py", "/lib/b.py", "/main.py"]) == ["/lib", "/lib/civic", "/lib/civic/wire"]


def test_firmware_files_skip_host_artefacts(tmp_path: Path) -> None:
    (tmp_path / "lib" / "civic" / "__pycache__").mkdir(parents=True)
    (tmp_path / "lib" / "civic" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (tmp_path / "lib" / "civic" / "x.py").write_text("X = 1\n")
    (tmp_path / "lib" / "civic" / "x.pyi").write_text("X: int\n")
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "pyrightconfig.json").write_text("{}")  # a dev config: civicedge flash leaves it home
    (tmp_path / "notes.txt").write_text("not for the board")
    files = firmware_files(tmp_path, board_config={"name": "b"}, identity={"id": "d"},
                           extra={"extra.txt": b"e", "main.py": b"override"})
    assert list(files) == ["/board.json", "/extra.txt", "/identity.json", "/lib/civic/x.py", "/main.py"]
    assert files["/main.py"] == b"override" and files["/board.json"] == b'{"name":"b"}'  # as flash writes it
    with pytest.raises(FileNotFoundError):
        firmware_files(tmp_path / "missing")


def test_firmware_files_are_what_civicedge_flash_installs_from_the_source_tree() -> None:
    """Before, every file under firmware/ went to a board (pyrightconfig.json included)."""
    from gateway.resources import firmware_dir
    from hil.field.firmware_copy import expected_files

    files = firmware_files(firmware_dir())
    assert (firmware_dir() / "pyrightconfig.json").exists() and "/pyrightconfig.json" not in files
    assert {p: hashlib.sha256(d).hexdigest() for p, d in files.items()} == expected_files("source")


def test_parse_exception_line() -> None:
    assert parse_exception_line("Traceback...\n  File x\nOSError: [Errno 2] ENOENT\n") == (
        "OSError", "[Errno 2] ENOENT")
    assert parse_exception_line("KeyboardInterrupt\r\n") == ("KeyboardInterrupt", "")
    assert parse_exception_line("") == ("Exception", "")
    assert parse_exception_line("something odd happened") == ("Exception", "something odd happened")


@pytest.mark.timeout(30)
def test_silent_port_times_out_entering_raw_repl() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with Dut(os.ttyname(slave)) as dut:
            with pytest.raises(DeviceTimeoutError) as err:
                dut.exec("print(1)", timeout_s=0.5)
            assert err.value.operation == "enter raw REPL"
            # What the harness typed reached the port: Ctrl-C then Ctrl-A.
            assert b"\x03" in os.read(master, 100)
    finally:
        os.close(master)
        os.close(slave)


def test_hard_reset_needs_modem_lines() -> None:
    master, slave = os.openpty()
    try:
        with Dut(os.ttyname(slave)) as dut:
            with pytest.raises(DeviceProtocolError) as err:
                dut.pulse_reset()
            assert "RTS/DTR" in err.value.operation
    finally:
        os.close(master)
        os.close(slave)
