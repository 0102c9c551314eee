"""Data UART pty (pyserial, both directions, baud pacing), pins/ADC/PWM and stimuli timelines."""

from __future__ import annotations

import time

import pytest

from hil.sim.errors import StimulusError

pytestmark = pytest.mark.timeout(60)

ECHO = """
import asyncio, machine
u = machine.UART(2, baudrate=115200, tx=17, rx=16)
u.write(b'READY\\n')
async def echo():
    while True:
        n = u.any()
        if n:
            u.write(u.read(n))
        await asyncio.sleep_ms(5)
asyncio.create_task(echo())
"""


async def test_uart_bytes_both_ways_through_pyserial(make_board, open_serial):
    board = await make_board(files={"main.py": ECHO}, speed=1.0, paced=False)
    assert board.data_path is not None and board.data_path != board.console_path
    port = open_serial(board.data_path)
    await board.wait_console(">>> ")
    payload = bytes(range(256)) * 4
    port.port.write(payload)
    got = await port.collect(1.5)
    assert got == payload  # every byte value, in order, through both ptys and the firmware


async def test_uart_output_is_paced_at_the_baud_rate(make_board, open_serial):
    prog = ("import machine\nu = machine.UART(2, 115200)\nimport asyncio\n"
            "async def go():\n    await asyncio.sleep_ms(300)\n    u.write(b'S' + b'x' * 11520 + b'E')\n"
            "asyncio.create_task(go())\n")
    board = await make_board(files={"main.py": prog}, speed=1.0, paced=True)
    port = open_serial(board.data_path)
    await port.read_until(b"S")
    t0 = time.monotonic()
    await port.read_until(b"E")
    elapsed = time.monotonic() - t0
    # 11521 bytes * 10 bits at 115200 baud = 1.0 s on the wire: not sooner (the claim); the upper bound
    # is wide (the Node host shares a loaded CPU) and still below 9600 baud's 12 s
    assert 0.8 < elapsed < 8.0, elapsed


async def test_adc_pir_irq_pwm_and_lamp_current_model(make_board, open_serial):
    prog = """
import machine
hits = []
pir = machine.Pin(27, machine.Pin.IN, machine.Pin.PULL_DOWN)
pir.irq(lambda p: hits.append(p.value()), machine.Pin.IRQ_RISING)
light = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)
cur = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
lamp = machine.PWM(machine.Pin(25), freq=1000, duty_u16=32768)
"""
    board = await make_board(files={"main.py": prog}, speed=1.0)
    await board.wait_console(">>> ")
    await board.stimulus("light", 150)        # lux -> microvolts through the board's calibration
    await board.stimulus("pir", "pulse 2s")
    con = open_serial(board.console_path)
    con.port.write(b"print('R', light.read_uv(), len(hits), pir.value(), cur.read_uv())\r")
    out = await con.read_until(b">>> ")
    # 150 lx * 1e6 / 300 lx/V = 500000 uV; lamp at 50 % draws 130 mA -> 130000 uV (1 V per A)
    assert b"R 500000 1 1 130002" in out or b"R 500000 1 1 130000" in out, out
    assert board.pwm[25]["duty"] == 32768
    await board.stimulus("lamp_failed", 1)
    con.port.write(b"print('F', cur.read_uv())\r")
    assert b"F 0" in await con.read_until(b">>> ")
    with pytest.raises(StimulusError):
        await board.stimulus("distance", 500)  # a streetlight has no ultrasonic sensor
    with pytest.raises(StimulusError):
        await board.stimulus("light", "bright")


async def test_no_echo_and_bright_light_reach_the_firmware_as_a_real_board_sees_them(make_board, open_serial):
    prog = "import machine\necho = machine.Pin(7, machine.Pin.IN)\n"
    board = await make_board("bin-esp32c3", files={"main.py": prog}, speed=1.0)
    await board.wait_console(">>> ")
    con = open_serial(board.console_path)
    await board.stimulus("distance", 1000)
    con.port.write(b"print('D', machine.time_pulse_us(echo, 1, 30000))\r")
    assert b"D 5830" in await con.read_until(b">>> ")
    await board.stimulus("distance", "none")  # the firmware's no-echo branch: a negative time-out
    con.port.write(b"print('N', machine.time_pulse_us(echo, 1, 30000) < 0)\r")
    assert b"N True" in await con.read_until(b">>> ")


