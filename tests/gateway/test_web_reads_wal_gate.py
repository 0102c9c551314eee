"""Overlapping web reads no longer keep the report store's -wal growing (gateway.web.wal_gate).

A real store file, a writer committing one report per commit on its own thread, and two reader loops through
:class:`gateway.web.reads.StoreReads` whose reads each hold a snapshot for a while and always overlap: without
the gate the -wal grows with every commit; with it the log stays near the limit, every read succeeds and sees
every commit, and no read waits longer than the bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from gateway.storage.queries import ReportQueries
from gateway.storage.store import ReportRecord, ReportStore
from gateway.storage.wal_index import read_wal_log
from gateway.web.reads import StoreReads
from gateway.web import wal_gate
from gateway.web.wal_gate import WalGate

MIB = 1024 * 1024
LIMIT = 6 * MIB
WAIT_S = 1.0
COMMITS = 1500
# What the gated run's -wal may reach: the limit and what the commits of one wait (and of the reads already
# running) add. The control run without the gate must pass it, or the gated test proves nothing.
GATED_MAX = LIMIT + 3 * MIB


def _record(seq: int) -> ReportRecord:
    return ReportRecord("dev-%d" % (seq % 50), seq, "streetlight", "north", "win", 900 * seq, 900, {"lux": seq % 1000},
                        {}, [], "1.0", time.time(), "serial:x", hashlib.sha256(b"%d" % seq).hexdigest())


def _writer(db: Path, opened: threading.Event, done: threading.Event, peak: list[int]) -> None:
    store = ReportStore(db, gateway_id="gw")
    opened.set()
    wal = Path(str(db) + "-wal")
    try:
        for seq in range(1, COMMITS + 1):
            store.insert_batch([_record(seq)])
            peak[0] = max(peak[0], wal.stat().st_size)
            time.sleep(0.002)
    finally:
        done.set()
        store.close()


def _slow_count(local: threading.local, db: Path) -> int:
    """A read holding one snapshot for 50 ms (an export's), on this thread's own read-only connection."""
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True, isolation_level=None,
                                            check_same_thread=False)
    conn.execute("BEGIN")
    try:
        n = int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])
        time.sleep(0.05)
        return n
    finally:
        conn.execute("COMMIT")


async def _run(db: Path, gate: WalGate | None) -> tuple[int, dict[float, list[int]], list[float], int]:
    opened, done, peak = threading.Event(), threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(db, opened, done, peak))
    writer.start()
    assert await asyncio.to_thread(opened.wait, 10)
    reads = StoreReads(bulk_threads=2, timeout_s=30, wal_gate=gate)
    local = threading.local()
    counts: dict[float, list[int]] = {0: [], 0.025: []}
    delays: list[float] = []

    async def loop(offset: float) -> None:
        await asyncio.sleep(offset)
        while not done.is_set():
            t0 = time.monotonic()
            began: list[float] = []

            def read() -> int:
                began.append(time.monotonic())
                return _slow_count(local, db)

            counts[offset].append(await reads.bulk(read))
            delays.append(began[0] - t0)  # the gate's wait and the queue before the worker ran it

    try:
        await asyncio.gather(loop(0), loop(0.025))
    finally:
        await asyncio.to_thread(writer.join, 30)
        reads.close()
    return peak[0], counts, delays, sum(map(len, counts.values()))


def test_without_gate_overlapping_reads_grow_the_wal(tmp_path: Path) -> None:
    """The auditor's finding, as the control: two always-overlapping readers, no gate: the -wal passes the bound
    the gate test below keeps it under. (Not twice the limit: on a loaded machine the readers' threads run
    late, leave gaps in which a checkpoint resets the log, and the peak was 11.6 MiB of 12.)"""
    peak, counts, _delays, _n = asyncio.run(_run(tmp_path / "reports.sqlite", None))
    assert _n > 20 and all(b >= a for c in counts.values() for a, b in zip(c, c[1:]))
    assert peak > GATED_MAX, peak / MIB


def test_gate_bounds_the_wal_and_every_read_succeeds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "reports.sqlite"
    gate = WalGate(db, limit_bytes=LIMIT, wait_s=WAIT_S, look_every_s=0.05)
    caplog.set_level(logging.WARNING, logger="gateway.web.wal_gate")
    peak, counts, delays, n = asyncio.run(_run(db, gate))
    assert peak < GATED_MAX, "peak -wal %.1f MiB" % (peak / MIB)
    assert gate.waits > 0  # the gate did hold reads back (else this proves nothing)
    assert n > 20 and all(b >= a for c in counts.values() for a, b in zip(c, c[1:]))  # every read answered
    assert max(delays) <= WAIT_S + 0.5, max(delays)  # the bound on waiting holds
    # Nothing lost: every commit is in the file.
    queries = ReportQueries(db)
    try:
        assert queries.last_report_id() == COMMITS
    finally:
        queries.close()


def _held(db: Path) -> tuple[ReportStore, sqlite3.Connection, int]:
    """A store whose -wal is over 2 MiB and cannot be checkpointed whole: a reader outside any gate (the
    returned connection) holds a snapshot. Returns the store, that reader and the last report's seq."""
    store = ReportStore(db, gateway_id="gw")
    blocker = sqlite3.connect("file:%s?mode=ro" % db, uri=True, isolation_level=None, check_same_thread=False)
    store.insert_batch([_record(1)])
    blocker.execute("BEGIN")
    blocker.execute("SELECT count(*) FROM reports").fetchone()
    seq = 1
    while True:  # past the store's checkpoint threshold and the limit, the log held by the blocker
        seq += 1
        store.insert_batch([_record(seq)])
        log = read_wal_log(Path(str(db) + "-shm"))
        assert log is not None
        if log.log_bytes > 2 * MIB and log.state.frames > 1000:
            break
    assert log.state.backfilled < log.state.frames
    return store, blocker, seq


def test_gate_gives_up_after_the_bound_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reader outside the gate keeps a snapshot open: the checkpoint can never be whole; reads wait the bound
    once, then run (one WARNING), and do not wait again for the quiet period and until another commit."""
    db = tmp_path / "reports.sqlite"
    store, blocker, seq = _held(db)
    try:
        gate = WalGate(db, limit_bytes=2 * MIB, wait_s=0.3, look_every_s=0, quiet_s=0.6)
        caplog.set_level(logging.WARNING, logger="gateway.web.wal_gate")
        t0 = time.monotonic()
        waited = asyncio.run(gate.admit())
        assert 0.3 <= waited <= time.monotonic() - t0 < 1.0
        assert gate.gave_up == 1
        assert [r for r in caplog.records if "not checkpointed whole" not in r.getMessage()] == []
        assert len(caplog.records) == 1
        assert asyncio.run(gate.admit()) == 0.0  # no commit since: nothing to wait for
        store.insert_batch([_record(seq + 1)])
        assert asyncio.run(gate.admit()) == 0.0  # a commit, but within the quiet period: no wait
        assert gate.held() is not None  # /healthz still says the log is unchecked
        time.sleep(0.7)
        store.insert_batch([_record(seq + 2)])
        assert asyncio.run(gate.admit()) >= 0.3  # quiet period over and a commit: waits again, bounded
        assert gate.gave_up == 2
        assert len(caplog.records) == 1  # the WARNING is rate-limited
        blocker.execute("COMMIT")
        store.insert_batch([_record(seq + 3)])  # its checkpoint is whole now
        assert asyncio.run(gate.admit()) == 0.0
        assert gate.held() is None
    finally:
        blocker.close()
        store.close()


def test_quick_reads_never_wait_at_the_gate(tmp_path: Path) -> None:
    """StoreReads' quick reads (/healthz probes, small lookups) pass the gate by even while it holds bulk reads
    back: they hold a snapshot for microseconds, and the probe has its own short timeout."""
    db = tmp_path / "reports.sqlite"
    store, blocker, _seq = _held(db)
    gate = WalGate(db, limit_bytes=2 * MIB, wait_s=0.5, look_every_s=0)
    reads = StoreReads(wal_gate=gate)

    async def timed(run: Callable[[Callable[[], int]], Awaitable[int]]) -> float:
        t0 = time.monotonic()
        assert await run(lambda: 7) == 7
        return time.monotonic() - t0

    try:
        assert asyncio.run(timed(reads.quick)) < 0.25
        assert gate.waits == 0
        assert asyncio.run(timed(reads.bulk)) >= 0.5  # the control: the gate does hold a bulk read
        assert gate.waits == 1 and gate.gave_up == 1
        assert asyncio.run(timed(reads.quick)) < 0.25  # nor after a give-up
        assert gate.waits == 1
    finally:
        reads.close()
        blocker.close()
        store.close()


def test_commits_slower_than_the_wait_stall_reads_once_per_quiet_period(tmp_path: Path) -> None:
    """The reviewer's case: a commit every 4 s (longer than WAL_WAIT_S) with a snapshot always held, so every
    wait runs out. Reads then wait once per GIVE_UP_QUIET_S, not once per commit. The gate's clock runs 20 times
    faster than real time: 90 of its seconds (22 commits) take 4.5 s."""
    db = tmp_path / "reports.sqlite"
    store, blocker, seq = _held(db)
    origin, speed = time.monotonic(), 20.0

    def clock() -> float:
        return (time.monotonic() - origin) * speed

    gate = WalGate(db, limit_bytes=2 * MIB, clock=clock)
    assert (gate.wait_s, gate.quiet_s) == (wal_gate.WAL_WAIT_S, wal_gate.GIVE_UP_QUIET_S) == (3.0, 60.0)
    waited: list[float] = []
    unchecked: list[bool] = []

    async def commits() -> None:
        nonlocal seq
        while clock() < 90:
            seq += 1
            store.insert_batch([_record(seq)])
            await asyncio.sleep(4 / speed)

    async def reads() -> None:
        while clock() < 90:
            waited.append(await gate.admit())
            unchecked.append(gate.held() is not None)
            await asyncio.sleep(0.5 / speed)

    async def both() -> None:
        await asyncio.gather(commits(), reads())

    try:
        asyncio.run(both())
    finally:
        blocker.close()
        store.close()
    stalled = [w for w in waited if w > 0]
    # At gate time ~0 and ~63 (the quiet period after the first give-up); the next would be at >= 126.
    assert gate.gave_up == gate.waits == len(stalled) == 2, (gate.waits, stalled)
    assert all(wal_gate.WAL_WAIT_S <= w < wal_gate.WAL_WAIT_S + 1.5 for w in stalled), stalled
    assert len(waited) > 100
    assert all(unchecked)  # /healthz's store_wal_unchecked holds throughout (never checkpointed whole)


def test_no_wait_below_the_limit_or_without_a_store(tmp_path: Path) -> None:
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw")
    try:
        store.insert_batch([_record(1)])
        assert os.path.getsize(str(db) + "-wal") < WalGate(db).limit_bytes
        assert asyncio.run(WalGate(db, look_every_s=0).admit()) == 0.0
        assert StoreReads().wal_gate is None
        assert StoreReads(store_path=db).wal_gate is not None
        # The web's store reads pass the gate of the store they read (the gateway's wiring).
        from gateway.web.source import StoreFleetSource
        queries = ReportQueries(db)
        source = StoreFleetSource(store=queries, registry=None, policy={})
        try:
            gate = source._reads.wal_gate
            assert gate is not None and gate.path == db
        finally:
            source._reads.close()
            queries.close()
    finally:
        store.close()


def test_web_reads_keep_no_snapshot_between_reads(tmp_path: Path) -> None:
    """Each read through StoreReads and ReportQueries (their BEGINs included) ends its snapshot with its call: a
    checkpoint right after copies every frame and starts the log over (busy 0), which a snapshot left open
    (an un-ended BEGIN, a cursor not run to its end) would keep it from."""
    db = tmp_path / "reports.sqlite"
    store = ReportStore(db, gateway_id="gw")
    for seq in range(1, 40):
        store.insert_batch([_record(seq)])
    store.close()
    writer = sqlite3.connect(db, isolation_level=None)
    queries = ReportQueries(db)
    reads = StoreReads(bulk_threads=2, store_path=db)

    async def all_reads() -> None:
        await reads.bulk(lambda: queries.changes_since(0))
        await reads.bulk(lambda: queries.range_stamp(start=0, end=900 * 100))
        await reads.bulk(lambda: queries.devices_reported(["dev-1", "dev-2", "nobody"], max_id=10))
        await reads.quick(queries.device_ids)
        await reads.quick(queries.last_report_id)
        await reads.bulk(queries.data_version)

    try:
        writer.execute("INSERT INTO meta(key, value) VALUES ('test:a', '1')")
        asyncio.run(all_reads())
        writer.execute("INSERT INTO meta(key, value) VALUES ('test:b', '1')")
        busy, _frames, _moved = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        assert os.path.getsize(str(db) + "-wal") == 0
        # The control: a snapshot held (a cursor not run to its end) makes the same checkpoint busy.
        conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
        cursor = conn.execute("SELECT id FROM reports")
        assert cursor.fetchone() is not None
        writer.execute("INSERT INTO meta(key, value) VALUES ('test:c', '1')")
        assert writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 1
        conn.close()
    finally:
        reads.close()
        queries.close()
        writer.close()


def test_wal_bytes_gauge_reads_the_real_files_wal(tmp_path: Path) -> None:
    """civicedge_store_wal_bytes: the -wal beside the real file (through a symlinked path); 0 without one."""
    from gateway.metrics import GatewayMetrics

    real_dir = tmp_path / "disk"
    real_dir.mkdir()
    (real_dir / "reports.sqlite").write_bytes(b"x" * 4096)
    link = tmp_path / "reports.sqlite"
    link.symlink_to(real_dir / "reports.sqlite")
    metrics = GatewayMetrics("gw")
    metrics.watch_store(link)
    assert metrics.value("civicedge_store_wal_bytes") == 0
    (real_dir / "reports.sqlite-wal").write_bytes(b"w" * 1000)
    assert metrics.value("civicedge_store_wal_bytes") == 1000
    assert metrics.value("civicedge_store_size_bytes") == 5096
