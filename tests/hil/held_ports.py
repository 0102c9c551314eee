"""Ports for the port-range tests: a block of free ports of the test's own (:func:`port_block`) and ports held by
the test itself (a listening socket on 127.0.0.1: :func:`taken`, :func:`take`).

A block is picked at random below the kernel's ephemeral port range (``/proc/sys/net/ipv4/ip_local_port_range``),
so no outgoing connection or ``bind(port 0)`` of another program gets one of its ports from the kernel while the
test runs, and above 1024. A block any of whose ports is bound by another program is passed over for another one.
Each port of a block is also reserved for the test by a name in Linux's abstract socket namespace
(``civicedge-tests-port-<port>``): no other test picking its block here (in a second xdist worker, or in another
pytest session on the machine) gets a block overlapping one a test still uses, though nothing listens on its ports
yet. The names go with the test (or with its process, if it dies); no file is written.
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from hil.tcp_ports import HOST, PortRange

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL = (32768, 60999)
"""Linux's default ephemeral range, assumed when :data:`EPHEMERAL_RANGE` cannot be read."""
LOWEST_PORT = 1025
"""Ports below are privileged."""
TRIES = 200
"""Random blocks tried before a test fails for want of one (a block is passed over when a port of it is bound)."""
RESERVATION = "civicedge-tests-port-%d"
"""The abstract socket name that reserves a port for the test holding it."""


@pytest.fixture
def taken() -> Iterator[list[socket.socket]]:
    """The sockets :func:`take` opened in the test; closed after it."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def take(port: int, held: list[socket.socket]) -> None:
    """Listen on ``127.0.0.1:port`` until the test ends (``held``: the ``taken`` fixture)."""
    sock = socket.socket()
    sock.bind((HOST, port))
    sock.listen()
    held.append(sock)


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's ephemeral port range (``low``, ``high``); Linux's default when ``path`` cannot be read."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return low, high


def unbound(port: int) -> bool:
    """True when no socket of any program is bound to ``port`` on 127.0.0.1 (or on all addresses).

    A plain bind, without ``SO_REUSEADDR``: stricter than :func:`hil.tcp_ports.port_free`, which takes a port whose
    last connection is in TIME_WAIT for free. :func:`take` binds that way, so it cannot fail on a port read unbound.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def reserve(block: PortRange) -> list[socket.socket] | None:
    """Reserve each port of ``block`` by its abstract socket name; None (nothing kept) when one is reserved already.

    Close the sockets returned to give the block back. Where there is no abstract socket namespace (not Linux), no
    reservation is made (an empty list): blocks are then kept apart by their random places only.
    """
    if not sys.platform.startswith("linux"):
        return []
    names: list[socket.socket] = []
    for port in range(block.low, block.high + 1):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + RESERVATION % port)
        except OSError:
            sock.close()
            for held in names:
                held.close()
            return None
        names.append(sock)
    return names


def pick_block(size: int, reservations: list[socket.socket], *,
               randint: Callable[[int, int], int] = random.randint) -> PortRange:
    """``size`` consecutive ports, none bound now and none reserved by another test, at a random place below the
    kernel's ephemeral range; their reservations are appended to ``reservations`` (close them to give it back).

    Fails the test (after :data:`TRIES` blocks) when no such block is found; skips it when the ephemeral range
    leaves no room for ``size`` ports above 1024. ``randint(a, b)`` picks each block's first port.
    """
    first_ephemeral, _ = ephemeral_range()
    highest_low = first_ephemeral - size  # the block's last port stays below the ephemeral range
    if highest_low < LOWEST_PORT:
        pytest.skip(f"no room for {size} ports between {LOWEST_PORT} and the ephemeral range (from "
                    f"{first_ephemeral}, {EPHEMERAL_RANGE})")
    for _ in range(TRIES):
        low = randint(LOWEST_PORT, highest_low)
        block = PortRange(low, low + size - 1)
        names = reserve(block)  # before the probe: a worker picking at the same time passes them over
        if names is None:
            continue
        if all(unbound(port) for port in range(block.low, block.high + 1)):
            reservations.extend(names)
            return block
        for sock in names:
            sock.close()
    pytest.fail(f"no block of {size} free ports in {LOWEST_PORT}-{first_ephemeral - 1} after {TRIES} random tries "
                "(each had a port bound by another program or reserved by another test)")


@pytest.fixture
def port_block() -> Iterator[Callable[[int], PortRange]]:
    """``port_block(size)``: a block of ``size`` free consecutive ports (:func:`pick_block`), the test's own until
    it ends."""
    reservations: list[socket.socket] = []
    yield lambda size: pick_block(size, reservations)
    for sock in reservations:
        sock.close()
