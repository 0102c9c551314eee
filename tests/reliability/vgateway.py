"""An in-process gateway on the virtual clock of one virtual board (real MicroPython firmware).

The board's data UART is a real pty; the gateway reads it with its own SerialTransport, verifies,
commits to real SQLite and ACKs. Its clock is the simulation's virtual time (the value each
``advance`` returns), so ACK time sync keeps the board on virtual time, not on the wall clock.
What the firmware generated is recorded with inotify on the board's flash outbox
(hil.scenarios.outbox.OutboxWatch).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

from board_boot import wait_while_booting
from hil.scenarios.outbox import OutboxWatch

from gateway.errors import ProtocolError
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.registry import Registry
from gateway.resources import load_policy
from gateway.storage import ReportStore
from gateway.transports.serial_link import SerialTransport


class VirtualClockGateway:
    """Registry + store + ingest + serial transport for one virtual board, driven step by step."""

    def __init__(self, board: Any, root: Path) -> None:
        self.board = board
        # Frames for which this returns False never reach the gateway (a man in the middle on the link).
        self.link_filter: Callable[[bytes], bool] | None = None
        self.root = root
        self.now = 0.0
        self.metrics = GatewayMetrics("gw-vclock")
        self.registry: Registry | None = None
        self.ingest: IngestService | None = None
        self.watch: OutboxWatch | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def db(self) -> Path:
        return self.root / "reports.sqlite"

    async def start(self) -> None:
        """Start the board, register its identity, and start the gateway on its data pty."""
        self.watch = OutboxWatch(self.board.flash_dir / "outbox")
        await self.board.start()
        self.now = (await self.board.state())["now"] / 1000.0
        ident = json.loads(self.board.identity_path.read_text())
        self.registry = Registry(self.root / "registry")
        self.registry.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"], lon=ident["lon"],
                          key=bytes.fromhex(ident["key"]))
        self.ingest = IngestService(store=ReportStore(self.db, gateway_id="gw-vclock"),
                                    verifier=Verifier(self.registry, load_policy()), metrics=self.metrics,
                                    batch_ms=2, clock=lambda: self.now, monotonic=lambda: self.now)
        await self.ingest.start()
        transport = SerialTransport(self.board.data_path, metrics=self.metrics)
        ingest = self.ingest

        def feed(raw: bytes | ProtocolError, link: Link) -> None:
            if self.link_filter is None or isinstance(raw, ProtocolError) or self.link_filter(raw):
                ingest.feed(raw, link)

        self._task = asyncio.create_task(transport.run(feed))

    async def run(self, seconds: int) -> None:
        """Advance virtual time one second at a time, letting the gateway read, commit and ACK in between.

        A boot (after a reset, a power loss) is waited out in wall time, not advanced through: under
        load it can outlast many steps, and a firmware that came up over 10 virtual s late in the reboot
        storm would be reset before its 60 s stable mark (one unclean boot more: safe mode)."""
        for _ in range(seconds):
            self.now = await self.board.advance(1, chunk_s=1) / 1000.0
            await wait_while_booting(self.board)
            await asyncio.sleep(0.003)

    def generated(self) -> set[int]:
        """Every seq the firmware wrote into its outbox so far."""
        assert self.watch is not None
        return set(self.watch.poll())

    async def drain(self, limit_s: int = 300) -> None:
        """Advance until the board's outbox is empty (everything acknowledged)."""
        assert self.watch is not None
        for _ in range(limit_s // 5):
            if not self.watch.pending():
                await asyncio.sleep(0.2)
                if not self.watch.pending():
                    return
            await self.run(5)
        raise AssertionError("outbox not drained: %r rejections %r\n%s" % (
            self.watch.pending(), self.metrics.registry.get_sample_value, self.board.console_text()[-1500:]))

    def rows(self) -> list[tuple[int, str, int, str]]:
        """(seq, type, w, e-json) of every stored report."""
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute("SELECT seq, type, w, e FROM reports ORDER BY seq").fetchall()
        finally:
            conn.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.ingest is not None:
            await self.ingest.stop()
            self.ingest.close()
            self.ingest.store.close()
        if self.registry is not None:
            self.registry.close()
        await self.board.stop()
        if self.watch is not None:
            self.watch.close()
