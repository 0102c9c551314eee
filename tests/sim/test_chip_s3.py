"""A streetlight on an ESP32-S3 board definition runs the unchanged firmware on a virtual board:
the board says it is an S3 (as MicroPython's machine string does, which the field tools read) and its
reports reach the data UART on the S3's pins."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.resources import boards_dir
from hil.field.board_facts import chip_from_machine
from tests.sim.conftest import TEST_KEY, write_identity

pytestmark = pytest.mark.timeout(120)

# The shipped streetlight's ESP32 pins 27, 34, 35 are flash/PSRAM pins on an S3, GPIO25 does not exist.
S3_PINS = {'chip = "esp32"': 'chip = "esp32s3"', 'name = "streetlight-esp32"': 'name = "sl-s3"',
           "pin = 27\n": "pin = 4\n", "pin = 34\n": "pin = 1\n", "pin = 25\n": "pin = 5\n", "pin = 35\n": "pin = 2\n",
           "rx = 16": "rx = 18"}


async def test_a_streetlight_on_an_s3_definition_reports(make_board, open_serial, tmp_path: Path) -> None:
    text = (boards_dir() / "streetlight-esp32.toml").read_text()
    for old, new in S3_PINS.items():
        assert text.count(old) == 1
        text = text.replace(old, new)
    definition = tmp_path / "sl-s3.toml"
    definition.write_text(text)
    flash = tmp_path / "sl"
    write_identity(flash, "sl-s3-1", "streetlight")
    board = await make_board(str(definition), install=True, flash_dir=flash, device_id="sl-s3-1", paced=False, seed=1)
    assert board.config["chip"] == "esp32s3" and board.config["links"]["uart"]["rx"] == 18
    await board.advance(0.5)
    await board.wait_console("civicedge: streetlight sl-s3-1 running")
    board.write_console(b"\x03")  # stop the firmware, ask the REPL what chip this is
    await board.advance(0.2)
    await board.wait_console(">>> ")
    board.write_console(b"import os; print('M=' + os.uname().machine)\r")
    await board.advance(0.2)
    await board.wait_console("M=civicedge virtual board with ESP32S3")
    machine = board.console_log.decode(errors="replace").split("M=")[-1].splitlines()[0]
    assert chip_from_machine(machine) == "esp32s3"
    rebooted_from = len(board.console_log)
    board.write_console(b"\x04")  # soft reboot: the firmware runs again
    await board.advance(0.5)
    # running again before the window is advanced through, in small steps (the reboot is handled after the
    # write returns: advancing 16 minutes before it ran left them without the firmware, so no report)
    for _ in range(50):
        try:  # the reboot itself takes wall time too (CI, loaded: 50 bare advances ran before it did)
            await board.wait_console("civicedge: streetlight sl-s3-1 running", since=rebooted_from, timeout_s=0.5)
            break
        except asyncio.TimeoutError:
            await board.advance(0.2)
    assert b"civicedge: streetlight sl-s3-1 running" in board.console_log[rebooted_from:], \
        board.console_log[rebooted_from:].decode(errors="replace")
    port = open_serial(board.data_path)
    await board.stimulus("light", 5)      # GPIO1 (ADC1_CH0) through the calibration
    await board.advance(16 * 60, chunk_s=10)
    # The simulator host writes the frames after the advance returned, later on a loaded machine (CI
    # once read nothing 0.05 s after it): wait up to 15 s for a whole frame.
    data, deadline = b"", time.monotonic() + 15.0
    while not (b"\x00" in data.lstrip(b"\x00")) and time.monotonic() < deadline:
        chunk = bytes(await asyncio.to_thread(port.port.read, 1 << 20))
        data += chunk
        if not chunk:
            await asyncio.sleep(0.05)
    frames = [f for f in data.split(b"\x00") if f]
    assert frames, "no report frames on the data UART after a 15-minute window"
    from gateway.protocol import cobs_decode, decode_body, parse_frame, verify_tag

    frame = parse_frame(cobs_decode(frames[0]))
    assert frame.device_id == "sl-s3-1" and verify_tag(frame, bytes.fromhex(TEST_KEY))
    body = decode_body(frame.body)
    assert body["k"] == "streetlight" and body["w"] % 900 == 0
