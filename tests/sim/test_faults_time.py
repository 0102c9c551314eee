"""Faults, virtual time, determinism, deep sleep/WDT resets and flash persistence."""

from __future__ import annotations

import asyncio

import pytest

from hil.scenarios.outbox import frame_files
from tests.sim.conftest import START_MS, TEST_KEY, write_identity

pytestmark = pytest.mark.timeout(120)

UART_TICKER = """
import asyncio, machine, os, time
u = machine.UART(2, 115200)
async def tick():
    n = 0
    while True:
        u.write(b'%d:%s\\n' % (n, os.urandom(4).hex()))
        n += 1
        await asyncio.sleep(1)
asyncio.create_task(tick())
"""


async def drain(port) -> bytes:
    await asyncio.sleep(0.05)
    return bytes(port.port.read(1 << 20))


async def test_link_drop_for_a_duration_then_back(make_board, open_serial):
    board = await make_board(files={"main.py": UART_TICKER}, paced=False)
    port = open_serial(board.data_path)
    await board.advance(3.5)
    before = await drain(port)
    assert before.count(b"\n") == 4
    await board.fault("drop uart 10s")
    await board.advance(9)
    assert await drain(port) == b""
    await board.advance(3)
    after = await drain(port)
    assert after.startswith(b"14:") and after.count(b"\n") == 2  # 4..13 fell in the drop
    assert (await board.state())["stats"]["dropped"] > 0


async def test_corrupt_bytes_at_a_rate(make_board, open_serial):
    board = await make_board(files={"main.py": "import machine\nu = machine.UART(2)\n"}, paced=False)
    port = open_serial(board.data_path)
    await board.wait_console(">>> ")
    await board.fault("corrupt uart 0.5")
    board.write_console(b"u.write(bytes(2000))\r")
    await board.advance(0.2)
    data = await drain(port)
    assert len(data) == 2000
    flipped = sum(1 for b in data if b)
    assert 800 < flipped < 1200, flipped  # ~50 %, each a single flipped bit
    assert all(bin(b).count("1") == 1 for b in data if b)


async def test_reset_power_loss_rtc_memory_and_reset_cause(make_board):
    prog = ("import machine, time\nr = machine.RTC()\nprint('CAUSE', machine.reset_cause(), r.memory())\n"
            "r.memory(b'kept')\nprint('YEAR', time.gmtime()[0])\n")
    board = await make_board(files={"main.py": prog})
    await board.wait_console("CAUSE 1 b''")
    await board.fault("reset")
    await board.advance(0.1)
    await board.wait_console("CAUSE 2 b'kept'")       # hard reset keeps RTC memory
    assert board.console_text().count("YEAR 2026") == 2   # ... and the clock
    await board.fault("power_loss off 2s")
    await board.advance(1)
    assert (await board.state())["state"] == "off"
    await board.advance(1.5)
    await board.wait_console("CAUSE 1 b''")           # power loss clears it
    await board.wait_console("YEAR 1970")             # and the clock restarts at the epoch, as on an ESP32
    assert (await board.state())["stats"]["boots"] == 3


async def test_power_loss_in_the_middle_of_a_flash_write(make_board):
    prog = ("import machine\nprint('BOOT', machine.reset_cause())\n"
            "def save():\n    with open('/state.bin', 'wb') as f:\n        f.write(b'A' * 1000)\n    print('SAVED')\n")
    board = await make_board(files={"main.py": prog})
    await board.wait_console(">>> ")
    since = len(board.console_log)  # the first boot printed BOOT 1 too: wait for the one after the cut
    await board.fault("power_loss_write state.bin")
    board.write_console(b"save()\r")
    await board.advance(0.5)
    await board.wait_console("BOOT 1", since=since)
    assert "SAVED" not in board.console_text()
    assert (board.flash_dir / "state.bin").read_bytes() == b"A" * 500   # a torn write, as on flash
    assert any(e.get("kind") == "power_loss_write" for e in board.events)


async def test_clock_skew_and_rtc_set_move_time_but_not_ticks(make_board):
    board = await make_board(files={"main.py": "import time, machine\n"})
    await board.wait_console(">>> ")
    board.write_console(b"print('T0', time.time(), time.ticks_ms())\r")
    await board.advance(0.1)
    await board.fault("clock_skew +1h")
    board.write_console(b"print('T1', time.time(), time.localtime()[3])\r")
    await board.advance(0.1)
    await board.wait_console("T1 ")
    text = board.console_text()
    t0 = int(text.split("T0 ")[1].split()[0])
    t1 = int(text.split("T1 ")[1].split()[0])
    assert t0 == START_MS // 1000 and t1 == t0 + 3600
    board.write_console(b"machine.RTC().datetime((2030, 1, 2, 2, 3, 4, 5, 0)); print('T2', time.time())\r")
    await board.advance(0.1)
    await board.wait_console("T2 1893553445")  # 2030-01-02T03:04:05Z


