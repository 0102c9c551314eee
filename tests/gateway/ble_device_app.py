"""A civicedge BLE device on the virtual radio, run as its own process by the gateway tests.

Speaks docs/protocol.md §5 with frames built by gateway.protocol (this is the device side of a
test, in CPython; the firmware's own BleLink is tested with the simulator). Behaviour:
* advertises the civicedge service with its id as the name (scan response);
* once a central connects, notifies every pending REPORT frame, fragmented to the link's ATT MTU;
* reassembles writes to RX, verifies ACKs with its key, drops pending frames <= the ACK and prints
  ``{"event": "ack", "seq": N}``; re-sends what is still pending every 2 s;
* stdin commands: ``send A B`` queues reports A..B, ``drop`` drops the link (BLE fault),
  ``garble`` notifies an orphan fragment (index 1 without index 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import report_frame  # noqa: E402

from gateway.protocol import FRAME_ACK, FragmentReassembler, fragment_frame, parse_frame, verify_tag  # noqa: E402
from hil.sim.radio.address import board_address  # noqa: E402
from hil.sim.radio.peripheral import (  # noqa: E402
    FLAG_NOTIFY,
    FLAG_READ,
    FLAG_WRITE,
    FLAG_WRITE_NO_RESPONSE,
    CharacteristicSpec,
    ServiceSpec,
    VirtualPeripheral,
)

SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX_HANDLE, RX_HANDLE = 11, 14


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


class Device:
    def __init__(self, p: VirtualPeripheral, dev_id: str, key: bytes, kind: str) -> None:
        self.p, self.id, self.key, self.kind = p, dev_id, key, kind
        self.pending: dict[int, bytes] = {}
        self.conn: int | None = None
        self.msg = 0
        self.reasm = FragmentReassembler()
        self.wake = asyncio.Event()
        self.replay = False  # re-send the same frames for ever, ACKs or not (a replayer of captured frames)

    # PeripheralListener
    def on_central_connect(self, conn: int, addr_type: int, addr: bytes) -> None:
        self.conn = conn
        emit(event="connect")
        self.wake.set()

    def on_central_disconnect(self, conn: int, addr_type: int, addr: bytes) -> None:
        self.conn = None
        self.reasm.reset()
        emit(event="disconnect")
        asyncio.get_running_loop().create_task(self.advertise())

    def on_gatts_write(self, conn: int, handle: int, value: bytes) -> None:
        for item in self.reasm.feed(bytes(value)):
            if not isinstance(item, bytes):
                emit(event="bad_fragment")
                continue
            frame = parse_frame(item)
            if frame.type == FRAME_ACK and verify_tag(frame, self.key):
                for s in [s for s in self.pending if s <= frame.seq and not self.replay]:
                    del self.pending[s]
                emit(event="ack", seq=frame.seq)

    def on_mtu_exchanged(self, conn: int, mtu: int) -> None:
        emit(event="mtu", mtu=mtu)

    def on_indicate_done(self, conn: int, handle: int, status: int) -> None:
        pass

    async def advertise(self) -> None:
        adv = bytes([2, 0x01, 0x06]) + bytes([17, 0x07]) + uuid.UUID(SERVICE).bytes[::-1]
        await self.p.advertise(100_000, adv, bytes([len(self.id) + 1, 0x09]) + self.id.encode())

    def queue(self, first: int, last: int) -> None:
        for s in range(first, last + 1):
            self.pending[s] = report_frame(self.id, s, self.key, kind=self.kind)
        self.wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            await asyncio.sleep(0.3)  # let the MTU exchange and subscription settle
            conn = self.conn
            if conn is None:
                continue
            mtu = self.p.connections.get(conn, (0, b"", 23))[2]
            for s in sorted(self.pending):
                self.msg = (self.msg + 1) & 0xFF
                try:
                    for frag in fragment_frame(self.pending[s], mtu, self.msg):
                        await self.p.notify(conn, TX_HANDLE, frag)
                except Exception as exc:  # noqa: BLE001 - link gone mid-frame: retry on reconnect
                    emit(event="error", error=str(exc))
                    break


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("radio")
    parser.add_argument("--id", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--kind", default="bin")
    parser.add_argument("--mtu", type=int, default=247)
    parser.add_argument("--send", type=int, nargs=2, default=(1, 5))
    parser.add_argument("--replay", action="store_true", help="keep re-sending the frames after their ACK")
    args = parser.parse_args()
    p = VirtualPeripheral(args.radio, board_address(args.id), name=args.id)
    p.set_preferred_mtu(args.mtu)
    dev = Device(p, args.id, bytes.fromhex(args.key), args.kind)
    dev.replay = args.replay
    p.listener = dev
    await p.open()
    p.register_services([ServiceSpec(SERVICE, (
        CharacteristicSpec(TX, FLAG_READ | FLAG_NOTIFY, TX_HANDLE),
        CharacteristicSpec(RX, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE, RX_HANDLE)))])
    p.set_buffer(RX_HANDLE, 512)
    dev.queue(*args.send)
    await dev.advertise()
    emit(event="ready", address=board_address(args.id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_stdin() -> None:
        line = sys.stdin.readline()
        if not line:
            stop.set()
        elif line.startswith("send"):
            _, a, b = line.split()
            dev.queue(int(a), int(b))
        elif line.strip() == "drop":
            loop.create_task(p.drop_all())
        elif line.strip() == "garble" and dev.conn is not None:
            # a fragment whose start was never sent: the gateway must drop and count it
            loop.create_task(p.notify(dev.conn, TX_HANDLE, bytes([0xEE, 0x01]) + b"orphan"))

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    worker = asyncio.create_task(dev.run())
    await stop.wait()
    worker.cancel()
    await p.close()


if __name__ == "__main__":
    asyncio.run(main())
