"""DUT transport: one MicroPython raw-REPL client (on mpremote's transport) for every backend.

Example::

    from hil.dut import Dut
    with Dut("/dev/pts/5") as dut:            # or socket://127.0.0.1:5555, rfc2217://rig:4000
        dut.exec("import machine")
        dut.eval("machine.unique_id()")      # -> b'...' (a Python value)
        dut.sync_files({"/main.py": b"..."}) # copies only files whose on-device SHA-256 differs
"""

from __future__ import annotations

from hil.dut.dut import Dut, SyncResult
from hil.dut.errors import (
    DeviceConnectError,
    DeviceDisconnectedError,
    DeviceError,
    DevicePathError,
    DeviceProtocolError,
    DeviceResultError,
    DeviceTimeoutError,
    DutError,
)
from hil.dut.files import device_path, firmware_files

__all__ = [
    "DeviceConnectError", "DeviceDisconnectedError", "DeviceError", "DevicePathError", "DeviceProtocolError",
    "DeviceResultError", "DeviceTimeoutError", "Dut", "DutError", "SyncResult", "device_path", "firmware_files",
]