async def test_deepsleep_is_a_timed_reset_and_wdt_resets(make_board):
    prog = ("import machine\nprint('WOKE', machine.reset_cause(), machine.wake_reason())\n"
            "def nap():\n    machine.deepsleep(30000)\n")
    board = await make_board("bin-esp32c3", files={"main.py": prog})
    await board.wait_console("WOKE 1 0")
    board.write_console(b"nap()\r")
    await board.advance(29)
    assert (await board.state())["state"] == "sleep"
    await board.advance(2)
    await board.wait_console("WOKE 4 4")       # DEEPSLEEP_RESET, TIMER_WAKE
    board.write_console(b"w = machine.WDT(timeout=2000)\r")
    await board.advance(1.5)
    board.write_console(b"w.feed()\r")
    await board.advance(1.5)
    assert board.console_text().count("WOKE") == 2
    await board.advance(1)
    await board.wait_console("WOKE 3 0")       # WDT_RESET


async def test_ble_disconnect_fault_reaches_the_supervisor(make_board):
    board = await make_board("bin-esp32c3")
    await board.fault("ble_disconnect")
    await asyncio.sleep(0.2)
    assert any(e.get("kind") == "ble_disconnect" for e in board.events)


async def test_flash_persists_across_board_restarts(make_board, tmp_path):
    prog = ("n = 0\ntry:\n    n = int(open('/count.txt').read())\nexcept OSError:\n    pass\n"
            "open('/count.txt', 'w').write(str(n + 1))\nprint('COUNT', n + 1)\n")
    flash = tmp_path / "persist"
    for expected in (1, 2, 3):
        board = await make_board(files={"main.py": prog} if expected == 1 else {}, flash_dir=flash,
                                 name=f"p{expected}")
        await board.wait_console(f"COUNT {expected}")
        await board.stop()
    assert (flash / "count.txt").read_text() == "3"


async def test_same_seed_same_output_different_seed_different(make_board, open_serial):
    async def run(seed: int, name: str) -> bytes:
        board = await make_board(files={"main.py": UART_TICKER}, paced=False, seed=seed, name=name,
                                 device_id="det-1")  # the stream is per (seed, board id)
        port = open_serial(board.data_path)
        await board.advance(30, chunk_s=5)
        data = await drain(port)
        await board.stop()
        return data

    a, b, c = await run(7, "s1"), await run(7, "s2"), await run(8, "s3")
    assert a.count(b"\n") == 31 and a == b and a != c  # ticks at 0..30 s


