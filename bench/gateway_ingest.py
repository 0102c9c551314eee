"""Gateway ingest throughput: the full pipeline against a floor measured in the same run.

Full pipeline = COBS deframing of the serial byte stream (read in 4 KB chunks, as the serial
transport reads) -> parse frame -> registry lookup -> HMAC verify -> msgpack decode -> policy gate ->
replay window -> batched SQLite commit (WAL, provenance chain) -> ACK frame built, COBS-encoded and
written to the link as the serial link does (without waiting, no Task per ACK). Floor = the same
frames through only ``msgpack.unpackb`` + HMAC-SHA256 verification in a tight loop (the least work any gateway must do per report). Both run on one core in this process.

Also measured in the same run: the **storage floor**, the same reports' rows (reports + provenance
chain, pre-built tuples) through only the store's multi-row ``INSERT`` statements and ``COMMIT`` in
batches of the pipeline's (the default ``[storage] batch_max``), on a store opened exactly as the
gateway opens it (WAL, ``synchronous=FULL``, same schema, indexes and page cache). The pipeline runs
with the defaults of ``[storage]`` (``batch_ms``, ``batch_max``, ``max_in_flight``) and the collector
settings of ``civicedge gateway run`` (gateway/gc_tuning.py).
No pipeline that stores every report durably can beat ``1 / (1/floor + 1/storage)``; the script
prints that ceiling as a ratio too, and how much of the remaining time is the gateway's own Python.

    .venv/bin/python bench/gateway_ingest.py            # full run (100k reports)
    .venv/bin/python bench/gateway_ingest.py --short    # CI: a few seconds

Targets (issue 8): full >= 50 % of the floor and >= 20,000 reports/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import sys
import tempfile
import time
from pathlib import Path

import msgpack

from gateway.ack_time import AckTime
from gateway.config.model import StorageConfig
from gateway.gc_tuning import tune_collector
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService, Link
from gateway.pipeline.verify import Verifier
from gateway.protocol.frame import FRAME_REPORT, build_frame, parse_frame
from gateway.protocol.serial_codec import SerialDeframer, encode_serial
from gateway.registry.devices import Registry
from gateway.resources import load_policy
from gateway.retention_clock import RetentionClock
from gateway.storage.provenance import GENESIS
from gateway.storage.store import INSERT_CHAIN, INSERT_REPORTS, ReportStore, insert_rows, report_row

TAG_LEN = 16
STALL_S = 30.0  # no report stored for this long: something is wrong, stop instead of hanging


def make_frames(registry: Registry, *, devices: int, per_device: int) -> list[bytes]:
    """Realistic streetlight window reports, interleaved across devices as a busy gateway sees them."""
    keys = {}
    for d in range(devices):
        dev_id = f"sl-{d:04d}"
        registry.add(dev_id, kind="streetlight", zone="centre", lat="52.5200", lon="13.4050")
        keys[dev_id] = registry.key(dev_id)
    frames = []
    for seq in range(1, per_device + 1):
        for dev_id, key in keys.items():
            # mot travels in its own 6-hourly release (policy), never in a 15-min window report
            body = {"t": "win", "k": "streetlight", "w": 1795377600 + 900 * seq, "l": 900,
                    "m": {"lux": 120, "lvl": 40, "lamp": 0}, "fw": "0.1.0"}
            frames.append(build_frame(FRAME_REPORT, dev_id, seq, body, key))
    return frames


def floor_rate(frames: list[bytes], keys: dict[str, bytes]) -> float:
    """Reports/s through only msgpack.unpackb + HMAC verification."""
    parsed = [parse_frame(f) for f in frames]
    work = [(keys[p.device_id], f[:-TAG_LEN], f[-TAG_LEN:], p.body) for p, f in zip(parsed, frames)]
    start = time.perf_counter()
    for key, signed, tag, body in work:
        if not hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest()[:TAG_LEN], tag):
            raise AssertionError("bad tag in benchmark frames")
        msgpack.unpackb(body)
    return len(work) / (time.perf_counter() - start)


def storage_rate(frames: list[bytes], registry: Registry, db: Path,
                 batch: int = StorageConfig.batch_max) -> float:
    """Reports/s through only the SQLite statements the store runs per report (rows pre-built)."""
    verifier = Verifier(registry, load_policy())
    records = [verifier.verify(f, link="serial:bench", now=1.0).record for f in frames]
    store = ReportStore(db, gateway_id="bench")
    conn = store._conn  # noqa: SLF001 - the same connection settings the gateway writes with
    rows = [report_row(r, "bench") for r in records]
    chain = [(i + 1, r.device, r.seq, "bench", r.digest, GENESIS, r.digest) for i, r in enumerate(records)]
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        insert_rows(conn, *INSERT_REPORTS, rows[i:i + batch])  # the store's own statements
        insert_rows(conn, *INSERT_CHAIN, chain[i:i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    store.close()
    return len(rows) / elapsed


async def full_rate(frames: list[bytes], registry: Registry, db: Path) -> tuple[float, int]:
    """Reports/s through the whole ingest pipeline, until every report is committed and ACKed."""
    metrics = GatewayMetrics("bench")
    store = ReportStore(db, gateway_id="bench")
    # ACK time sync decided per ACK as the gateway does (gateway/ack_time.py)
    ack_time = AckTime(RetentionClock(3600.0), time.time)
    defaults = StorageConfig(path=db)  # batching and backlog cap as a gateway's config leaves them
    service = IngestService(store=store, verifier=Verifier(registry, load_policy()), metrics=metrics,
                            batch_ms=defaults.batch_ms, batch_max=defaults.batch_max,
                            max_in_flight=defaults.max_in_flight, time_sync=ack_time)
    await service.start()
    tune_collector()  # as `civicedge gateway run` does once the gateway has started
    acks = 0
    expected = len(frames)

    written = bytearray()  # what the serial port would write

    def send_now(frame: bytes) -> None:
        # as the serial link does: COBS-encoded with its delimiter into the port's queue, without waiting
        nonlocal acks
        acks += 1
        written.extend(encode_serial(frame))
        if len(written) > 1 << 20:
            written.clear()  # "written out"

    async def send(frame: bytes) -> None:
        send_now(frame)

    link = Link(name="bench", kind="serial", send=send, send_nowait=send_now)
    stream = b"".join(encode_serial(f) for f in frames)  # what the devices' UARTs deliver, back to back
    deframer = SerialDeframer()
    start = time.perf_counter()
    read = 4096  # os.read size of the serial transport
    for i in range(0, len(stream), read):
        if not service.room.is_set():
            await service.room.wait()  # a serial transport stops reading while the backlog is at its cap
        for item in deframer.feed(stream[i:i + read]):
            service.feed(item, link)
        if i % (8 * read) == 0:
            await asyncio.sleep(0)  # let the pipeline run, as the event loop between two reads would
    stored, last, stalled_at = 0, -1, time.perf_counter()
    while stored < expected:
        stored = int(metrics.value("civicedge_reports_stored_total"))
        if stored != last:
            last, stalled_at = stored, time.perf_counter()
        elif time.perf_counter() - stalled_at > STALL_S:
            raise SystemExit("ingest stalled at %d of %d reports stored (%d shed)"
                             % (stored, expected, metrics.value("civicedge_ingest_shed_total")))
        await asyncio.sleep(0.005)
    while acks < expected and service._tasks:  # noqa: SLF001 - wait for the ACKs in flight
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    await service.stop()
    service.close()
    store.close()
    return expected / elapsed, acks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="small run for CI (seconds)")
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args(argv)
    per_device = 25 if args.short else 500
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "registry")
        frames = make_frames(registry, devices=args.devices, per_device=per_device)
        keys = {d.id: registry.key(d.id) for d in registry.list()}
        floor = max(floor_rate(frames, keys) for _ in range(3))
        storage = storage_rate(frames, registry, Path(tmp) / "storage-floor.sqlite")
        full, acks = asyncio.run(full_rate(frames, registry, Path(tmp) / "reports.sqlite"))
        registry.close()
    ratio = full / floor
    ceiling = 1.0 / (1.0 / floor + 1.0 / storage)  # floor work + storage work, nothing else
    own_us = (1.0 / full - 1.0 / ceiling) * 1e6
    print(f"reports: {len(frames)} from {args.devices} devices")
    print(f"floor (msgpack.unpackb + HMAC only): {floor:,.0f} reports/s")
    print(f"storage floor (SQLite INSERTs + COMMIT only, same store settings): {storage:,.0f} reports/s")
    print(f"ceiling (floor + storage floor, nothing else): {ceiling:,.0f} reports/s = {ceiling / floor:.2f} of the floor")
    print(f"full pipeline (deframe, verify, policy, SQLite WAL commit, ACK): {full:,.0f} reports/s, {acks} ACKs sent")
    print(f"gateway's own work beyond the ceiling: {own_us:.1f} us/report; full/ceiling: {full / ceiling:.2f}")
    print(f"ratio full/floor: {ratio:.2f}  (target >= 0.50)   absolute target >= 20,000/s: "
          f"{'met' if full >= 20000 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
