"""pytest plugin of the civicedge HIL harness (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the HIL command-line options."""
    group = parser.getgroup("civicedge-hil", "civicedge hardware-in-the-loop")
    group.addoption("--hil-backend", choices=("sim", "qemu", "serial"), default="sim",
                    help="where boards under test run: sim (virtual boards), qemu, serial (real boards)")
    group.addoption("--hil-board", default=None, help="board definition name, e.g. streetlight-esp32")
    group.addoption("--hil-port", default=None,
                    help="serial port / URL of the board (serial backend), e.g. /dev/ttyUSB0 or rfc2217://host:4000")
