"""QA: flash on a board whose filesystem is full failed with "device raised OSError: 51 --- device
traceback ... base64 dump" and left a .part file. The simulator now raises MicroPython's ENOSPC (28);
flash checks the free space first (os.statvfs) and, should a write still run out of room, says so and
removes its temp files."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from hil.sim.board import VirtualBoard

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.usefixtures("sim_available")]


async def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from hil.cli.main import main as civicedge_main

    capsys.readouterr()
    rc = await asyncio.to_thread(civicedge_main, list(args))
    captured = capsys.readouterr()
    return rc, " ".join((captured.out + captured.err).split())


async def test_flash_refuses_a_full_board_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "logs.bin").write_bytes(b"\0" * (4 * 1024 * 1024 - 16 * 1024))  # 16 KB of the 4 MB partition left
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        rc, out = await _run(capsys, "flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 2, out
        assert "error: the board's filesystem is full (16 KB free, the firmware needs about " in out, out
        assert f"remove files (mpremote connect {port} fs ls :" in out and "OSError" not in out, out
        assert f"then run flash again: civicedge flash --board streetlight-esp32 --port {port} --firmware-only" in out, out
        assert not (flash / "lib").exists() and not list(flash.rglob("*.part"))
    finally:
        await board.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 48 KB tmpfs (root only): the host disk runs out before the 4 MB partition."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


async def test_a_write_that_runs_out_of_room_is_named_and_its_temp_file_removed(
        small_disk: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hil.field.firmware_copy.check_room", lambda dut, files: None)  # as if statvfs lied
    board = VirtualBoard("streetlight-esp32", flash_dir=small_disk, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        rc, out = await _run(capsys, "flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 2, out
        assert "error: the board's filesystem is full (" in out and "mpremote connect" in out, out
        assert "OSError: 51" not in out and "device traceback" not in out, out
        assert not list(small_disk.rglob("*.part"))
    finally:
        await board.stop()
