"""A civicedge-like GATT peripheral on the virtual radio, run as its own process by the tests.

``python tests/radio/peripheral_app.py RADIO_URL --id ID [--mtu N]`` prints one JSON line
``{"address": ..., "name": ...}`` once it advertises, then serves until stdin closes or SIGTERM.
Behaviour (so tests can observe both directions):
* TX (read + notify) holds ``b"hello " + id``; RX (write / write-without-response) accepts
  writes of up to 512 bytes;
* a write ``b"burst:N:S"`` sends N notifications of S bytes (byte i = notification index);
  any other write is echoed back as one notification;
* a write ``b"drop"`` drops every link (the BLE-disconnect fault);
* after a central disconnects it advertises again, like the firmware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from hil.sim.radio.address import board_address
from hil.sim.radio.peripheral import (FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE,
                                      CharacteristicSpec, ServiceSpec, VirtualPeripheral)

SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX_HANDLE, RX_HANDLE = 11, 14


def adv_payload(name: str) -> tuple[bytes, bytes]:
    """Flags + 128-bit service UUID in the advertisement, complete local name in the scan response."""
    import uuid
    flags = bytes([2, 0x01, 0x06])
    svc = bytes([17, 0x07]) + uuid.UUID(SERVICE).bytes[::-1]
    return flags + svc, bytes([len(name) + 1, 0x09]) + name.encode()


class App:
    def __init__(self, peripheral: VirtualPeripheral, name: str) -> None:
        self.p = peripheral
        self.name = name
        self.queue: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue()

    # PeripheralListener
    def on_central_connect(self, conn: int, addr_type: int, addr: bytes) -> None:
        print(json.dumps({"event": "connect", "conn": conn}), flush=True)

    def on_central_disconnect(self, conn: int, addr_type: int, addr: bytes) -> None:
        print(json.dumps({"event": "disconnect", "conn": conn}), flush=True)
        self.queue.put_nowait(("advertise", conn, b""))

    def on_gatts_write(self, conn: int, handle: int, value: bytes) -> None:
        self.queue.put_nowait(("write", conn, value))

    def on_mtu_exchanged(self, conn: int, mtu: int) -> None:
        print(json.dumps({"event": "mtu", "conn": conn, "mtu": mtu}), flush=True)

    def on_indicate_done(self, conn: int, handle: int, status: int) -> None:
        pass

    async def advertise(self) -> None:
        adv, resp = adv_payload(self.name)
        await self.p.advertise(100_000, adv, resp)

    async def run(self) -> None:
        while True:
            kind, conn, value = await self.queue.get()
            try:
                if kind == "advertise":
                    await self.advertise()
                elif value == b"drop":
                    await self.p.drop_all()
                elif value.startswith(b"burst:"):
                    _, count, size = value.decode().split(":")
                    for i in range(int(count)):
                        await self.p.notify(conn, TX_HANDLE, bytes([i % 256]) * int(size))
                else:
                    await self.p.notify(conn, TX_HANDLE, value)
            except Exception as exc:  # link gone mid-burst: report and keep serving
                print(json.dumps({"event": "error", "error": str(exc)}), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("radio")
    parser.add_argument("--id", default="sl-test-1")
    parser.add_argument("--mtu", type=int, default=256)
    args = parser.parse_args()
    peripheral = VirtualPeripheral(args.radio, board_address(args.id), name=args.id)
    peripheral.set_preferred_mtu(args.mtu)
    app = App(peripheral, args.id)
    peripheral.listener = app
    await peripheral.open()
    peripheral.register_services([ServiceSpec(SERVICE, (
        CharacteristicSpec(TX, FLAG_READ | FLAG_NOTIFY, TX_HANDLE),
        CharacteristicSpec(RX, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE, RX_HANDLE)))])
    peripheral.write_local(TX_HANDLE, b"hello " + args.id.encode())
    peripheral.set_buffer(RX_HANDLE, 512)
    await app.advertise()
    print(json.dumps({"address": board_address(args.id), "name": args.id}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    worker = asyncio.create_task(app.run())
    await stop.wait()
    worker.cancel()
    await peripheral.close()


if __name__ == "__main__":
    asyncio.run(main())
