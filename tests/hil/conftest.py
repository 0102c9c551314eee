"""Fixtures of the HIL harness tests."""

from __future__ import annotations

import os
import subprocess
import threading
import tty
from pathlib import Path
from typing import Any, Iterator

import pytest

from hil.sim import SIM_DIR
from hil.sim.mprun import RuntimeMissingError, node_binary
from hil_peer import ReplPeer, _pump


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


@pytest.fixture
def blank_virtual_board(tmp_path_factory: pytest.TempPathFactory, sim_available: None) -> Iterator[Any]:
    """A virtual board with MicroPython only (empty flash, no identity): a freshly flashed real board."""
    from hil.backends.sim_driver import _LoopThread
    from hil.sim.board import VirtualBoard

    loop = _LoopThread()
    board = VirtualBoard("bin-esp32c3", flash_dir=tmp_path_factory.mktemp("blank-flash"), install=False)
    try:
        loop.run(board.start(), timeout_s=120)
        yield board
    finally:
        loop.run(board.stop(), timeout_s=60)
        loop.close()
