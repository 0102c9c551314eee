"""Virtual BLE radio for virtual boards: a Bumble link shared across processes.

Layers (one module each):

* :mod:`hil.sim.radio.relay` — the radio itself: a WebSocket server hosting one Bumble
  ``LocalLink`` per room; every client connection gets its own emulated controller on it.
* :mod:`hil.sim.radio.peripheral` — a GATT peripheral on the radio driven by the MicroPython
  low-level ``bluetooth`` API calls of a board.
* :mod:`hil.sim.radio.board_bridge` — wires a simulator ``VirtualBoard`` to a peripheral.
* :mod:`hil.sim.radio.bleak_backend` — bleak scanner/client backends (central side).
"""

from __future__ import annotations

from hil.sim.radio.errors import RadioError, RadioTimeoutError, RadioUrlError
from hil.sim.radio.url import RadioUrl, parse_radio_url

__all__ = ["RadioError", "RadioTimeoutError", "RadioUrlError", "RadioUrl", "parse_radio_url"]
