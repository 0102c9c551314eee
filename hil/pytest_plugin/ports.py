"""TCP ports the plugin's servers listen on: any free one, or one of ``--hil-port-range LOW-HIGH``.

The chooser lives in :mod:`hil.tcp_ports` (the QEMU backend takes its ports from it too, without
importing pytest); this module keeps the plugin's import path.
"""

from __future__ import annotations

from hil.tcp_ports import HOST, NoFreePortError, PortRange, choose_ports, free_ports, port_free

__all__ = ["HOST", "NoFreePortError", "PortRange", "choose_ports", "free_ports", "port_free"]
