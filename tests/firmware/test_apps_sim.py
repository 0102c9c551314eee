"""The unchanged firmware (boot.py, main.py, civic/) on virtual boards of the simulator:
real MicroPython, the data UART as a pty opened with pyserial, virtual time."""

from __future__ import annotations

import asyncio
import binascii
import json
import time

import pytest
import serial

from gateway.protocol.frame import FRAME_ACK, FRAME_REPORT, build_frame, decode_body, parse_frame, verify_tag
from gateway.protocol.serial_codec import SerialDeframer, encode_serial
from hil.scenarios.outbox import frame_files
from hil.sim.board import VirtualBoard
from board_boot import advance_booted

T0 = 1767225600  # 2026-01-01 00:00 UTC

pytestmark = pytest.mark.timeout(150)


async def advance_until(board: VirtualBoard, text: str, max_s: int = 60) -> None:
    """Advance the paused virtual clock a second at a time until ``text`` is on the console."""
    for _ in range(max_s):
        if text in board.console_text():
            return
        await board.advance(1, chunk_s=1)
    raise AssertionError(f"{text!r} not printed within {max_s} virtual s:\n{board.console_text()}")


def read_frames(port: serial.Serial) -> list[bytes]:
    data = port.read(65536)
    return [f for f in SerialDeframer().feed(data) if isinstance(f, bytes)]


async def wait_frames(port: serial.Serial, timeout_s: float = 15.0) -> list[bytes]:
    """The frames on the data pty: waits for the first (the simulator host writes them after the
    advance returned, later on a loaded machine: CI once read nothing within 0.6 s), then reads on
    until 0.3 s pass without a byte."""
    deframer = SerialDeframer()
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while True:
        data = await asyncio.to_thread(port.read, 65536)
        frames += [f for f in deframer.feed(data) if isinstance(f, bytes)]
        if (frames and not data) or time.monotonic() > deadline:
            return frames


async def test_streetlight_reports_over_uart_pty_and_takes_ack_with_time_sync(tmp_path) -> None:
    start = T0 + 3600 + 14 * 60          # 01:14 UTC: the 01:00 window closes a minute later
    board = VirtualBoard("streetlight-esp32", device_id="sl-sim-1", flash_dir=tmp_path / "flash", speed=None,
                         seed=1, start_ms=start * 1000, paced=False)
    await board.start()
    try:
        await advance_until(board, "running")
        key = binascii.unhexlify(json.loads(board.identity_path.read_text())["key"])
        port = serial.Serial(board.data_path, timeout=0.3)
        await board.stimulus("light", 5)             # night
        await board.advance(90, chunk_s=1)
        frames = await wait_frames(port)
        assert frames, board.console_text()
        first = parse_frame(frames[0])
        assert first.type == FRAME_REPORT and first.device_id == "sl-sim-1" and verify_tag(first, key)
        body = decode_body(first.body)
        assert (body["t"], body["k"], body["w"], body["l"]) == ("win", "streetlight", T0 + 3600, 900)
        assert body["m"]["lvl"] == 40 and body["m"]["lamp"] == 0     # 02:00 local: 40 %, lamp healthy
        state = await board.state()
        assert state["pwm"]["25"]["duty"] == 40 * 65535 // 100
        # the gateway acknowledges, with a clock one hour ahead of the device's
        port.write(encode_serial(build_frame(FRAME_ACK, "sl-sim-1", first.seq, {"t": start + 90 + 3600}, key)))
        port.flush()
        await asyncio.sleep(0.3)
        await board.advance(2, chunk_s=1)
        read_frames(port)                             # drain what was sent before the ACK landed
        await board.advance(20, chunk_s=1)            # longer than the 5 s resend time
        later = [parse_frame(f) for f in await wait_frames(port)]
        # acknowledged: seq 1 is never resent. The clock step closes the running energy hour and
        # window: new reports, still waiting for their ACK.
        assert later and all(f.seq > first.seq for f in later)
        assert {decode_body(f.body)["t"] for f in later} <= {"hour", "win"}
        offset = (await board.state())["clock_offset_ms"]
        assert abs(offset - 3600 * 1000) < 5000       # RTC set from the ACK
        pending = frame_files(tmp_path / "flash" / "outbox")
        assert pending and "00000001.r" not in pending
    finally:
        await board.stop()


