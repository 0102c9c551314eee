"""Write a MicroPython release image to an ESP32-family board through esptool's Python API.

The plan (what will be written where) is computed and validated first, without touching the
port, so it can be shown to the technician and tested without hardware.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

import serial

# esptool is imported where it is used, not here: importing it reads ~/.config/esptool/esptool.cfg, which
# raised PermissionError (a traceback from every civicedge command, even --help) when $HOME is unreadable.
from hil.field.chips import ChipProfile, chip_from_esptool_name
from hil.field.errors import BoardNotAnsweringError, FieldError, ImageError, WrongChipError
from hil.field.ports import check_port_available

log = logging.getLogger(__name__)

ESP_IMAGE_MAGIC = 0xE9
ESP_IMAGE_HEADER_BYTES = 24
"""The common image header (8 bytes) plus the extended header (16 bytes) esptool reads."""
ESP_IMAGE_CHIP_ID_OFFSET = 12
"""Where the extended header's chip id (u16, little-endian) sits: after magic, segment count, flash
mode, size/frequency, entry point (8 bytes) and WP pin plus three drive-setting bytes (4 bytes)."""
MAX_FLASH_BYTES = 16 * 1024 * 1024


class EspLoaderLike(Protocol):
    """The part of esptool's ``ESPLoader`` the flasher uses (the chip at the end of the cable)."""

    CHIP_NAME: str


Connect = Callable[..., Any]
"""Signature of :func:`esptool.cmds.detect_chip` (port, baud, connect_mode, ..., connect_attempts)."""


@dataclass(frozen=True)
class FlashStep:
    """One esptool operation: ``erase`` the whole flash, or ``write`` the image at ``offset``."""

    action: Literal["erase", "write"]
    offset: int = 0
    size: int = 0

    def describe(self) -> str:
        """Human-readable one-liner for progress displays."""
        if self.action == "erase":
            return "erase flash"
        return f"write {self.size} bytes at 0x{self.offset:x}"


@dataclass(frozen=True)
class FlashPlan:
    """Everything that will happen to the board, decided before the port is opened."""

    port: str
    chip: ChipProfile
    image: Path
    steps: tuple[FlashStep, ...]
    baud: int


def plan_flash(*, port: str, chip: ChipProfile, image: Path, erase: bool = True, baud: int = 460800) -> FlashPlan:
    """Validate the image and return the plan for flashing it onto ``chip``.

    The image header is checked against ``chip`` here, before the port is touched, so an image
    for another chip never gets as far as erasing the board.

    Raises:
        ImageError: the file is missing, empty, not an ESP firmware image, built for another
            chip, or too large.
    """
    try:
        if image.is_dir():
            raise ImageError(f"MicroPython image {image} is a directory; pass the .bin file in it", image=str(image))
        if not image.is_file():
            raise ImageError(f"MicroPython image {image} does not exist", image=str(image))
        size = image.stat().st_size
        if size == 0:
            raise ImageError(f"MicroPython image {image} is empty", image=str(image))
        with image.open("rb") as fh:
            header = fh.read(ESP_IMAGE_HEADER_BYTES)
    except OSError as exc:
        raise ImageError(f"cannot read the MicroPython image {image}: {exc.strerror or exc}; check its permissions",
                         image=str(image)) from None
    if header[0] != ESP_IMAGE_MAGIC:
        raise ImageError(
            f"{image} is not an ESP firmware image (first byte 0x{header[0]:02x}, expected 0x{ESP_IMAGE_MAGIC:02x}); "
            "download the .bin for your board from micropython.org/download",
            image=str(image),
        )
    if len(header) < ESP_IMAGE_HEADER_BYTES:
        raise ImageError(
            f"{image} is not an ESP firmware image (only {len(header)} bytes, shorter than an image header); "
            "download the .bin for your board from micropython.org/download",
            image=str(image),
        )
    image_chip_id = int.from_bytes(header[ESP_IMAGE_CHIP_ID_OFFSET:ESP_IMAGE_CHIP_ID_OFFSET + 2], "little")
    if image_chip_id != chip.image_chip_id:
        image_chip = image_chip_name(image_chip_id)
        raise ImageError(
            f"{image} is a MicroPython image for {image_chip}, but the board definition needs {chip.esptool_name}; "
            f"nothing was written: download the {chip.esptool_name} .bin from micropython.org/download",
            image=str(image),
            expected=chip.esptool_name,
            found=image_chip,
        )
    if chip.image_offset + size > MAX_FLASH_BYTES:
        raise ImageError(f"{image} ({size} bytes) does not fit in flash at 0x{chip.image_offset:x}", image=str(image))
    steps: list[FlashStep] = []
    if erase:
        steps.append(FlashStep("erase"))
    steps.append(FlashStep("write", offset=chip.image_offset, size=size))
    return FlashPlan(port=port, chip=chip, image=image, steps=tuple(steps), baud=baud)


