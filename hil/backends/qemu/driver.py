"""Strategy steps for a board on Espressif's QEMU.

flash: collect our firmware files (the set ``civicedge flash --source`` installs); provision: add
/identity.json and build the flash image (release image + littlefs); start: boot QEMU, attach to its serial port and watch for a crash.
QEMU has no ADC or BLE model: tests drive inputs over the REPL instead (see docs/hil.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from hil.backends.board import BoardHandle, wait_reporting_dut
from hil.backends.errors import BackendError
from hil.backends.qemu.image import build_flash_image, check_release_image
from hil.backends.qemu.launcher import QemuMachine, find_qemu
from hil.field.chips import chip_profile
from hil.field.firmware_copy import device_files
from hil.tcp_ports import PortRange

log = logging.getLogger(__name__)


class QemuDriver:
    """Runs a board definition's firmware in QEMU.

    Args:
        release_image: MicroPython release ``.bin`` for boards of any chip without one in
            ``release_images`` (``--hil-qemu-image FILE``).
        release_images: release images by chip (``--hil-qemu-image esp32c3=FILE``), so one run can
            bring up boards of several chips.
        qemu_binary: explicit QEMU executable (else found on PATH).
        start_timeout_s: limit for the emulated firmware to say it runs (QEMU is slow).
        port_range: TCP ports for QEMU's console, data UART and QMP sockets (``--hil-port-range``);
            None: any free ports.
    """

    backend = "qemu"

    def __init__(self, *, release_image: Path | None, release_images: Mapping[str, Path] | None = None,
                 qemu_binary: str | None = None, start_timeout_s: float = 120.0,
                 port_range: PortRange | None = None) -> None:
        self.release_image = release_image
        self.release_images = dict(release_images or {})
        self.port_range = port_range
        self.qemu_binary = qemu_binary
        self.start_timeout_s = start_timeout_s

    def image_for(self, chip: str) -> Path | None:
        """The release image for boards of ``chip``: its own, else the one for any chip, else None."""
        return self.release_images.get(chip, self.release_image)

    def check_available(self, chip: str) -> None:
        """Raise unless a release image for ``chip`` and QEMU for ``chip`` are available.

        The image is checked first, as ``civicedge flash`` checks one (:func:`check_release_image`),
        so a wrong ``--hil-qemu-image`` is an error also where QEMU is missing. The pytest plugin
        skips the test on :class:`QemuNotFoundError` (hardware that cannot exist here) and errors it
        on any other :class:`BackendError` (an option the user gave is wrong).

        Raises:
            BackendError: no release image given.
            ReleaseImageError: the file is missing or not a MicroPython release image for ``chip``.
            QemuNotFoundError: no Espressif QEMU.
        """
        image = self.image_for(chip)
        if image is None:
            raise BackendError(f"the qemu backend has no MicroPython release image for {chip}: give "
                               f"--hil-qemu-image {chip}=FILE (or --hil-qemu-image FILE), e.g. "
                               f"{_example_image(chip)} from micropython.org/download", image=None, chip=chip)
        check_release_image(image, chip)
        find_qemu(chip, binary=self.qemu_binary)

    def flash(self, handle: BoardHandle) -> None:
        """Collect what ``civicedge flash --source`` installs: the firmware sources, /board.json and the
        manifest /firmware.json (the image is built once the identity exists). Sources, since the
        release image's .mpy version is known only once it runs."""
        self.check_available(handle.definition.chip)
        handle.extras["files"] = device_files(handle.definition.to_device_config(), compile_mpy=False)

    def provision(self, handle: BoardHandle) -> None:
        """Add /identity.json and build the flash image."""
        files = dict(handle.extras["files"])
        files["/identity.json"] = json.dumps(handle.identity, sort_keys=True).encode()
        release = self.image_for(handle.definition.chip)
        if release is None:
            raise BackendError(f"no MicroPython release image for {handle.definition.chip} (--hil-qemu-image)",
                               image=None, chip=handle.definition.chip)
        image = build_flash_image(release_image=release, chip=handle.definition.chip, files=files,
                                  output=handle.workdir / "flash.bin")
        handle.extras["image"] = image

    def start(self, handle: BoardHandle) -> None:
        """Boot QEMU on the image and wait for the firmware's "running" line."""
        uart = handle.definition.uart
        machine = QemuMachine(image=handle.extras["image"].path, chip=handle.definition.chip,
                              binary=self.qemu_binary, data_uart_id=uart.id if uart is not None else None,
                              port_range=self.port_range)
        machine.start()
        handle.resource = machine
        handle.console_url = machine.serial_url
        handle.data_url = machine.data_url
        # Output sent before a client connects to QEMU's TCP serial is dropped: attach first,
        # then reset so the whole boot is seen.
        handle.dut.read_output(duration_s=0.1)
        machine.reset()
        wait_reporting_dut(handle, timeout_s=self.start_timeout_s)

    def reset(self, handle: BoardHandle) -> None:
        """QMP ``system_reset`` (the EN line of a board)."""
        handle.dut.read_output(duration_s=0.05)  # drop output of the previous boot
        handle.resource.reset()

    def wait_running(self, handle: BoardHandle, *, timeout_s: float) -> None:
        """Wait for the "running" line on the console."""
        wait_reporting_dut(handle, timeout_s=timeout_s)

    def close(self) -> None:
        """Nothing is shared between QEMU boards."""

    def stop(self, handle: BoardHandle) -> None:
        """Stop QEMU."""
        handle.close_dut()
        machine, handle.resource = handle.resource, None
        if isinstance(machine, QemuMachine):
            machine.stop()


def _example_image(chip: str) -> str:
    """The name of MicroPython's generic release image for ``chip`` (``ESP32_GENERIC_C3-v1.27.0.bin``)."""
    return chip_profile(chip).micropython_image.replace("*", "v1.27.0")
