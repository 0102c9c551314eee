"""Test helpers for the gateway suite: report bodies and frames built with gateway.protocol."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestService, Link, Verifier
from gateway.protocol import FRAME_REPORT, build_frame, parse_frame
from gateway.resources import load_policy
from gateway.storage import ReportStore
from gateway.storage.records import ReportRecord

if TYPE_CHECKING:
    import pytest

    from gateway.registry import Registry

WINDOW_T0 = 1_790_000_100 - (1_790_000_100 % 900)
MOT_PERIOD = 21600  # the streetlight's mot release_every_s in firmware/policy.json
MOT_EPS = 500  # its eps_per_release_milli
MOT_T0 = WINDOW_T0 - WINDOW_T0 % MOT_PERIOD
FILL_PERIOD = 21600  # the bin's fill release_every_s in firmware/policy.json


def body_for(kind: str, seq: int, **over: Any) -> dict[str, Any]:
    """A valid report body of ``kind`` whose values depend on ``seq`` (so rows differ)."""
    if kind == "bin":
        # fill leaves only in its own 6-hourly release (policy), built with fill_release()
        body: dict[str, Any] = {"t": "win", "k": "bin", "w": WINDOW_T0 + 900 * seq, "l": 900,
                                "m": {"bat": (seq * 10) % 100, "temp": 12}, "e": {}, "fw": "0.1"}
    else:
        # mot leaves only in its own 6-hourly release (policy), built with mot_release()
        body = {"t": "win", "k": "streetlight", "w": WINDOW_T0 + 900 * seq, "l": 900,
                "m": {"lux": 10 * (seq % 7), "lvl": 60, "lamp": 0}, "fw": "0.1.0"}
    body.update(over)
    return body


def report_frame(device: str, seq: int, key: bytes, kind: str = "bin", **over: Any) -> bytes:
    """An authenticated REPORT frame."""
    return build_frame(FRAME_REPORT, device, seq, body_for(kind, seq, **over), key)


def mot_release(seq: int, count: int | None, **over: Any) -> dict[str, Any]:
    """The body of a streetlight's mot release as the firmware sends it (policy: win over 6 h, ε 500
    milli, k 5): period ``seq`` after :data:`MOT_T0`; ``count`` None is a release suppressed below k."""
    body: dict[str, Any] = {"t": "win", "k": "streetlight", "w": MOT_T0 + MOT_PERIOD * seq, "l": MOT_PERIOD,
                            "m": {} if count is None else {"mot": count}, "e": {"mot": MOT_EPS}, "fw": "0.1.0"}
    body.update(over)
    return body


def fill_release(seq: int, fill: int, **over: Any) -> dict[str, Any]:
    """The body of a bin's fill release as the firmware sends it (policy: the level at the end of each
    6 h, alone in a win report over that period): period ``seq`` after :data:`MOT_T0`."""
    body: dict[str, Any] = {"t": "win", "k": "bin", "w": MOT_T0 + FILL_PERIOD * seq, "l": FILL_PERIOD,
                            "m": {"fill": fill}, "fw": "0.1.0"}
    body.update(over)
    return body


def write_clock(path: Path, virtual_at: float) -> None:
    """Write a ``[sim_clock]`` follow file as the demo does: a temporary file, then os.replace."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"virtual_at": virtual_at, "wall_at": time.time(), "speed": 1.0}))
    os.replace(tmp, path)


class SteppedTime:
    """The ``time`` module as gateway.service sees it, with a wall clock the test steps forward.

    Set it with ``monkeypatch.setattr(gateway.service, "time", stepped)``; ``stepped.step`` seconds are added
    to ``time()``, every other attribute (``monotonic``, ``sleep``...) is the real ``time`` module's.
    """

    def __init__(self) -> None:
        self.step = 0.0

    def time(self) -> float:
        return time.time() + self.step

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


async def until(check: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Wait (polling every 0.1 s) until ``check()`` is true; fail with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.1)


