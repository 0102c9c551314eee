"""Fixtures of the HIL harness tests."""

from __future__ import annotations

import os
import subprocess
import threading
import tty
from pathlib import Path
from typing import Iterator

import pytest

from hil.sim import SIM_DIR
from hil.sim.mprun import RuntimeMissingError, node_binary
from hil_peer import ReplPeer, _pump

pytest_plugins = ["pytester"]

PEER_SCRIPT = Path(__file__).with_name("mp_repl_peer.mjs")


@pytest.fixture
def repl_peer() -> Iterator[ReplPeer]:
    """A MicroPython REPL (real wasm interpreter) reachable at a pty path, like a board console."""
    try:
        node = node_binary()
    except RuntimeMissingError as exc:
        pytest.skip(str(exc))
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([node, str(PEER_SCRIPT), str(SIM_DIR)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    peer = ReplPeer(os.ttyname(slave), proc, master, slave)
    for src, dst in ((master, proc.stdin.fileno()), (proc.stdout.fileno(), master)):
        t = threading.Thread(target=_pump, args=(src, dst, peer._stop), daemon=True)
        t.start()
        peer._threads.append(t)
    try:
        yield peer
    finally:
        peer.close()
