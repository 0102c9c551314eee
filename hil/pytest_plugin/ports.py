"""TCP ports the plugin's servers listen on: any free one, or one of ``--hil-port-range LOW-HIGH``.

The chooser lives in :mod:`hil.tcp_ports` (the QEMU backend takes its ports from it too, without
importing pytest); this module keeps the plugin's import path and says, when a range has no free
port left, who holds its ports (:func:`range_use_text`).
"""

from __future__ import annotations

from typing import Mapping

from hil.tcp_ports import HOST, NoFreePortError, PortRange, choose_ports, free_ports, port_free

LISTED_PORTS = 8
"""Ports of a range named one by one in :func:`range_use_text`; more are counted."""


def _port_list(ports: list[int]) -> str:
    shown = ", ".join(str(p) for p in ports[:LISTED_PORTS])
    return shown if len(ports) <= LISTED_PORTS else f"{shown} and {len(ports) - LISTED_PORTS} more"


def range_use_text(ports: PortRange, held: Mapping[int, str], host: str = HOST) -> str:
    """Who has the ports of ``ports`` now, for the error of a range with no free port left:
    ``"7501 is this session's virtual radio (hil_radio); 7500 is in use by another process"``.

    Args:
        ports: the range (``--hil-port-range``).
        held: ports the session's own servers listen on (port -> what it is, e.g. ``"the virtual radio
            (hil_radio)"``); ports outside ``ports`` are left out.
        host: the address probed for the others.
    """
    parts = [f"{port} is this session's {what}" for port, what in sorted(held.items()) if port in ports]
    others = [port for port in range(ports.low, ports.high + 1) if port not in held]
    busy = [port for port in others if not port_free(port, host)]
    free = [port for port in others if port not in busy]
    if busy:
        one = len(busy) == 1
        parts.append(f"{_port_list(busy)} {'is' if one else 'are'} in use by {'another process' if one else 'other processes'}")
    if free:  # taken when probed, let go since
        parts.append(f"{_port_list(free)} {'is' if len(free) == 1 else 'are'} free again now (taken when tried)")
    return "; ".join(parts)


def range_exhausted_message(ports: PortRange, what: str, held: Mapping[int, str]) -> str:
    """The error of a server (``what``) that found no free port in ``ports``, naming who holds them."""
    return (f"no free port in --hil-port-range {ports} for {what}: {range_use_text(ports, held)}. "
            "Each of the session's servers needs a port of the range (the gateway's HTTP server, the virtual radio; "
            "with --hil-backend qemu three per board): widen the range or free its ports")


__all__ = ["HOST", "LISTED_PORTS", "NoFreePortError", "PortRange", "choose_ports", "free_ports", "port_free",
           "range_exhausted_message", "range_use_text"]