async def test_virtual_time_a_day_of_one_second_sensing_in_seconds(make_board):
    prog = """
import asyncio, machine, time
light = machine.ADC(machine.Pin(34))
lamp = machine.PWM(machine.Pin(25), freq=1000, duty_u16=0)
hours = []
async def sense():
    last = -1
    while True:
        h = time.localtime()[3]
        lamp.duty_u16(65535 if light.read_uv() < 100000 else 0)
        if h != last:
            hours.append(h)
            last = h
        await asyncio.sleep(1)
asyncio.create_task(sense())
"""
    board = await make_board(files={"main.py": prog})
    await board.load_stimuli('[set]\nlight = 10\n[[at]]\ntime = "08:00"\nlight = 500\n[[at]]\ntime = "17:00"\nlight = 10\n')
    await board.advance(86400, chunk_s=600)   # how fast: bench/sim_time.py (no timing asserts here)
    board.write_console(b"print('HOURS', len(hours), time.time())\r")
    await board.advance(0.1)
    await board.wait_console("HOURS 25 %d" % (START_MS // 1000 + 86400))
    assert board.pwm[25]["duty"] == 65535   # dark again after 17:00


async def test_real_streetlight_firmware_reports_on_the_uart(make_board, open_serial, tmp_path):
    flash = tmp_path / "sl"
    write_identity(flash, "sl-1", "streetlight")
    board = await make_board(install=True, flash_dir=flash, device_id="sl-1", paced=False, seed=1)
    await board.advance(0.5)  # main.py starts the firmware as an asyncio task: needs the clock
    await board.wait_console("civicedge: streetlight sl-1 running")
    port = open_serial(board.data_path)
    await board.stimulus("light", 5)
    await board.advance(16 * 60, chunk_s=10)
    data = await drain(port)
    frames = [f for f in data.split(b"\x00") if f]
    assert frames, "no report frames on the data UART after a 15-minute window"
    from gateway.protocol import cobs_decode, decode_body, parse_frame, verify_tag

    frame = parse_frame(cobs_decode(frames[0]))
    assert frame.device_id == "sl-1" and verify_tag(frame, bytes.fromhex(TEST_KEY))
    body = decode_body(frame.body)
    assert body["k"] == "streetlight" and body["w"] % 900 == 0
    assert (flash / "outbox").exists()   # the outbox persisted in the flash directory


async def test_lid_opening_wakes_a_sleeping_bin_early(make_board):
    prog = ("import machine, esp32\nprint('WOKE', machine.reset_cause(), machine.wake_reason(),"
            " machine.Pin(3, machine.Pin.IN).value(), machine.Pin(4, machine.Pin.IN).value())\n"
            "def nap():\n    esp32.wake_on_gpio([machine.Pin(3)], 1)\n    machine.deepsleep(600000)\n")
    board = await make_board("bin-esp32c3", files={"main.py": prog})
    await board.wait_console("WOKE 1 0 0 0")   # at rest: lid shut, bin upright (pull-ups, switches closed)
    board.write_console(b"nap()\r")
    await board.advance(5)
    assert (await board.state())["state"] == "sleep"
    await board.stimulus("lid", 1)
    await board.advance(0.5)
    await board.wait_console("WOKE 4 3 1 0")   # DEEPSLEEP_RESET by a pin (EXT1), long before 600 s


DAY_STIMULI = """
[set]
light = 5               # 01:00 local (UTC+1): night
[[at]]
time = "07:00"          # 08:00 local: daylight
light = 500
[[at]]
time = "16:00"          # 17:00 local: dusk
light = 5
[[at]]
time = "21:00"          # 22:00 local: a pedestrian every 90 s for an hour and a half
every = "90s"
until = "22:30"
pir = "pulse 2s"
"""


async def test_a_day_of_the_real_streetlight_firmware_with_a_gateway_acking(make_board, open_serial, tmp_path):
    """24 virtual hours of the unchanged firmware on a paused clock, with a thread reading the
    data pty and acknowledging every report like a gateway: every window, energy hour and
    motion release arrives, in seq order, nothing dropped. (bench/sim_time.py --firmware measures
    how fast; no timing asserts here.)"""
    import threading

    from gateway.protocol import FRAME_ACK, build_frame, decode_body, encode_serial, parse_frame, verify_tag
    from gateway.protocol.serial_codec import SerialDeframer

    key = bytes.fromhex(TEST_KEY)
    flash = tmp_path / "sl"
    write_identity(flash, "sl-day", "streetlight")
    board = await make_board(install=True, flash_dir=flash, device_id="sl-day", paced=False, seed=3)
    await board.advance(0.5)
    await board.wait_console("civicedge: streetlight sl-day running")
    await board.load_stimuli(DAY_STIMULI)
    port = open_serial(board.data_path).port
    port.timeout = 0.05
    bodies: dict[int, dict] = {}
    errors: list[object] = []
    stop = threading.Event()

    def gateway() -> None:
        deframer = SerialDeframer()
        while not stop.is_set():
            for raw in deframer.feed(port.read(4096)):
                if not isinstance(raw, bytes):
                    errors.append(raw)
                    continue
                frame = parse_frame(raw)
                if frame.device_id != "sl-day" or not verify_tag(frame, key):
                    errors.append(frame)
                    continue
                bodies.setdefault(frame.seq, decode_body(frame.body))
                port.write(encode_serial(build_frame(FRAME_ACK, "sl-day", max(bodies), {}, key)))

    reader = threading.Thread(target=gateway, daemon=True)
    reader.start()
    try:
        await board.advance(86400 + 30, chunk_s=30)
        await asyncio.sleep(0.3)     # the last ACKs reach the board ...
        await board.advance(1)       # ... and it handles them
    finally:
        stop.set()
        reader.join(5)
    assert not errors
    assert "Traceback" not in board.console_text()
    assert sorted(bodies) == list(range(1, len(bodies) + 1))    # every seq once, none dropped
    day0 = START_MS // 1000
    wins = sorted(b["w"] for b in bodies.values() if b["t"] == "win" and "lvl" in b["m"])
    assert wins == [day0 + 900 * i for i in range(96)]          # all 96 quarter hours
    # every window has lux, also those boosted throughout (a pedestrian every 90 s, courtesy 120 s,
    # 22:00-23:30 local): a window without it would tell that someone passed all the time
    no_lux = sorted(b["w"] for b in bodies.values() if b["t"] == "win" and "lvl" in b["m"] and "lux" not in b["m"])
    assert no_lux == [], no_lux
    hours = sorted(b["w"] for b in bodies.values() if b["t"] == "hour")
    assert hours == [day0 + 3600 * i for i in range(24)]
    lvl = {b["w"]: b["m"]["lvl"] for b in bodies.values() if b["t"] == "win" and "lvl" in b["m"]}
    assert lvl[day0 + 3600] == 40          # 02:00 local: schedule 40 %
    assert lvl[day0 + 12 * 3600] == 0      # midday: off
    # 22:15 local, pedestrians: the lamp boosts, but lvl is the scheduled 70 % (a boost would count them)
    assert lvl[day0 + 21 * 3600 + 900] == 70
    assert any("mot" in b.get("e", {}) for b in bodies.values()), "no motion release in a day"
    assert len(frame_files(flash / "outbox")) <= 1          # acknowledged frames leave the outbox
