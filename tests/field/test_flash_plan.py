"""The esptool step of `civicedge flash`, tested up to the missing USB port."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import serial

from hil.field.chips import CHIPS, chip_from_esptool_name, chip_profile
from hil.field.errors import (
    BoardNotAnsweringError,
    FieldError,
    ImageError,
    PortBusyError,
    PortNotFoundError,
    WrongChipError,
)
from hil.field.esp_flash import connect_chip, plan_flash
from hil.field.ports import check_port_available


def _image(tmp_path: Path, chip: str = "esp32", size: int = 4096, name: str = "micropython.bin") -> Path:
    """An image whose header says it is for ``chip`` (magic 0xE9, chip id at byte 12, u16 LE)."""
    path = tmp_path / name
    header = bytearray(b"\xe9\x03\x02\x20" + b"\0" * 20)
    header[12:14] = chip_profile(chip).image_chip_id.to_bytes(2, "little")
    path.write_bytes(bytes(header) + b"\xff" * (size - len(header)))
    return path


@pytest.mark.parametrize(("chip", "offset"), [("esp32", 0x1000), ("esp32c3", 0x0), ("esp32s3", 0x0)])
def test_image_offset_per_chip(tmp_path: Path, chip: str, offset: int) -> None:
    plan = plan_flash(port="/dev/ttyUSB0", chip=chip_profile(chip), image=_image(tmp_path, chip))
    assert [s.action for s in plan.steps] == ["erase", "write"]
    assert plan.steps[1].offset == offset
    assert plan.steps[1].size == 4096


def test_no_erase_only_writes(tmp_path: Path) -> None:
    plan = plan_flash(port="/dev/ttyUSB0", chip=chip_profile("esp32"), image=_image(tmp_path), erase=False)
    assert [s.action for s in plan.steps] == ["write"]


def test_unknown_chip_lists_known_ones() -> None:
    with pytest.raises(FieldError, match="esp32c3"):
        chip_profile("esp8266x")


def test_esptool_chip_names_map_back() -> None:
    profile = chip_from_esptool_name("ESP32-C3")
    assert profile is not None and profile.name == "esp32c3"
    assert chip_from_esptool_name("ESP8266") is None


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "does not exist"), (b"", "is empty"), (b"\x7fELF" + b"\0" * 60, "not an ESP firmware image")],
)
def test_bad_images_are_refused(tmp_path: Path, content: bytes | None, match: str) -> None:
    image = tmp_path / "fw.bin"
    if content is not None:
        image.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        plan_flash(port="/dev/ttyUSB0", chip=chip_profile("esp32"), image=image)


def test_chip_ids_match_esptool() -> None:
    from esptool import targets

    for profile in CHIPS.values():
        rom = next(r for r in targets.CHIP_DEFS.values() if r.CHIP_NAME == profile.esptool_name)
        assert profile.image_chip_id == rom.IMAGE_CHIP_ID


def test_image_for_another_chip_is_refused_before_the_port(tmp_path: Path) -> None:
    # QA: an ESP32-C3 image planned for an ESP32 board was erased onto the board, then refused by esptool.
    image = _image(tmp_path, "esp32c3", name="c3.bin")
    with pytest.raises(ImageError, match=r"c3\.bin is a MicroPython image for ESP32-C3, but the board definition "
                                         r"needs ESP32; nothing was written") as info:
        plan_flash(port="/dev/ttyUSB-civicedge-missing", chip=chip_profile("esp32"), image=image)
    assert info.value.details["expected"] == "ESP32" and info.value.details["found"] == "ESP32-C3"


def test_image_with_unknown_chip_id_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "odd.bin"
    image.write_bytes(b"\xe9\x03\x02\x20" + b"\0" * 8 + b"\xff\xff" + b"\0" * 4082)
    with pytest.raises(ImageError, match=r"unknown chip \(image chip id 65535\).*needs ESP32-C3"):
        plan_flash(port="/dev/ttyUSB0", chip=chip_profile("esp32c3"), image=image)


def test_image_shorter_than_a_header_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "short.bin"
    image.write_bytes(b"\xe9\x03\x02\x20")
    with pytest.raises(ImageError, match="shorter than an image header"):
        plan_flash(port="/dev/ttyUSB0", chip=chip_profile("esp32"), image=image)


def test_missing_port_is_a_clear_error() -> None:
    with pytest.raises(PortNotFoundError, match="does not exist"):
        check_port_available("/dev/ttyUSB-civicedge-missing")


@pytest.fixture
def pty_port() -> Any:
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_busy_port_is_a_clear_error(pty_port: str) -> None:
    holder = serial.Serial(pty_port, exclusive=True)  # e.g. a serial monitor left open
    try:
        with pytest.raises(PortBusyError, match="busy"):
            check_port_available(pty_port)
    finally:
        holder.close()
    check_port_available(pty_port)  # free again once released


def test_silent_port_reports_board_not_answering(tmp_path: Path, pty_port: str) -> None:
    # A real pty with nothing behind it: esptool's real sync attempt must fail cleanly.
    plan = plan_flash(port=pty_port, chip=chip_profile("esp32"), image=_image(tmp_path))
    started = time.monotonic()
    with pytest.raises(BoardNotAnsweringError, match="no ESP bootloader answered"):
        connect_chip(plan, attempts=1)
    assert time.monotonic() - started < 60


class _ChipAtTheEndOfTheCable:
    """Stands in for the ROM bootloader of a physical chip (no USB device exists on CI)."""

    def __init__(self, chip_name: str) -> None:
        self.CHIP_NAME = chip_name
        self.closed = False


def test_wrong_chip_for_board_definition(tmp_path: Path, pty_port: str) -> None:
    plan = plan_flash(port=pty_port, chip=chip_profile("esp32"), image=_image(tmp_path))
    with pytest.raises(WrongChipError) as info:
        connect_chip(plan, connect=lambda port, **kw: _ChipAtTheEndOfTheCable("ESP32-C3"))
    assert info.value.details == {"port": pty_port, "expected": "ESP32", "found": "ESP32-C3"}


def test_matching_chip_connects(tmp_path: Path, pty_port: str) -> None:
    plan = plan_flash(port=pty_port, chip=chip_profile("esp32c3"), image=_image(tmp_path, "esp32c3"))
    esp = connect_chip(plan, connect=lambda port, **kw: _ChipAtTheEndOfTheCable("ESP32-C3"))
    assert esp.CHIP_NAME == "ESP32-C3"


def test_real_board_flash(request: pytest.FixtureRequest) -> None:
    port = request.config.getoption("--hil-port")
    image = os.environ.get("CIVICEDGE_MICROPYTHON_IMAGE")
    if not port or not image or request.config.getoption("--hil-backend") != "serial":
        pytest.skip("needs a real board: --hil-backend serial --hil-port PORT and CIVICEDGE_MICROPYTHON_IMAGE=IMAGE.bin")
    from hil.field.esp_flash import execute_flash

    board_chip = os.environ.get("CIVICEDGE_CHIP", "esp32")
    plan = plan_flash(port=port, chip=chip_profile(board_chip), image=Path(image))
    execute_flash(plan)


def test_directory_or_unreadable_image_is_an_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # QA: a directory was "does not exist"; an unreadable image was a PermissionError traceback.
    with pytest.raises(ImageError, match="is a directory; pass the .bin file in it"):
        plan_flash(port="/dev/ttyUSB0", chip=chip_profile("esp32"), image=tmp_path)
    image = _image(tmp_path)

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(ImageError, match="cannot read the MicroPython image .*: Permission denied; check its"):
        plan_flash(port="/dev/ttyUSB0", chip=chip_profile("esp32"), image=image)