async def test_bin_deep_sleeps_between_readings_and_keeps_state_in_flash(tmp_path) -> None:
    board = VirtualBoard("bin-esp32c3", device_id="bin-sim-1", flash_dir=tmp_path / "flash", speed=None,
                         seed=1, start_ms=T0 * 1000 + 30000)
    await board.start()
    try:
        await board.stimulus("temperature", 20)
        await board.stimulus("tilt", 0)
        await board.stimulus("lid", 0)
        await board.stimulus("distance", 575)
        await board.stimulus("battery", 60)
        await advance_until(board, "deep sleep")
        states = []
        for minute in range(20):                      # two wakes take 10-14 virtual minutes; a wake's boot
            # runs in wall time, on a loaded host for many advances: waited out, not advanced through
            states.append(await advance_booted(board, 60))
            if minute >= 13 and states[-1]["stats"]["boots"] >= 3:
                break
        assert max(s["stats"]["boots"] for s in states) >= 3
        assert any(s["cause"] == 4 for s in states)   # DEEPSLEEP_RESET
        raw = (tmp_path / "flash" / "state" / "bin.json").read_bytes()[4:]   # atomic file: crc32 + JSON
        state = json.loads(raw)
        assert state["next"] > T0 + 300 and state["tn"] >= 1 and state["fill"] == 50
        sleeps = [e["ms"] for e in board.events if e.get("ev") == "sleep"]
        assert len(sleeps) >= 2 and all(0 < ms <= 300000 for ms in sleeps)
        assert "alarm" not in board.console_text()    # 20 C, upright: no fire, no tip
    finally:
        await board.stop()


async def test_streetlight_lamp_failure_and_motion_boost_on_a_virtual_board(tmp_path) -> None:
    start = T0 + 3600                                 # 02:00 local: schedule 40 %
    board = VirtualBoard("streetlight-esp32", device_id="sl-sim-2", flash_dir=tmp_path / "flash", speed=None,
                         seed=2, start_ms=start * 1000, paced=False)
    await board.start()
    try:
        await advance_until(board, "running")
        port = serial.Serial(board.data_path, timeout=0.3)
        await board.stimulus("light", 5)
        await board.advance(10, chunk_s=1)
        dimmed = (await board.state())["pwm"]["25"]["duty"]
        await board.stimulus("pir", 1)                # someone walks under the lamp
        await board.advance(1, chunk_s=1)
        await board.stimulus("pir", 0)
        await board.advance(2, chunk_s=1)
        boosted = (await board.state())["pwm"]["25"]["duty"]
        await board.stimulus("lamp_failed", 1)        # the lamp dies: no current at any level
        await board.advance(30, chunk_s=1)
        await asyncio.sleep(0.3)
        bodies = [decode_body(parse_frame(f).body) for f in read_frames(port)]
        alarms = [b for b in bodies if b["t"] == "alarm"]
        assert dimmed == 40 * 65535 // 100 and boosted == 65535
        assert alarms and alarms[0]["a"] == ["lamp_fail"] and alarms[0]["w"] % 60 == 0
        assert "alarm lamp_fail" in board.console_text()
    finally:
        await board.stop()


async def test_bin_lid_opening_wakes_the_board_and_is_counted(tmp_path) -> None:
    board = VirtualBoard("bin-esp32c3", device_id="bin-sim-2", flash_dir=tmp_path / "flash", speed=None,
                         seed=3, start_ms=T0 * 1000 + 30000)
    await board.start()
    try:
        for name, value in (("temperature", 20), ("tilt", 0), ("lid", 0), ("distance", 575), ("battery", 60)):
            await board.stimulus(name, value)
        await advance_until(board, "deep sleep")
        boots = (await board.state())["stats"]["boots"]
        await board.advance(20, chunk_s=1)            # asleep, the next reading is minutes away
        await board.stimulus("lid", 1)                # someone opens the lid
        await board.advance(3, chunk_s=1)
        await board.stimulus("lid", 0)
        # The wake's boot runs in wall time while the virtual clock is paused: under load it can
        # outlast many 1 s advances, so a booting board is waited for (bounded), not advanced.
        deadline = time.monotonic() + 60
        advanced = 0
        while advanced < 30 and time.monotonic() < deadline:
            st = await board.state()
            if st["stats"]["boots"] > boots and st["state"] == "sleep":
                break
            if st["state"] == "booting":
                await asyncio.sleep(0.1)
                continue
            await board.advance(1, chunk_s=1)
            advanced += 1
        assert st["stats"]["boots"] == boots + 1      # woken by the lid pin, not by the timer
        state = json.loads((tmp_path / "flash" / "state" / "bin.json").read_bytes()[4:])
        assert state["lid"] == 1 and state["tn"] == 1  # counted; no extra reading taken
        sleeps = [e["ms"] for e in board.events if e.get("ev") == "sleep"]
        assert sleeps[-1] < sleeps[0]                 # back to sleep for the rest of the interval
    finally:
        await board.stop()
