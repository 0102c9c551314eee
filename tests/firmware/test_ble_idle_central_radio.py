"""The unchanged firmware on a virtual streetlight, on the virtual radio (docs/ble.md): a central
that connects and does nothing is disconnected ``HANDSHAKE_MS`` (30 s) after connecting and the
board advertises again, so a gateway then collects its reports; a gateway whose ACK verified stays
connected however long nothing happens. The board's clock is paused and moved on by the test
(``VirtualBoard.advance``); the radio runs in real time. The unit tests with the tick wrap are in
tests/firmware/test_ble_idle_central.py.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner

from gateway.protocol import FRAME_ACK, FRAME_REPORT
from gateway.protocol.ble_fragments import FragmentReassembler, fragment_frame
from gateway.protocol.frame import build_frame, parse_frame, verify_tag
from hil.sim.board import VirtualBoard
from hil.sim.radio.bleak_backend import make_backends
from hil.sim.radio.relay import RadioHandle, start_relay

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("sim_available")]
SERVICE = "6c3e0001-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
TX = "6c3e0002-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
RX = "6c3e0003-4a5e-4c1b-9b9e-0c1c1ce0ed9e"
BOARD_ID = "sl-idle-1"
HANDSHAKE_S = 30.0  # civic.uplink.ble.HANDSHAKE_MS


@pytest.fixture
def radio() -> Iterator[RadioHandle]:
    handle = start_relay()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
async def streetlight(radio: RadioHandle, tmp_path: Path) -> AsyncIterator[VirtualBoard]:
    board = VirtualBoard("streetlight-esp32", device_id=BOARD_ID, radio_url=radio.url, speed=None,
                         flash_dir=os.path.join(str(tmp_path), "flash"))
    await board.start()
    try:
        # past its first window: a report waits in the outbox (its UART, read by nobody, gave up)
        await board.advance(16 * 60, chunk_s=5)
        yield board
    finally:
        await board.stop()


def _pending(board: VirtualBoard) -> list[str]:
    return sorted(p.name for p in (board.flash_dir / "outbox").iterdir() if p.name.endswith((".r", ".a")))


async def _advance_until(board: VirtualBoard, event: asyncio.Event, seconds: float, step_s: float = 0.5) -> float:
    """Move the board's clock on in steps until ``event`` is set or ``seconds`` passed; return the
    virtual seconds it took."""
    done = 0.0
    while done < seconds and not event.is_set():
        await board.advance(step_s, chunk_s=step_s)
        done += step_s
        await asyncio.sleep(0.02)  # the radio's real time: let a disconnect reach the central
    return done


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait in real time (the board's clock held) until ``event`` is set or ``seconds`` passed."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def test_a_central_that_does_nothing_is_cut_and_the_board_advertises_again(
        streetlight: VirtualBoard, radio: RadioHandle) -> None:
    board = streetlight
    assert board.ble_address is not None and _pending(board)
    scanner_cls, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    squatter = BleakClient(board.ble_address, backend=client_cls, timeout=5,
                           disconnected_callback=lambda _c: lost.set())
    await squatter.connect()  # and nothing else: no subscription, no write
    try:
        # The board's clock moves only when the test moves it; the disconnect then takes real time
        # to reach the central, so each bound is checked with the clock held.
        held = await _advance_until(board, lost, HANDSHAKE_S - 1)
        await _wait(lost, 1.0)
        assert not lost.is_set(), f"cut after {held} s, before the timeout"
        await _advance_until(board, lost, 1.5)
        await _wait(lost, 10.0)
        assert lost.is_set(), "the board kept a central that did nothing for 30.5 s"
    finally:
        if squatter.is_connected:
            await squatter.disconnect()

    found = await BleakScanner.discover(timeout=2.0, service_uuids=[SERVICE], backend=scanner_cls, return_adv=True)
    assert board.ble_address in found, "the board did not advertise again"
    assert found[board.ble_address][1].local_name == BOARD_ID

    key = bytes.fromhex(json.loads(board.identity_path.read_text())["key"])
    frames: list[bytes] = []
    reassembler = FragmentReassembler()

    def on_notify(_c: object, data: bytearray) -> None:
        frames.extend(item for item in reassembler.feed(bytes(data)) if isinstance(item, bytes))

    got = asyncio.Event()
    async with BleakClient(board.ble_address, backend=client_cls, timeout=5) as gateway:
        await gateway.start_notify(TX, on_notify)
        for _ in range(40):
            if frames:
                got.set()
                break
            await _advance_until(board, got, 0.5)
    assert frames, "no report reached the gateway after the squatter was cut"
    parsed = parse_frame(frames[0])
    assert (parsed.type, parsed.device_id) == (FRAME_REPORT, BOARD_ID) and verify_tag(parsed, key)
    console = board.console_text()
    assert "Traceback" not in console, console[-2000:]


async def test_a_gateway_whose_ack_verified_is_not_cut_while_the_link_is_idle(
        streetlight: VirtualBoard, radio: RadioHandle) -> None:
    board = streetlight
    assert board.ble_address is not None
    key = bytes.fromhex(json.loads(board.identity_path.read_text())["key"])
    _, client_cls = make_backends(radio.url)
    lost = asyncio.Event()
    frames: list[bytes] = []
    reassembler = FragmentReassembler()

    def on_notify(_c: object, data: bytearray) -> None:
        frames.extend(item for item in reassembler.feed(bytes(data)) if isinstance(item, bytes))

    async with BleakClient(board.ble_address, backend=client_cls, timeout=5,
                           disconnected_callback=lambda _c: lost.set()) as gateway:
        await gateway.start_notify(TX, on_notify)
        got = asyncio.Event()
        for _ in range(40):
            if frames:
                got.set()
                break
            await _advance_until(board, got, 0.5)
        assert frames, "no report arrived over BLE"
        await asyncio.sleep(0.2)  # every fragment of the burst
        seqs = [parse_frame(f).seq for f in frames]
        before = _pending(board)
        now_s = await board.advance(0.1, chunk_s=0.1) // 1000  # the board's own time: no clock step
        ack = build_frame(FRAME_ACK, BOARD_ID, max(seqs), {"t": now_s}, key)
        for fragment in fragment_frame(ack, gateway.mtu_size, 1):
            await gateway.write_gatt_char(RX, fragment, response=False)
        await _advance_until(board, lost, 1)
        assert len(_pending(board)) < len(before), "the ACK was not applied"
        idle = await _advance_until(board, lost, 4 * HANDSHAKE_S, step_s=2)  # nothing to say for 2 min
        await _wait(lost, 1.0)  # a disconnect still on its way
        assert not lost.is_set(), f"the board cut a gateway whose ACK verified, {idle} s later"
        assert gateway.is_connected
    console = board.console_text()
    assert "Traceback" not in console, console[-2000:]
