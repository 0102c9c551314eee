"""Reports per second over the virtual BLE radio, at ATT MTU 23 and 247.

A peripheral process (this script with ``--serve``) and a bleak central in this process share a
virtual radio relay. For each MTU the bench measures, in the same run:

* floor: raw notifications/s — back-to-back notifications of ``MTU - 3`` bytes;
* reports/s: frames of a typical report size (default 120 bytes) fragmented per
  docs/protocol.md §5 (2-byte header per fragment), reassembled by the gateway's reassembler.

The ratio ``reports/s × fragments-per-report ÷ floor`` shows what fragmentation and
reassembly cost on top of the radio itself (1.0 = nothing). Usage::

    .venv/bin/python bench/ble_throughput.py [--short] [--count N] [--frame-bytes B]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bleak import BleakClient, BleakScanner  # noqa: E402

from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame  # noqa: E402
from hil.sim.radio.address import board_address  # noqa: E402
from hil.sim.radio.bleak_backend import make_backends  # noqa: E402
from hil.sim.radio.peripheral import (FLAG_NOTIFY, FLAG_READ, FLAG_WRITE,  # noqa: E402
                                      FLAG_WRITE_NO_RESPONSE, CharacteristicSpec, ServiceSpec,
                                      VirtualPeripheral)
from hil.sim.radio.relay import start_relay  # noqa: E402

SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX_H, RX_H = 14, 17
BENCH_ID = "bench-ble-1"


# -- peripheral process ---------------------------------------------------------------------

class _Server:
    def __init__(self, peripheral: VirtualPeripheral) -> None:
        self.p = peripheral
        self.jobs: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.mtu: dict[int, int] = {}

    def on_central_connect(self, conn: int, addr_type: int, addr: bytes) -> None:
        self.mtu[conn] = 23

    def on_central_disconnect(self, conn: int, addr_type: int, addr: bytes) -> None:
        self.mtu.pop(conn, None)
        self.jobs.put_nowait((-1, b""))

    def on_gatts_write(self, conn: int, handle: int, value: bytes) -> None:
        self.jobs.put_nowait((conn, value))

    def on_mtu_exchanged(self, conn: int, mtu: int) -> None:
        self.mtu[conn] = mtu

    def on_indicate_done(self, conn: int, handle: int, status: int) -> None:
        pass

    async def advertise(self) -> None:
        import uuid
        adv = bytes([2, 1, 6, 17, 7]) + uuid.UUID(SERVICE).bytes[::-1]
        resp = bytes([len(BENCH_ID) + 1, 9]) + BENCH_ID.encode()
        await self.p.advertise(100_000, adv, resp)

    async def run(self) -> None:
        while True:
            conn, value = await self.jobs.get()
            if conn < 0:
                await self.advertise()
                continue
            mode, count, size = value.decode().split(":")
            mtu = self.mtu.get(conn, 23)
            if mode == "raw":
                payload = bytes(mtu - 3)
                for _ in range(int(count)):
                    await self.p.notify(conn, TX_H, payload)
            else:
                frame = bytes(range(256)) * (int(size) // 256 + 1)
                for i in range(int(count)):
                    for frag in fragment_frame(frame[: int(size)], mtu, i & 0xFF):
                        await self.p.notify(conn, TX_H, frag)


async def serve(radio_url: str) -> None:
    peripheral = VirtualPeripheral(radio_url, board_address(BENCH_ID), name=BENCH_ID)
    server = _Server(peripheral)
    peripheral.listener = server
    await peripheral.open()
    peripheral.register_services([ServiceSpec(SERVICE, (
        CharacteristicSpec(TX, FLAG_READ | FLAG_NOTIFY, TX_H),
        CharacteristicSpec(RX, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE, RX_H)))])
    peripheral.set_buffer(RX_H, 64)
    await server.advertise()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.readline() else None)
    worker = asyncio.create_task(server.run())
    await done.wait()
    worker.cancel()
    await peripheral.close()


# -- central (measuring) side -------------------------------------------------------------

async def measure(radio_url: str, mtu: int, count: int, frame_bytes: int, rounds: int) -> dict[str, float]:
    scanner_cls, client_cls = make_backends(radio_url)
    device = await BleakScanner.find_device_by_name(BENCH_ID, timeout=10, backend=scanner_cls)
    if device is None:
        raise SystemExit("bench peripheral not found on the radio")
    async with BleakClient(device, backend=client_cls, mtu=mtu) as client:
        got = asyncio.Event()
        state = {"n": 0, "target": count, "frames": 0}
        reassembler = FragmentReassembler()

        def on_raw(_c: object, data: bytearray) -> None:
            state["n"] += 1
            if state["n"] >= state["target"]:
                got.set()

        def on_frag(_c: object, data: bytearray) -> None:
            for item in reassembler.feed(bytes(data)):
                if isinstance(item, bytes):
                    state["frames"] += 1
            if state["frames"] >= state["target"]:
                got.set()

        raw_rates, frame_rates = [], []
        for _ in range(rounds):  # interleaved rounds, best of each: robust to a busy machine
            state.update(n=0, frames=0)
            got.clear()
            await client.start_notify(TX, on_raw)
            t0 = time.perf_counter()
            await client.write_gatt_char(RX, f"raw:{count}:0".encode(), response=True)
            await asyncio.wait_for(got.wait(), 120)
            raw_rates.append(count / (time.perf_counter() - t0))
            await client.stop_notify(TX)

            got.clear()
            await client.start_notify(TX, on_frag)
            t0 = time.perf_counter()
            await client.write_gatt_char(RX, f"frames:{count}:{frame_bytes}".encode(), response=True)
            await asyncio.wait_for(got.wait(), 120)
            frame_rates.append(count / (time.perf_counter() - t0))
            await client.stop_notify(TX)
        frags = len(fragment_frame(bytes(frame_bytes), mtu, 0))
    floor, reports = max(raw_rates), max(frame_rates)
    return {"mtu": mtu, "floor_notifications_per_s": round(floor, 1),
            "reports_per_s": round(reports, 1), "fragments_per_report": frags,
            "ratio_vs_floor": round(reports * frags / floor, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="small counts (CI)")
    parser.add_argument("--count", type=int, default=None, help="notifications / reports per measurement")
    parser.add_argument("--frame-bytes", type=int, default=120, help="report frame size in bytes")
    parser.add_argument("--serve", metavar="RADIO_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    count = args.count or (150 if args.short else 1500)
    relay = start_relay()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", relay.url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("bench peripheral failed to start")
        rounds = 2 if args.short else 3
        results = [asyncio.run(measure(relay.url, mtu, count, args.frame_bytes, rounds)) for mtu in (23, 247)]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        relay.stop()
    print(f"virtual BLE radio, {count} per measurement (best of rounds), report frame {args.frame_bytes} bytes")
    print(f"{'MTU':>5} {'floor notif/s':>14} {'reports/s':>10} {'frags/report':>13} {'ratio':>6}")
    for r in results:
        print(f"{r['mtu']:>5} {r['floor_notifications_per_s']:>14} {r['reports_per_s']:>10} "
              f"{r['fragments_per_report']:>13} {r['ratio_vs_floor']:>6}")
    print(json.dumps({"bench": "ble_throughput", "count": count, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