def _esptool() -> tuple[ModuleType, ModuleType, type[Exception]]:
    """esptool's ``cmds`` and ``targets`` modules and its ``FatalError``, imported on first use.

    Raises:
        FieldError: esptool cannot read its configuration file: importing it looks for
            ``esptool.cfg`` in the current directory, ``~/.config/esptool`` and ``$HOME``, and a
            directory there that this user may not search raised PermissionError (a traceback).
    """
    try:
        from esptool import cmds, targets
        from esptool.util import FatalError
    except OSError as exc:
        raise FieldError(
            f"esptool cannot read its configuration ({exc}): set HOME to a readable directory, or "
            "ESPTOOL_CFGFILE to a readable file holding an [esptool] section (esptool then looks nowhere else)"
        ) from exc
    return cmds, targets, FatalError


def image_chip_name(image_chip_id: int) -> str:
    """Name the chip an ESP image header's chip id stands for (esptool's names), or say it is unknown."""
    _, esptool_targets, _ = _esptool()

    for rom in esptool_targets.CHIP_DEFS.values():
        if getattr(rom, "IMAGE_CHIP_ID", None) == image_chip_id:
            return str(rom.CHIP_NAME)
    return f"an unknown chip (image chip id {image_chip_id})"


def connect_chip(plan: FlashPlan, *, connect: Connect | None = None, attempts: int = 3) -> Any:
    """Open the port, sync with the ROM bootloader and check the chip matches the board definition.

    ``connect`` defaults to :func:`esptool.cmds.detect_chip`.

    Raises:
        PortNotFoundError, PortBusyError: from :func:`check_port_available`.
        BoardNotAnsweringError: the bootloader did not answer (not in download mode, wrong port).
        WrongChipError: a different chip answered.
        FieldError: esptool cannot read its configuration file (see :func:`_esptool`).
    """
    esptool_cmds, _, FatalError = _esptool()
    check_port_available(plan.port)
    if connect is None:
        connect = esptool_cmds.detect_chip
    try:
        esp = connect(plan.port, baud=115200, connect_attempts=attempts)
    except (FatalError, serial.SerialException, OSError) as exc:
        raise BoardNotAnsweringError(
            f"no ESP bootloader answered on {plan.port}: {exc}. Hold BOOT while pressing EN/RESET, then retry.",
            port=plan.port,
        ) from exc
    found = chip_from_esptool_name(esp.CHIP_NAME)
    if found is None or found.name != plan.chip.name:
        _close(esp)
        raise WrongChipError(
            f"the board on {plan.port} is an {esp.CHIP_NAME}, but the board definition needs {plan.chip.esptool_name}",
            port=plan.port,
            expected=plan.chip.esptool_name,
            found=esp.CHIP_NAME,
        )
    return esp


def execute_flash(
    plan: FlashPlan,
    *,
    connect: Connect | None = None,
    on_step: Callable[[FlashStep], None] | None = None,
    attempts: int = 3,
) -> None:
    """Carry out ``plan``: connect, check the chip, erase and write, then hard-reset into MicroPython.

    esptool prints its own byte progress for erase/write; ``on_step`` is told when each step starts.
    ``connect`` defaults to :func:`esptool.cmds.detect_chip`.

    Raises:
        What :func:`connect_chip` raises; BoardNotAnsweringError: esptool failed while flashing.
    """
    esptool_cmds, _, FatalError = _esptool()
    esp = connect_chip(plan, connect=connect, attempts=attempts)
    try:
        esp = esp.run_stub()
        if plan.baud != 115200:
            esp.change_baud(plan.baud)
        for step in plan.steps:
            if on_step is not None:
                on_step(step)
            log.info("%s on %s", step.describe(), plan.port)
            if step.action == "erase":
                esptool_cmds.erase_flash(esp)
            else:
                esptool_cmds.write_flash(esp, [(step.offset, str(plan.image))], flash_size="detect")
        esptool_cmds.reset_chip(esp, "hard-reset")
    except FatalError as exc:
        raise BoardNotAnsweringError(f"flashing failed on {plan.port}: {exc}", port=plan.port) from exc
    finally:
        _close(esp)


def _close(esp: Any) -> None:
    port = getattr(esp, "_port", None)
    if port is not None:
        try:
            port.close()
        except (OSError, serial.SerialException):  # already gone with the USB cable
            pass
