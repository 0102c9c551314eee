"""``civicedge flash`` refuses a firmware tree whose ``civic.VERSION`` the gateway would refuse in ``fw``.

Every report carries ``fw`` = ``civic.VERSION`` and the gateway's policy gate refuses a report whose
``fw`` is not a version string: a board flashed with such a tree would never be stored, acknowledged
or given the time. ``VERSION`` is a hand-edited literal, so the host checks it against the gateway's
own pattern (one definition: gateway.pipeline.verify.FW_PATTERN) before it touches a board.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pipeline.verify import FW_PATTERN
from hil.field.errors import FieldError
from hil.field.firmware_copy import firmware_version


def tree(tmp_path: Path, version: str) -> Path:
    """A firmware tree (only what firmware_version reads) whose civic.VERSION is ``version``."""
    init = tmp_path / "fw" / "lib" / "civic" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text('"""civic."""\n\nVERSION = "%s"\n' % version)
    return tmp_path / "fw"


def test_the_shipped_version_is_one_the_gateway_accepts() -> None:
    assert FW_PATTERN.fullmatch(firmware_version())


@pytest.mark.parametrize("version", ["0.2.0 beta", "0.2.0~rc1", "v" * 33, "0.2/0"])
def test_a_version_the_gateway_refuses_is_refused_with_what_to_fix(tmp_path: Path, version: str) -> None:
    src = tree(tmp_path, version)
    with pytest.raises(FieldError) as info:
        firmware_version(src)
    message = str(info.value)
    assert repr(version) in message and str(src / "lib" / "civic" / "__init__.py") in message
    assert "1-32 of 0-9 A-Z a-z . + -" in message and "refused" in message


@pytest.mark.parametrize("version", ["0.2.0", "0.2.0+dev-3", "1" * 32])
def test_a_version_string_passes(tmp_path: Path, version: str) -> None:
    assert firmware_version(tree(tmp_path, version)) == version


@pytest.mark.slow
async def test_flash_refuses_the_tree_before_copying_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              sim_available: None,
                                                              civicedge_cli) -> None:  # type: ignore[no-untyped-def]
    """Through the real CLI onto a virtual board: refused with the reason before the copy starts, so
    the board keeps (and runs again) what it had: no file of the bad tree, no manifest naming it."""
    from hil.sim.board import VirtualBoard

    flash = tmp_path / "flash"
    board = VirtualBoard("streetlight-esp32", flash_dir=flash, install=False, speed=10)
    await board.start()
    try:
        monkeypatch.setattr("hil.field.firmware_copy.firmware_dir", lambda: tree(tmp_path, "0.2.0 beta"))
        rc, out = await civicedge_cli("flash", "--firmware-only", "--board", "streetlight-esp32",
                                      "--port", board.console_path)
    finally:
        await board.stop()
    assert rc != 0
    assert "error: firmware VERSION '0.2.0 beta'" in out and "fix VERSION before flashing" in out
    assert not (flash / "firmware.json").exists() and not (flash / "lib").exists()


async def test_a_full_flash_refuses_the_tree_before_opening_any_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     civicedge_cli) -> None:  # type: ignore[no-untyped-def]
    """A full flash checked VERSION only once the board answered: esptool had rewritten MicroPython by
    then. Now nothing is opened: the port here does not even exist, and the VERSION error comes first."""
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9\x03\x02\x20" + b"\0" * 20 + b"\xff" * 4072)  # an ESP32 image header
    monkeypatch.setattr("hil.field.firmware_copy.firmware_dir", lambda: tree(tmp_path, "0.2.0 beta"))
    rc, out = await civicedge_cli("flash", "--board", "streetlight-esp32", "--port", str(tmp_path / "no-port"),
                                  "--micropython", str(image))
    assert rc != 0
    assert "error: firmware VERSION '0.2.0 beta'" in out and "no-port" not in out
