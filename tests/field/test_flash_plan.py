"""The esptool step of `civicedge flash`, tested up to the missing USB port."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import serial

from hil.field.chips import chip_from_esptool_name, chip_profile
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


def _image(tmp_path: Path, size: int = 4096, magic: int = 0xE9) -> Path:
    path = tmp_path / "micropython.bin"
    path.write_bytes(bytes([magic]) + b"\xff" * (size - 1))
    return path


@pytest.mark.parametrize(("chip", "offset"), [("esp32", 0x1000), ("esp32c3", 0x0), ("esp32s3", 0x0)])
def test_image_offset_per_chip(tmp_path: Path, chip: str, offset: int) -> None:
    plan = plan_flash(port="/dev/ttyUSB0", chip=chip_profile(chip), image=_image(tmp_path))
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
    plan = plan_flash(port=pty_port, chip=chip_profile("esp32c3"), image=_image(tmp_path))
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
