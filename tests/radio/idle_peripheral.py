"""An attacker's peripheral on the virtual radio: advertises the civicedge service, sends nothing.

``python tests/radio/idle_peripheral.py RADIO_URL --address ADDR --name NAME`` prints
``{"event": "ready", "address": ...}`` once it advertises, then one JSON line per ``connect`` /
``disconnect`` (with ``t``, a monotonic time). It has no key and never notifies; it advertises
again at once after every disconnect, to win a slot back as soon as it can. Serves until stdin
closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid

from hil.sim.radio.peripheral import (FLAG_NOTIFY, FLAG_READ, FLAG_WRITE, FLAG_WRITE_NO_RESPONSE,
                                      CharacteristicSpec, ServiceSpec, VirtualPeripheral)

SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX_HANDLE, RX_HANDLE = 11, 14


def emit(**event: object) -> None:
    print(json.dumps({**event, "t": time.monotonic()}), flush=True)


class Idle:
    def __init__(self, peripheral: VirtualPeripheral, name: str) -> None:
        self.p = peripheral
        self.name = name

    def on_central_connect(self, conn: int, addr_type: int, addr: bytes) -> None:
        emit(event="connect")

    def on_central_disconnect(self, conn: int, addr_type: int, addr: bytes) -> None:
        emit(event="disconnect")
        asyncio.get_running_loop().create_task(self.advertise())

    def on_gatts_write(self, conn: int, handle: int, value: bytes) -> None:
        emit(event="write")

    def on_mtu_exchanged(self, conn: int, mtu: int) -> None:
        pass

    def on_indicate_done(self, conn: int, handle: int, status: int) -> None:
        pass

    async def advertise(self) -> None:
        adv = bytes([2, 0x01, 0x06]) + bytes([17, 0x07]) + uuid.UUID(SERVICE).bytes[::-1]
        name = self.name.encode()
        await self.p.advertise(100_000, adv, bytes([len(name) + 1, 0x09]) + name)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("radio")
    parser.add_argument("--address", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    peripheral = VirtualPeripheral(args.radio, args.address, name=args.name)
    app = Idle(peripheral, args.name)
    peripheral.listener = app
    await peripheral.open()
    peripheral.register_services([ServiceSpec(SERVICE, (
        CharacteristicSpec(TX, FLAG_READ | FLAG_NOTIFY, TX_HANDLE),
        CharacteristicSpec(RX, FLAG_WRITE | FLAG_WRITE_NO_RESPONSE, RX_HANDLE)))])
    peripheral.set_buffer(RX_HANDLE, 512)
    await app.advertise()
    emit(event="ready", address=args.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    await stop.wait()
    await peripheral.close()


if __name__ == "__main__":
    asyncio.run(main())
