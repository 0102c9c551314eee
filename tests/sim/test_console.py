"""Console: the MicroPython REPL over a pty opened with pyserial (friendly + raw REPL, Ctrl-C, Ctrl-D)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


async def test_friendly_repl_over_pyserial(make_board, open_serial):
    board = await make_board(speed=1.0)
    await board.wait_console(">>> ")
    con = open_serial(board.console_path)
    con.port.write(b"print(6*7)\r")
    out = await con.read_until(b">>> ")
    assert b"42\r\n" in out


async def test_raw_repl_and_raw_paste_fallback(make_board, open_serial):
    board = await make_board(speed=1.0)
    await board.wait_console(">>> ")
    con = open_serial(board.console_path)
    con.port.write(b"\r\x01")
    await con.read_until(b"raw REPL; CTRL-B to exit\r\n>")
    con.port.write(b"\x05A\x01")  # raw-paste request
    assert await con.read_until(b"R\x00") == b"R\x00"  # "not supported": clients fall back
    con.port.write(b"print('raw', 1+1)\x04")
    out = await con.read_until(b"\x04>")
    assert out == b"OKraw 2\r\n\x04\x04>"
    con.port.write(b"1/0\x04")
    out = await con.read_until(b"\x04>")
    assert b"ZeroDivisionError" in out


async def test_ctrl_d_soft_reboot_reruns_boot_and_main(make_board, open_serial):
    files = {"boot.py": "print('BOOT ran')\n", "main.py": "import machine\nprint('MAIN cause', machine.reset_cause())\n"}
    board = await make_board(files=files, speed=1.0)
    await board.wait_console("MAIN cause 1")
    await board.wait_console(">>> ")
    con = open_serial(board.console_path)
    con.port.write(b"x = 5\r")
    await con.read_until(b">>> ")
    con.port.write(b"\x04")
    out = await con.read_until(b"MAIN cause 5")
    assert b"MPY: soft reboot\r\n" in out and b"BOOT ran" in out
    await con.read_until(b">>> ")
    con.port.write(b"print('x' in globals())\r")
    assert b"False" in await con.read_until(b">>> ")  # a fresh interpreter


async def test_ctrl_c_stops_running_firmware_tasks(make_board, open_serial):
    files = {"main.py": "import asyncio\nasync def tick():\n    while True:\n        print('TICK')\n"
                        "        await asyncio.sleep_ms(100)\nasyncio.create_task(tick())\n"}
    board = await make_board(files=files, speed=1.0)
    con = open_serial(board.console_path)
    await con.read_until(b"TICK")
    con.port.write(b"\x03")
    await con.read_until(b">>> ")
    rest = await con.collect(0.6)
    assert b"TICK" not in rest.split(b">>> ")[-1]


async def test_pin_the_board_does_not_have_fails_like_on_the_board(make_board, open_serial):
    board = await make_board(speed=1.0)
    await board.wait_console(">>> ")
    con = open_serial(board.console_path)
    con.port.write(b"import machine\rmachine.Pin(5, machine.Pin.IN)\r")
    out = await con.read_until(b"invalid pin")
    assert b"ValueError" in out
    await con.read_until(b">>> ")
    con.port.write(b"print(machine.Pin(27, machine.Pin.IN).value())\r")  # the PIR pin exists
    assert b"0\r\n" in await con.read_until(b">>> ")
    con.port.write(b"machine.ADC(machine.Pin(27))\r")  # not an ADC pin on this board
    assert b"ValueError" in await con.read_until(b">>> ")
