"""Ports held by the test itself (a listening socket on 127.0.0.1), for the port-range tests."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest


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
    sock.bind(("127.0.0.1", port))
    sock.listen()
    held.append(sock)
