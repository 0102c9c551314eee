"""TCP ports the harness's servers listen on: any free one, or ones of a range (``--hil-port-range``).

CI machines with firewall rules may allow only a range of ports. Without a range a server binds port 0
(the kernel picks a free one, no race with parallel test workers). With a range, each takes the first
port of the range, in an order starting at a random place (so parallel workers rarely try the same
port first), that it can bind; a port taken between the probe and the server's own bind is skipped
by the caller's retry.

Used by the pytest plugin (the gateway's HTTP server, the virtual radio; re-exported as
:mod:`hil.pytest_plugin.ports`) and by the QEMU backend (its TCP serial and QMP sockets). It lives
outside the plugin's package so the backends do not import pytest.
"""

from __future__ import annotations

import contextlib
import random
import socket
from dataclasses import dataclass
from typing import Iterator

from hil.errors import HilError

HOST = "127.0.0.1"


class NoFreePortError(HilError):
    """Fewer free ports in a port range than a server needs.

    Attributes:
        port_range: the range, as ``LOW-HIGH``.
        needed: how many ports were asked for.
        free: how many of the range were free.
    """

    def __init__(self, message: str, *, port_range: str, needed: int, free: int) -> None:
        super().__init__(message, port_range=port_range, needed=needed, free=free)
        self.port_range = port_range
        self.needed = needed
        self.free = free


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of TCP ports.

    Attributes:
        low: the first port.
        high: the last port (>= ``low``).
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high <= 65535:
            raise ValueError(f"a port range is LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got {self.low}-{self.high}")

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def __len__(self) -> int:
        return self.high - self.low + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    @classmethod
    def parse(cls, text: str) -> "PortRange":
        """``42000-42999`` (or one port, ``42000``) as a range.

        Raises:
            ValueError: not two port numbers ``LOW-HIGH`` with 1 <= LOW <= HIGH <= 65535.
        """
        low, sep, high = text.strip().partition("-")
        try:
            return cls(int(low), int(high) if sep else int(low))
        except ValueError as exc:
            if "port range" in str(exc):
                raise
            raise ValueError(f"a port range is LOW-HIGH, e.g. 42000-42999, got {text!r}") from None

    def candidates(self) -> Iterator[int]:
        """Every port of the range once, from a random one on (wrapping around)."""
        start = random.randrange(len(self))
        for i in range(len(self)):
            yield self.low + (start + i) % len(self)


def port_free(port: int, host: str = HOST) -> bool:
    """True when a listener could bind ``port`` on ``host`` now (a probe: it may be taken right after).

    The probe sets ``SO_REUSEADDR`` as the listeners it stands for do (QEMU's sockets, asyncio's
    servers): a port whose last connection is in TIME_WAIT (for about a minute after a server closed
    it) is free to them, and so to the probe; a port another socket listens on is not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(ports: PortRange, host: str = HOST) -> Iterator[int]:
    """The ports of ``ports`` that are free when reached (:meth:`PortRange.candidates` order)."""
    return (port for port in ports.candidates() if port_free(port, host))


def choose_ports(count: int, ports: PortRange | None, *, host: str = HOST, purpose: str = "a server") -> list[int]:
    """``count`` distinct ports that are free now, for a program that binds them itself (QEMU).

    Args:
        count: how many ports.
        ports: take them from this range (:func:`free_ports` order); None: the kernel's picks (all
            bound at once while picking, so they differ).
        host: the address they will be bound on.
        purpose: what needs them, for the error (e.g. ``"QEMU's console and QMP"``).

    Raises:
        NoFreePortError: ``ports`` has fewer than ``count`` free ports.
    """
    if ports is None:
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
            for sock in socks:
                sock.bind((host, 0))
            return [int(sock.getsockname()[1]) for sock in socks]
    chosen: list[int] = []
    for port in free_ports(ports, host):
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise NoFreePortError(f"no {count} free ports in --hil-port-range {ports} for {purpose} "
                          f"({len(chosen)} free)", port_range=str(ports), needed=count, free=len(chosen))


__all__ = ["HOST", "NoFreePortError", "PortRange", "choose_ports", "free_ports", "port_free"]
