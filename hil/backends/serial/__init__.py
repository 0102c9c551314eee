"""Serial backend: real boards, selected by port / USB serial number / chip MAC, held by a lease."""

from __future__ import annotations

from hil.backends.serial.lease import Lease, LeaseRecord
from hil.backends.serial.select import BoardSelector, PortInfo, SelectedBoard, list_serial_ports, read_chip_mac, select_board

__all__ = ["BoardSelector", "Lease", "LeaseRecord", "PortInfo", "SelectedBoard", "list_serial_ports",
           "read_chip_mac", "select_board"]
