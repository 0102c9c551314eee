"""A paused virtual clock does not advance past a booting board (hil/sim/host.mjs advance()).

A board's boot loads MicroPython in wall time. Real hardware spends no such time, so the paused
clock waits (bounded) while a board boots: the firmware's first reading after a reset is the
reset's own time, however long the host took to load it. The host's ``slow_boot`` fault (a test
hook: every boot of that board takes that many more wall ms, as on a loaded machine) makes a boot
outlast the whole advance deterministically.
"""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.timeout(120)

# Prints the firmware's own clock (ms) when main.py starts, then a tick every virtual second.
UPTIME = """
import asyncio, machine, time
print('UP %d' % (time.time_ns() // 1000000))
async def tick():
    n = 0
    while True:
        await asyncio.sleep(1)
        n += 1
        print('TICK', n)
asyncio.create_task(tick())  # the wasm port runs tasks from the JS event loop, no run_forever
"""


async def slow_boot(board, ms: int) -> None:
    await board.host.request({"op": "fault", "board": board.device_id, "f": {"kind": "slow_boot", "ms": ms}})


def up_ms(board, since: int) -> int:
    return int(board.console_text()[since:].split("UP ")[1].split()[0])


async def test_a_reset_during_an_advance_costs_the_firmware_no_virtual_time(make_board):
    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    now0 = int((await board.state())["now"])
    await slow_boot(board, 1500)  # the boot outlasts the whole advance below in wall time
    since = len(board.console_log)
    await board.fault("reset")    # its reboot is 1 ms away on the (paused) clock
    t0 = time.monotonic()
    end = await board.advance(10)
    assert time.monotonic() - t0 >= 1.4, "the advance did not wait for the boot"
    assert end == now0 + 10_000
    await board.wait_console("TICK 9", since=since)
    # The reset's 1 ms, not the wall time the boot took: the firmware then ran the 10 s it was given.
    assert up_ms(board, since) == now0 + 1
    assert "TICK 10" not in board.console_text()[since:]
    assert not [e for e in board.events if e.get("ev") == "boot_wait_timeout"]


async def test_machine_reset_typed_at_the_console_then_an_immediate_advance(make_board):
    board = await make_board(files={"main.py": "import machine, time\nprint('UP %d' % (time.time_ns() // 1000000))\n"})
    await board.wait_console(">>> ")
    now0 = int((await board.state())["now"])
    await slow_boot(board, 800)
    since = len(board.console_log)
    board.write_console(b"machine.reset()\r")  # input goes to the board at once, before the advance
    await board.advance(5)
    await board.wait_console("UP ", since=since)
    assert up_ms(board, since) == now0 + 1


async def test_an_unpowered_board_does_not_hold_the_clock_and_boots_at_power_on(make_board):
    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    await slow_boot(board, 500)
    since = len(board.console_log)
    await board.fault("power_loss off 2s")  # off (not booting) until the clock reaches power-on
    t0 = time.monotonic()
    await board.advance(1)
    assert (await board.state())["state"] == "off"
    assert time.monotonic() - t0 < 10  # not the 60 s a booting board may hold a chunk
    await board.advance(4)
    await board.wait_console("TICK 3", since=since)  # on at +2 s, then 3 s of the 5 advanced
    # An RTC without power restarts at the epoch: 0 at power-on, and the boot took none of it.
    assert up_ms(board, since) == 0
    assert "TICK 4" not in board.console_text()[since:]


async def test_a_boot_that_outlasts_the_wait_bound_is_named_and_the_clock_goes_on(make_board):
    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    await board.host.set_boot_wait(300)
    await slow_boot(board, 5000)
    await board.fault("reset")
    t0 = time.monotonic()
    await board.advance(5)  # five chunks: the board is waited for 300 ms in the whole advance, then named once
    assert time.monotonic() - t0 < 2.5
    timeouts = [e for e in board.events if e.get("ev") == "boot_wait_timeout"]
    assert len(timeouts) == 1 and timeouts[0]["board"] == board.device_id and timeouts[0]["reason"] == "timeout"
    assert 300 <= timeouts[0]["waited_ms"] < 1000   # what it really waited
    assert (await board.state())["state"] == "booting"


# Resets as soon as it runs: each boot is a wall-time load, one per virtual ms.
BOOT_LOOP = "import machine\nmachine.reset()\n"


async def test_a_boot_loop_is_given_up_on_and_the_advance_stays_short(make_board):
    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    (board.flash_dir / "main.py").write_text(BOOT_LOOP)
    await board.fault("reset")
    t0 = time.monotonic()
    await board.advance(3)
    # Before: the clock waited out every boot, ~25 ms of wall time per virtual ms (3 s: over a minute).
    assert time.monotonic() - t0 < 20
    loops = [e for e in board.events if e.get("ev") == "boot_wait_timeout"]
    assert len(loops) == 1 and loops[0]["board"] == board.device_id and loops[0]["reason"] == "boot_loop"


async def test_refused_clock_settings_change_nothing(make_board):
    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    before = await board.host.request({"op": "clock"})
    for bad in ({"speed": 0, "boot_wait_ms": "x"}, {"boot_wait_ms": None}, {"boot_wait_ms": True}, {"boot_wait_ms": -1}):
        with pytest.raises(Exception, match="boot_wait_ms"):
            await board.host.request({"op": "clock", **bad})
    after = await board.host.request({"op": "clock"})
    assert (after["speed"], after["boot_wait_ms"]) == (before["speed"], before["boot_wait_ms"])
    for bad in ({"ms": "abc"}, {"ms": -5}, {"ms": 1000, "chunk": 0}):
        with pytest.raises(Exception, match="ms|chunk"):
            await board.host.request({"op": "advance", **bad})


async def test_a_boot_that_fails_ends_off_and_does_not_hold_the_clock(make_board):
    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    # A flash directory that is gone: mounting it as the interpreter's root fails in the boot.
    flash = board.flash_dir
    for p in flash.iterdir():
        p.unlink()
    flash.rmdir()
    await board.fault("reset")
    t0 = time.monotonic()
    await board.advance(3)
    assert time.monotonic() - t0 < 10
    failed = [e for e in board.events if e.get("ev") == "boot_failed"]
    assert failed and failed[0]["board"] == board.device_id and failed[0]["cause"] == 2
    assert (await board.state())["state"] == "off"
    assert not [e for e in board.events if e.get("ev") == "boot_wait_timeout"]


async def test_a_create_whose_boot_fails_leaves_no_board_behind(make_board, tmp_path):
    from hil.sim.board import board_host_options
    from hil.sim.errors import SimHostError

    board = await make_board(files={"main.py": UPTIME})
    await board.wait_console("UP ")
    gone = tmp_path / "no-such-flash"
    opts = board_host_options(board.config, flash=gone, seed=1, heap_bytes=board.heap_bytes)
    with pytest.raises(SimHostError, match="^simulator host: flash directory %s does not exist$" % re.escape(str(gone))) as info:
        await board.host.request({"op": "create", "board": "late", "opts": opts})
    assert info.value.details["op"] == "create" and info.value.details["board"] == "late"
    assert [e for e in board.events if e.get("ev") == "boot_failed"] == []   # the other board's events only
    gone.mkdir()
    opts = board_host_options(board.config, flash=gone, seed=1, heap_bytes=board.heap_bytes)
    reply = await board.host.request({"op": "create", "board": "late", "opts": opts})   # was: board late exists
    assert reply["ok"] is True
    await board.host.request({"op": "destroy", "board": "late"})
