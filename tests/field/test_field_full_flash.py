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
    monkeypatch.setattr("hil.field.firmware_copy.check_room", lambda *_a, **_k: None)  # as if statvfs lied
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


def _used_blocks(directory: Path) -> int:
    """Blocks the virtual flash counts (hil/sim/js/hostfs.mjs: files rounded up to 4 KB, 1 per directory)."""
    return sum(1 if p.is_dir() else -(-p.stat().st_size // 4096) for p in directory.rglob("*"))


async def test_flash_credits_the_source_files_it_replaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review: a nearly full board holding the firmware as source (.py, as the simulator installs it) was
    refused ("120 KB free, the firmware needs about 184 KB more"): the .py twins flash removes before
    copying the .mpy files were not counted as freed."""
    from hil.field.firmware_copy import stage_firmware

    flash = tmp_path / "flash"
    flash.mkdir()
    built = {mode: stage_firmware(tmp_path / mode, compile_mpy=mode == "mpy") for mode in ("py", "mpy")}
    for b in built["py"]:
        dest = flash / b.device_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b.local_path.read_bytes())
    (flash / "lib" / "civic" / "report.py.part").write_bytes(b"\0" * 8192)  # of an interrupted copy: removed too

    def blocks(size: int) -> int:
        return -(-size // 4096)

    def have(device_path: str) -> int:
        on_board = flash / device_path.lstrip("/")
        return blocks(on_board.stat().st_size) if on_board.exists() else 0

    new = {b.device_path: blocks(b.local_path.stat().st_size) for b in built["mpy"]}
    grow = sum(max(0, n - have(p)) for p, n in new.items()) + 1  # + /board.json
    need_without_credit = grow + max(new.values()) + 2  # the largest twice for a moment; the manifest
    credit = sum(have(p[:-4] + ".py") for p in new if p.endswith(".mpy")) + 2
    assert credit > 4
    free = need_without_credit - credit // 2  # too little without the credit, enough with it
    (flash / "logs.bin").write_bytes(b"\0" * 4096 * (1024 - _used_blocks(flash) - free))
    assert 1024 - _used_blocks(flash) == free
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        port = board.console_path
        rc, out = await _run(capsys, "flash", "--firmware-only", "--board", "streetlight-esp32", "--port", port)
        assert rc == 0, out
        assert "firmware as mpy" in out, out
        assert not list(flash.rglob("*.part")) and not (flash / "lib" / "civic" / "__init__.py").exists()
    finally:
        await board.stop()