async def first_problem(ble: Any) -> str:
    """Run a ``BleTransport`` until it reports a problem (a failed scan) and return it; within 5 s."""
    task = asyncio.create_task(ble.run(lambda _item, _link: None))
    try:
        for _ in range(500):
            if ble.problem is not None:
                return str(ble.problem)
            assert not task.done(), task
            await asyncio.sleep(0.01)
        raise AssertionError("no problem reported")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class AckLog:
    """ACKs an ingest service sends on one link, as (device, seq)."""

    def __init__(self, link_name: str = "serial:test") -> None:
        self.sent: list[tuple[str, int]] = []
        self.link = Link(name=link_name, kind="serial", send=self.send)

    async def send(self, frame: bytes) -> None:
        parsed = parse_frame(frame)
        self.sent.append((parsed.device_id, parsed.seq))


async def settle(ingest: IngestService, timeout: float = 3.0) -> None:
    """Wait until ``ingest`` has no task in flight and nothing queued; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        await asyncio.sleep(0.01)
        if not ingest._tasks and ingest._queue.empty():  # noqa: SLF001 - nothing in flight
            return
    raise AssertionError("ingest did not settle")


def store_dir_not_writable(monkeypatch: "pytest.MonkeyPatch", directory: Path) -> None:
    """``os.access`` as the store readers see it (gateway.storage.sqlite_uri) says ``directory`` cannot be
    written, as on a read-only mount (tests run as root, so chmod does not do)."""
    from gateway.storage import sqlite_uri

    real_access = os.access
    denied = directory.resolve()

    def access(path: object, mode: int, **kw: object) -> bool:
        if mode == os.W_OK and Path(str(path)).resolve() == denied:
            return False
        return real_access(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_uri.os, "access", access)


def stored_bin_report(device: str, seq: int) -> ReportRecord:
    """A stored window report of the bin ``device`` (for a store's ``insert_batch``)."""
    return ReportRecord(device=device, seq=seq, kind="bin", zone="north", type="win", w=1_700_000_000 + 900 * seq,
                        l=900, m={"fill": 40}, e={}, a=[], fw="0.1", received_at=1_700_000_900.0 + 900 * seq,
                        link="serial:/dev/x", digest="%064x" % seq)


def retired_column(registry_dir: Path, device: str) -> int:
    """The raw ``retired`` column of ``device`` (0, 1 retired, 2 retired for a removal), read beside the
    registry through a connection of its own."""
    conn = sqlite3.connect(registry_dir / "devices.sqlite")
    try:
        return int(conn.execute("SELECT retired FROM devices WHERE id=?", (device,)).fetchone()[0])
    finally:
        conn.close()


class CountingIngestRig:
    """A real IngestService on a real store file (``db_path``), a link that records each device's highest ACK,
    and the store's commit attempts (``insert_batch`` calls) counted in ``commits``."""

    def __init__(self, registry: "Registry", db_path: Path, **ingest_kwargs: Any) -> None:
        self.path = db_path
        self.store = ReportStore(db_path, gateway_id="gw")
        self.metrics = GatewayMetrics("gw")
        self.ingest = IngestService(store=self.store, verifier=Verifier(registry, load_policy()), metrics=self.metrics,
                                    **ingest_kwargs)
        self.acked: dict[str, int] = {}
        self.link = Link(name="serial:test", kind="serial", send=self._ack)
        self.commits = 0
        real = self.store.insert_batch

        def counted(records: list[ReportRecord], floors: dict[str, int] | None = None) -> Any:
            self.commits += 1
            return real(records, floors)

        self.store.insert_batch = counted  # type: ignore[method-assign]

    async def _ack(self, frame: bytes) -> None:
        parsed = parse_frame(frame)
        self.acked[parsed.device_id] = max(self.acked.get(parsed.device_id, 0), parsed.seq)

    def stored(self) -> set[tuple[str, int]]:
        """The (device, seq) of every stored report."""
        rows = self.store._conn.execute("SELECT device, seq FROM reports").fetchall()  # noqa: SLF001
        return {(str(d), int(s)) for d, s in rows}
