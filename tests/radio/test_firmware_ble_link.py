"""The real firmware BLE link (civic.uplink.ble) over the virtual radio to a bleak central that
reassembles with the gateway's protocol code: frames up at MTU 23 and 247, an ACK down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner

from gateway.protocol import FRAME_ACK, FRAME_REPORT
from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame
from gateway.protocol.frame import build_frame, decode_body, parse_frame, verify_tag
from gateway.resources import firmware_dir
from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.board_bridge import BleBridge, attach_ble_ready
from hil.sim.radio.relay import RadioHandle
from tests.radio.conftest import RX, SERVICE, TX
from tests.radio.mpboard import ChannelBoard

pytestmark = pytest.mark.timeout(90)
APP = Path(__file__).with_name("firmware_ble_app.py")
KEY = bytes(range(32))


@pytest.fixture
async def firmware_board(radio: RadioHandle) -> AsyncIterator[tuple[ChannelBoard, BleBridge]]:
    board = ChannelBoard("sl-fw-1", libs=(firmware_dir() / "lib",))
    bridge: BleBridge | None = None
    try:
        await board.start()
        bridge = await attach_ble_ready(board, radio.url)
        await board.exec(APP.read_text())
        await board.expect("link up")
        yield board, bridge
    finally:
        if bridge is not None:
            await bridge.close()
        await board.stop()


@pytest.mark.parametrize("mtu", [23, 247])
async def test_reports_up_and_ack_down(firmware_board: tuple[ChannelBoard, BleBridge],
                                       radio: RadioHandle, mtu: int) -> None:
    board, bridge = firmware_board
    scanner_cls, client_cls = make_backends(radio.url)
    found = await BleakScanner.discover(timeout=1.0, service_uuids=[SERVICE], backend=scanner_cls,
                                        return_adv=True)
    device, adv = found[bridge.address]
    assert adv.local_name == "sl-fw-1"  # device id as complete local name (scan response)
    frames: asyncio.Queue[bytes] = asyncio.Queue()
    reassembler = FragmentReassembler()

    def on_notify(_c: object, data: bytearray) -> None:
        assert len(data) <= mtu - 3
        for item in reassembler.feed(bytes(data)):
            assert isinstance(item, bytes), item
            frames.put_nowait(item)

    async with BleakClient(device, backend=client_cls, mtu=mtu) as client:
        await client.start_notify(TX, on_notify)
        # The firmware learns the MTU from _IRQ_MTU_EXCHANGED before it sends.
        await board.exec(f"print('mtu', link.mtu == {mtu} and link.conn is not None)")
        assert await board.expect("mtu") == "mtu True"
        await board.exec("print('pumped', link.pump(10))")
        assert await board.expect("pumped") == "pumped 5"
        got = [await asyncio.wait_for(frames.get(), 5) for _ in range(5)]
        for seq, raw in enumerate(got, start=1):
            parsed = parse_frame(raw)
            assert (parsed.type, parsed.device_id, parsed.seq) == (FRAME_REPORT, "sl-fw-1", seq)
            assert verify_tag(parsed, KEY)
            assert decode_body(parsed.body)["m"] == {"lux": 10 * seq, "energy_wh": 1000 + seq}
        ack = build_frame(FRAME_ACK, "sl-fw-1", 5, {"t": 1_700_000_000}, KEY)
        for frag in fragment_frame(ack, mtu, 7):
            await client.write_gatt_char(RX, frag, response=False)
        await asyncio.sleep(0.2)
        await board.exec("link.poll()")
        assert await board.expect("handled") == "handled 2 sl-fw-1 5"
    assert bridge.stats.bad_messages == 0
