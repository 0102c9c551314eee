"""One virtual board per flash directory, of the flash's kind (QA: two `sim up` shared one flash).

Two boards on one flash shared its seq counter, outbox and key (seq reuse) and installed over each
other's firmware; a bin board started on a streetlight's flash without a word.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from terminal_signals import as_in_a_terminal

from hil.sim.board import VirtualBoard
from hil.sim.errors import FlashInUseError, FlashKindError
from hil.sim.flash import install_firmware
from hil.boards import load_board

pytestmark = pytest.mark.timeout(90)

CIVICEDGE = [sys.executable, "-m", "hil.cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def civicedge(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CIVICEDGE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, preexec_fn=as_in_a_terminal)


def up(flash: Path, *extra: str, board: str = "streetlight-esp32") -> subprocess.Popen[str]:
    return civicedge("sim", "up", "--board", board, "--flash", str(flash), "--json", *extra)


def refused(proc: subprocess.Popen[str]) -> str:
    """The stderr of a `sim up` that must exit 2 before printing a board."""
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (proc.returncode, out, err)
    assert out == ""
    return err


def end(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def streetlight_identity(flash: Path, device_id: str = "sl-0100") -> None:
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "identity.json").write_text(json.dumps({"id": device_id, "kind": "streetlight", "zone": "sim",
                                                     "lat": "0.0", "lon": "0.0", "key": "ab" * 32}))


def test_a_second_sim_up_on_a_flash_in_use_is_refused_and_a_killed_board_does_not_block(tmp_path: Path) -> None:
    flash = tmp_path / "dup"
    first = up(flash, "--id", "sl-0100")
    try:
        info = json.loads(first.stdout.readline())  # type: ignore[union-attr]
        installed = (flash / "firmware.json").stat().st_mtime_ns
        err = refused(up(flash))
        assert f"the flash {flash.resolve()} is in use by another virtual board (pid {first.pid})" in err
        assert (flash / "firmware.json").stat().st_mtime_ns == installed  # nothing installed over the running board
        assert first.poll() is None  # the first board runs on
    except BaseException:
        first.kill()
        raise
    # A board killed outright holds no lock: the kernel released it with the process.
    first.kill()
    first.wait()
    third = up(flash)
    try:
        again = json.loads(third.stdout.readline())  # type: ignore[union-attr]
        assert again["id"] == info["id"] == "sl-0100"
    finally:
        assert end(third) == 0


def test_a_flash_holding_another_kinds_identity_is_refused_naming_both_kinds(tmp_path: Path) -> None:
    flash = tmp_path / "sl"
    streetlight_identity(flash)
    for extra in ((), ("--no-install",)):  # installing firmware does not change whose identity it is
        err = refused(up(flash, *extra, board="bin-esp32c3"))
        assert "holds the identity of sl-0100, a streetlight board, not a bin board (bin-esp32c3)" in err
    assert not (flash / "board.json").exists()  # nothing was installed


def test_no_install_on_another_kinds_firmware_is_refused_and_install_replaces_it(tmp_path: Path) -> None:
    flash = tmp_path / "sl"
    install_firmware(flash, load_board("streetlight-esp32").to_device_config())
    err = refused(up(flash, "--no-install", board="bin-esp32c3"))
    assert "holds the firmware of a streetlight board (streetlight-esp32), not of a bin board (bin-esp32c3)" in err
    assert "without --no-install" in err
    proc = up(flash, board="bin-esp32c3")  # installing is what --no-install leaves out: bin's firmware goes over it
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert info["kind"] == "bin"
        assert json.loads((flash / "board.json").read_text())["kind"] == "bin"
    finally:
        assert end(proc) == 0


def test_a_second_fleet_on_a_flash_root_in_use_is_refused(tmp_path: Path) -> None:
    def fleet() -> subprocess.Popen[str]:
        return civicedge("sim", "fleet", "--count", "1", "--board", "bin-esp32c3", "--flash-root", str(tmp_path),
                         "--processes", "1", "--json")

    first = fleet()
    try:
        assert json.loads(first.stdout.readline())["id"] == "vb-0001"  # type: ignore[union-attr]
        err = refused(fleet())
        assert f"the flash {(tmp_path / 'vb-0001').resolve()} is in use by another virtual board (pid {first.pid})" in err
    finally:
        assert end(first) == 0


async def test_python_api_one_board_per_flash_until_it_stops(tmp_path: Path) -> None:
    flash = tmp_path / "f"
    first = VirtualBoard("streetlight-esp32", flash_dir=flash, speed=10)
    second = VirtualBoard("streetlight-esp32", flash_dir=flash, speed=10)
    await first.start()
    try:
        with pytest.raises(FlashInUseError) as caught:
            await second.start()
        assert caught.value.details["holder_pid"] == os.getpid()
        assert second.host.proc is None  # refused before its Node host started
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no lock file next to the flash
        assert not list(flash.glob("*lock*"))  # nor on it (the board would see it)
    finally:
        await first.stop()
    await second.start()  # the first released it when it stopped
    await second.stop()


async def test_python_api_refuses_another_kinds_identity(tmp_path: Path) -> None:
    flash = tmp_path / "f"
    streetlight_identity(flash)
    assert VirtualBoard("bin-esp32c3", flash_dir=flash, speed=10).check_kind is False  # a test may simulate it
    board = VirtualBoard("bin-esp32c3", flash_dir=flash, speed=10, check_kind=True)
    with pytest.raises(FlashKindError):
        await board.start()
    await board.stop()
    # The refusal released the lock: a streetlight board may run on it.
    ok = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    ok.claim_flash()
    await ok.stop()


def test_install_removes_the_compiled_twins_an_earlier_flash_left(tmp_path: Path) -> None:
    flash = tmp_path / "f"
    cfg = load_board("streetlight-esp32").to_device_config()
    install_firmware(flash, cfg)
    sources = sorted(p for p in (flash / "lib").rglob("*.py"))
    assert sources
    for src in sources:  # what `civicedge flash` (compiled) leaves
        src.with_suffix(".mpy").write_bytes(b"M\x06")
        src.unlink()
    install_firmware(flash, cfg)
    assert sorted((flash / "lib").rglob("*.py")) == sources
    assert not list((flash / "lib").rglob("*.mpy"))  # one firmware on the flash, not two
