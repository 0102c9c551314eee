"""TCP ports the plugin's servers listen on: any free one, or one of ``--hil-port-range LOW-HIGH``.

CI machines with firewall rules may allow only a range of ports. Without a range the gateway's HTTP
server and the virtual radio bind port 0 (the kernel picks a free one, no race with parallel test
workers). With a range, each takes the first port of the range, in an order starting at a random
place (so parallel workers rarely try the same port first), that it can bind; a port taken between
the probe and the server's own bind is skipped too.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from typing import Iterator

HOST = "127.0.0.1"


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
    """True when ``port`` can be bound on ``host`` now (a probe: it may be taken right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(ports: PortRange, host: str = HOST) -> Iterator[int]:
    """The ports of ``ports`` that are free when reached (:meth:`PortRange.candidates` order)."""
    return (port for port in ports.candidates() if port_free(port, host))


__all__ = ["PortRange", "free_ports", "port_free"]