async def test_light_brighter_than_the_adc_range_reads_full_scale(make_board, open_serial):
    prog = "import machine\nlight = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)\n"
    board = await make_board(files={"main.py": prog}, speed=1.0)
    await board.wait_console(">>> ")
    con = open_serial(board.console_path)
    await board.stimulus("light", 100_000)  # the pin saturates at 3.3 V; the ADC reads up to 3.1 V
    con.port.write(b"print('L', light.read_uv())\r")
    assert b"L 3100000" in await con.read_until(b">>> ")

async def test_stimuli_file_timeline_pedestrian_every_90s(make_board, tmp_path):
    prog = """
import machine
count = [0]
def on(p):
    count[0] += 1
machine.Pin(27, machine.Pin.IN).irq(on, machine.Pin.IRQ_RISING)
"""
    board = await make_board(files={"main.py": prog}, speed=None)
    stim = tmp_path / "night.toml"
    stim.write_text('[set]\nlight = 2\n\n[[at]]\ntime = "22:00"\nevery = "90s"\nuntil = "23:00"\n'
                    'pir = "pulse 2s"\n')
    await board.load_stimuli(stim)
    await board.advance(22 * 3600 - 1, chunk_s=3600)   # start is 00:00 UTC
    await board.advance(3600 + 10, chunk_s=60)
    board.write_console(b"print('COUNT', count[0])\r")
    await board.advance(0.1)
    await board.wait_console("COUNT 41")  # 22:00, 22:01:30, ... 23:00 inclusive


def test_stimuli_file_errors_are_specific(tmp_path):
    from hil.boards import load_board
    from hil.sim.stimuli import BoardIo, load_stimuli

    io = BoardIo(load_board("streetlight-esp32").to_device_config())
    with pytest.raises(StimulusError) as exc:
        load_stimuli('[[at]]\ntime = "22:00"\nwind = 3\n', io, 0)
    assert exc.value.details["line"] == 1 and exc.value.details["name"] == "wind"
    with pytest.raises(StimulusError):
        load_stimuli('[[at]]\ntime = "25:99"\npir = 1\n', io, 0)
    with pytest.raises(StimulusError):
        load_stimuli('[[at]]\ntime = "+1m"\nfault = "explode"\n', io, 0)
    plan = load_stimuli('[[at]]\ntime = "+1m"\nfault = ["drop uart 30s", "corrupt uart 0.5 for 10s"]\n', io, 0)
    assert plan.faults == [{"at": 60000, "kind": "drop", "link": "uart", "ms": 30000},
                           {"at": 60000, "kind": "corrupt", "link": "uart", "rate": 0.5, "ms": 10000}]


@pytest.mark.parametrize("every", ['"1ms"', '"99ms"', "0.05", '"0s"'])
def test_a_repeat_faster_than_100ms_is_refused_with_the_shortest_interval(every):
    from hil.boards import load_board
    from hil.sim.stimuli import MIN_EVERY_MS, BoardIo, load_stimuli

    io = BoardIo(load_board("streetlight-esp32").to_device_config())
    with pytest.raises(StimulusError) as exc:
        load_stimuli(f'[[at]]\ntime = "+1m"\nevery = {every}\npir = "pulse 50ms"\n', io, 0)
    assert exc.value.details["line"] == 1
    assert f"{MIN_EVERY_MS} ms" in str(exc.value) and "every" in str(exc.value)
    plan = load_stimuli('[[at]]\ntime = "+1m"\nevery = "100ms"\nuntil = "+2m"\npir = 1\n', io, 0)
    assert plan.stimuli[0]["every"] == MIN_EVERY_MS
