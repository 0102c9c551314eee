"""``Fleet``: many virtual boards in few Node processes (one per CPU core by default)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from hil.sim.board import VirtualBoard
from hil.sim.host import SimHost

logger = logging.getLogger(__name__)


class Fleet:
    """Start ``count`` boards of one kind, spread round-robin over ``processes`` Node hosts.

    Args:
        board: board name or path.
        count: number of boards; ids are ``{id_prefix}-0001`` ...
        provision: give each board an ``/identity.json`` (random key) so the firmware runs;
            False leaves them unprovisioned (the firmware idles at the REPL).
        flash_root: parent of the per-board flash directories (None: a temp dir).
        processes: Node processes (None: ``os.cpu_count()``).
        speed, seed, start_ms, install, paced, radio_url, heap_bytes: as for :class:`VirtualBoard`.
        concurrency: boards booting at once per host.
        check_kind: each board refuses a flash of another kind (:class:`VirtualBoard`).
    """

    def __init__(self, board: str | Path, *, count: int, id_prefix: str = "vb", flash_root: Path | None = None,
                 processes: int | None = None, speed: float | None = 1.0, seed: int | str | None = None,
                 start_ms: int | None = None, install: bool = True, paced: bool = True,
                 radio_url: str | None = None, heap_bytes: int = 256 * 1024, concurrency: int = 4,
                 provision: bool = True, check_kind: bool = False) -> None:
        self.provision = provision
        self.check_kind = check_kind
        self.board = board
        self.count = count
        self.id_prefix = id_prefix
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if flash_root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="civicedge-fleet-")
            flash_root = Path(self._tmp.name)
        self.flash_root = flash_root
        self.processes = max(1, min(processes or os.cpu_count() or 1, count))
        self.hosts = [SimHost(speed=speed, start_ms=start_ms) for _ in range(self.processes)]
        self.seed, self.install, self.paced, self.radio_url = seed, install, paced, radio_url
        self.heap_bytes = heap_bytes
        self.concurrency = concurrency
        self.boards: list[VirtualBoard] = []
        self.start_seconds: list[float] = []

    async def start(self, on_board: Callable[[VirtualBoard], None] | None = None) -> None:
        """Start the hosts and every board; ``on_board`` is called as each board is up."""
        await asyncio.gather(*(h.start() for h in self.hosts))
        for i in range(self.count):
            dev = f"{self.id_prefix}-{i + 1:04d}"
            self.boards.append(VirtualBoard(self.board, device_id=dev if self.provision else None,
                                            flash_dir=self.flash_root / dev,
                                            host=self.hosts[i % len(self.hosts)], seed=self.seed,
                                            install=self.install, paced=self.paced, radio_url=self.radio_url,
                                            heap_bytes=self.heap_bytes, check_kind=self.check_kind))

        async def worker(boards: list[VirtualBoard]) -> None:
            for b in boards:
                t0 = time.perf_counter()
                await b.start()
                self.start_seconds.append(time.perf_counter() - t0)
                if on_board is not None:
                    on_board(b)

        lanes = len(self.hosts) * self.concurrency
        await asyncio.gather(*(worker(self.boards[k::lanes]) for k in range(lanes)))

    async def rss_bytes(self) -> int:
        """Total resident memory of the Node hosts."""
        total = 0
        for h in self.hosts:
            total += int((await h.ping())["rss"])
        return total

    async def stop(self) -> None:
        """Stop every board and host; remove a temporary flash root."""
        for h in self.hosts:
            await h.close()
        for b in self.boards:
            b.started = False
            await b.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
