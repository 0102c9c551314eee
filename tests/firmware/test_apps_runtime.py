"""The device wiring (civic.apps.runtime) in MicroPython: board config + identity + policy ->
hardware objects, core, app and UART link; frames checked by the gateway's CPython codec."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from gateway.protocol.frame import FRAME_ACK, FRAME_REPORT, build_frame, decode_body, parse_frame, verify_tag
from gateway.protocol.serial_codec import SerialDeframer, encode_serial
from hil.sim.mprun import MpResult
from test_apps_support import FAKE_MACHINE, prelude

Mpy = Callable[..., MpResult]
KEY = bytes(range(32))
T0 = 1767225600  # 2026-01-01 00:00 UTC
# The session reads the interpreter's clock (the host's time): an ACK a month ahead of it is a
# forward sync, taken whole (a set clock goes back 5 min at most: civic.uplink.session).
ACK_TIME = int(time.time()) + 30 * 86400

SETUP = """
import binascii
from civic.apps import runtime
with open("/policy.json", "w") as f:
    f.write(POLICY_TEXT)
IDENTITY = {"id": DEVICE, "kind": CFG["kind"], "zone": "z1", "lat": "52.37", "lon": "4.89",
            "key": binascii.hexlify(bytes(range(32))).decode()}
"""


def run(mpy: Mpy, board: str, device: str, body: str) -> list[Any]:
    code = prelude(board) + FAKE_MACHINE + f"DEVICE = {device!r}\n" + SETUP + body
    out = mpy(code, seed=5).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_streetlight_runtime_reports_over_uart_and_applies_ack(mpy: Mpy) -> None:
    ack = encode_serial(build_frame(FRAME_ACK, "sl-0001", 1, {"t": ACK_TIME}, KEY))
    res = run(mpy, "streetlight-esp32", "sl-0001", f"""
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
uart = FakeMachine.uarts[0]
fake = FakeClock({T0} + 600)          # 00:10 UTC, RTC as a test double for time control
rt.app.clock = fake
rt.app.attach()
FakeMachine.adcs[34].uv = 1000000      # daylight (300 lx): lamp off, so no current is expected
while fake.ms <= 6 * 60 * 1000:        # to 00:16: the 00:00 window closes
    rt.app.tick(fake.ms)
    fake.ms += 1000
sent = rt.links[0].pump()
out = binascii.hexlify(bytes(uart.out)).decode()
pending_before = len(rt.outbox)
uart.inbox += ACK
rt.links[0].poll()
print(json.dumps({{"uart": [uart.id, uart.baudrate, uart.tx, uart.rx], "sent": sent, "out": out,
                  "pending": [pending_before, len(rt.outbox)], "rtc": FakeMachine.RTC().datetime(),
                  "pir": [FakeMachine.pins[27].mode, FakeMachine.pins[27].pull, FakeMachine.pins[27].trigger],
                  "links": len(rt.links), "wdt": FakeMachine.WDT.started}}))
""".replace("ACK", repr(ack), 1).replace("uart.inbox += ACK", f"uart.inbox += {ack!r}"))
    r = res[-1]
    assert r["uart"] == [2, 115200, 17, 16]
    assert r["links"] == 1 and r["sent"] == 1
    assert r["pir"] == [1, 1, 1]          # Pin.IN, PULL_DOWN, IRQ_RISING
    assert r["wdt"] == []                 # the watchdog starts in run(), not while wiring
    frames = SerialDeframer().feed(bytes.fromhex(r["out"]))
    assert len(frames) == 1 and isinstance(frames[0], bytes)
    frame = parse_frame(frames[0])
    assert frame.type == FRAME_REPORT and frame.device_id == "sl-0001" and frame.seq == 1
    assert verify_tag(frame, KEY)
    body = decode_body(frame.body)
    assert body["t"] == "win" and body["k"] == "streetlight" and body["w"] == T0 and body["l"] == 900
    assert body["m"] == {"lux": 300, "lvl": 0, "lamp": 0}
    assert r["pending"] == [1, 0]         # the ACK cleared the outbox ...
    expected = time.gmtime(ACK_TIME)      # ... and set the RTC (device clock far behind)
    assert r["rtc"][:3] == [expected.tm_year, expected.tm_mon, expected.tm_mday]
    assert r["rtc"][4:7] == [expected.tm_hour, expected.tm_min, expected.tm_sec]


def test_identity_of_another_kind_is_refused(mpy: Mpy) -> None:
    res = run(mpy, "streetlight-esp32", "sl-0002", """
IDENTITY["kind"] = "bin"
try:
    runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
except runtime.DeviceFilesError as exc:
    print(json.dumps({"key": exc.key, "msg": str(exc)}))
""")
    assert res == [{"key": "kind", "msg": "runtime: identity kind 'bin' but board kind 'streetlight'"}]


def test_bin_runtime_deep_sleep_cycle(mpy: Mpy) -> None:
    res = run(mpy, "bin-esp32c3", "bin-0001", f"""
import esp32_fake
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
rt.app.clock = FakeClock({T0} + 60)
rt.log = lambda s: None
FakeMachine.RTC().memory(b"CE" + bytes([2]))
async def no_pause(ms):
    pass
rt.app.pause = no_pause
FakeMachine.adcs[0].uv = 1835632       # 20 C
FakeMachine.adcs[1].uv = 1900000       # battery 3.8 V
FakeMachine.pins[3].v = 0              # lid shut (reed switch closed)
FakeMachine.pins[4].v = 0              # upright (tilt switch closed)
co = rt.app.run_deep(False, lambda: len(rt.outbox), rt.deep_sleep)
try:
    while True:
        co.send(None)
except StopIteration:
    pass
print(json.dumps({{"slept": FakeMachine.slept, "crash_mem": list(FakeMachine.RTC().memory()),
                  "wake": esp32_fake.armed, "state_next": rt.app.state["next"],
                  "trig": [FakeMachine.pins[6].mode, FakeMachine.pins[6].v],
                  "lid_pull": FakeMachine.pins[3].pull, "links": len(rt.links)}}))
""".replace("import esp32_fake", """
import sys
class esp32_fake:
    armed = []
    @staticmethod
    def wake_on_gpio(pins, level):
        esp32_fake.armed.append([[p.id for p in pins], level])
sys.modules["esp32"] = esp32_fake
"""))
    r = res[-1]
    assert r["slept"] == [300000]                     # next reading in 5 minutes
    assert r["crash_mem"] == [ord("C"), ord("E"), 0]  # a clean cycle clears the crash counter
    assert r["wake"] == [[[3, 4], 1]]                 # lid and tilt pins, wake when high
    assert r["state_next"] == T0 + 60 + 300
    assert r["trig"] == [3, 0]                        # trigger output, idle low after the pings
    assert r["lid_pull"] == 2                         # PULL_UP
    assert r["links"] == 0                            # BLE only, and no bluetooth module given


def test_failing_radio_leaves_the_uart_link_running(mpy: Mpy) -> None:
    res = run(mpy, "streetlight-esp32", "sl-0003", """
class BrokenBluetooth:
    UUID = str
    @staticmethod
    def BLE():
        raise OSError(19)        # ENODEV: controller did not come up
logged = []
rt = runtime.build(CFG, IDENTITY, FakeMachine, BrokenBluetooth, root="/", log=logged.append)
print(json.dumps({"links": [type(l).__name__ for l in rt.links], "log": logged}))
""")
    assert res == [{"links": ["UartLink"], "log": ["civicedge: BLE unavailable: OSError(19,)"]}]


def test_hal_builds_esp32_objects_from_board_json(mpy: Mpy) -> None:
    res = run(mpy, "streetlight-esp32", "sl-0004", """
from civic.hal import hardware
from civic.hal.clock import Clock
hw = hardware.build(CFG, FakeMachine)
light, lamp, cur = hw.light, hw.lamp, hw.lamp_current
u = hw.uart()
wdt = hw.start_watchdog(); hw.feed(); hw.feed()
clock = Clock(FakeMachine.RTC())
clock.set_time(1767225600 + 3723)          # 2026-01-01 01:02:03 UTC, a Thursday (weekday 3)
print(json.dumps({"light": [light.pin.id, light.atten], "lamp": [lamp.pin.id, lamp.freq, lamp.duty],
                  "cur": [cur.pin.id, cur.atten], "pir": [hw.pir.id, hw.pir.pull],
                  "uart": [u.id, u.baudrate, u.tx, u.rx], "wdt": [FakeMachine.WDT.started, wdt.feeds],
                  "rtc": FakeMachine.RTC().datetime(), "valid": Clock().valid(), "now": Clock().time() > 1700000000}))
""")
    r = res[-1]
    assert r["light"] == [34, 3] and r["cur"] == [35, 3]          # ADC.ATTN_11DB
    assert r["lamp"] == [25, 1000, 0]                              # PWM(freq=1000, duty_u16=0): dark at boot
    assert r["pir"] == [27, 1]                                     # Pin.PULL_DOWN
    assert r["uart"] == [2, 115200, 17, 16]
    assert r["wdt"] == [[30000], 2]
    assert r["rtc"] == [2026, 1, 1, 3, 1, 2, 3, 0]
    assert r["valid"] is True and r["now"] is True                 # the wasm clock is the host's (synced)


def test_config_frame_changes_dimming_and_survives_reboot(mpy: Mpy) -> None:
    from gateway.protocol.frame import FRAME_CONFIG

    config = encode_serial(build_frame(FRAME_CONFIG, "sl-0005", 1,
                                       {"dim_schedule": [[0, 25]], "boost_level": 90, "colour": "red"}, KEY))
    res = run(mpy, "streetlight-esp32", "sl-0005", f"""
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
uart = FakeMachine.uarts[0]
uart.inbox += {config!r}
rt.links[0].poll()
first = [rt.app.dimmer.schedule, rt.app.dimmer.boost_level]
rt2 = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")      # reboot: same flash
print(json.dumps({{"first": first, "after_reboot": [rt2.app.dimmer.schedule, rt2.app.dimmer.boost_level]}}))
""")
    r = res[-1]
    assert r["first"] == [[[0, 25]], 90]
    assert r["after_reboot"] == [[[0, 25]], 90]


def test_bin_config_interval_and_fire_threshold(mpy: Mpy) -> None:
    res = run(mpy, "bin-esp32c3", "bin-0002", """
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
app = rt.app
app.configure({"interval_s": 600, "fire_c": 60, "fire_rise_c_per_min": 8})
good = [app.interval_s, app.fire.threshold_deci, app.fire.rise_c_per_min]
app.configure({"interval_s": 5, "fire_c": 1000, "fire_rise_c_per_min": True})
print(json.dumps({"good": good, "after_bad": [app.interval_s, app.fire.threshold_deci, app.fire.rise_c_per_min]}))
""")
    assert res[-1] == {"good": [600, 600, 8], "after_bad": [600, 600, 8]}


def test_a_board_with_an_unset_clock_and_nothing_to_send_sends_a_boot_report(mpy: Mpy) -> None:
    # An ESP32 RTC without power starts in 2000: periodic reports need a set clock, and only an ACK
    # sets it. Without a frame to answer, the board would never get the time (and never report).
    res = run(mpy, "streetlight-esp32", "sl-0001", f"""
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
rt.clock = FakeClock(946684800 + 30)   # 2000-01-01 00:00:30: never set
first = rt.ask_time()
again = rt.ask_time()                 # the boot report waits in the outbox: no second one
frame = rt.outbox.read(rt.outbox.pending()[0])
rt.outbox.ack(99)
rt.clock = FakeClock({T0})            # a set clock: nothing to ask
print(json.dumps({{"asked": [first, again, rt.ask_time()], "frame": binascii.hexlify(frame).decode()}}))
""")
    r = res[-1]
    assert r["asked"] == [True, False, False]
    frame = parse_frame(bytes.fromhex(r["frame"]))
    assert frame.type == FRAME_REPORT and verify_tag(frame, KEY)
    body = decode_body(frame.body)
    assert {k: body[k] for k in ("t", "k", "w", "l", "m")} == {"t": "boot", "k": "streetlight", "w": 946684800,
                                                             "l": 60, "m": {}}


def test_a_link_whose_task_fails_is_started_again(mpy: Mpy) -> None:
    # A link task that died would leave the device silent while the app still feeds the watchdog.
    res = run(mpy, "streetlight-esp32", "sl-0001", """
import asyncio
runtime.LINK_RESTART_MS = 1
logged = []
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/", log=logged.append)
link = rt.links[0]
runs = []
async def flaky():
    runs.append(1)
    if len(runs) < 3:
        raise OSError(5)
link.run = flaky
async def main():
    await rt._supervise(link)
    print(json.dumps({"runs": len(runs), "logged": logged}))
asyncio.create_task(main())
""")
    r = res[-1]
    assert r["runs"] == 3
    assert len(r["logged"]) == 2 and all("UartLink failed: OSError(5" in x and "restarting" in x for x in r["logged"])


RADIO_RUN = """
class Radio:
    on = False
    class BLE:
        def active(self, on=None):
            if on is not None:
                if BROKEN:
                    raise OSError(19)        # ENODEV: the controller did not come up
                Radio.on = bool(on)
            return Radio.on
        def config(self, **kw):
            pass
        def irq(self, fn):
            pass
        def gatts_register_services(self, services):
            return ((10, 12),)
        def gatts_set_buffer(self, h, n, append=False):
            pass
        def gap_advertise(self, interval, adv_data=None, resp_data=None, connectable=True):
            pass
    UUID = str
logged = []
rt = runtime.build(CFG, IDENTITY, FakeMachine, Radio, root="/", log=logged.append)
fake = FakeClock(START - 60)            # 23:59 UTC: the 18:00-00:00 motion period ends in a minute
rt.app.clock = fake
rt.app.attach()
pir = FakeMachine.pins[27]
FakeMachine.adcs[34].uv = 1000000
while fake.ms <= 180 * 1000:
    if fake.ms % 20000 == 0:
        pir.pulse()
    rt.app.tick(fake.ms)
    fake.ms += 5000
print(json.dumps({"links": [type(l).__name__ for l in rt.links], "held": rt.app.held, "errors": rt.app.errors,
                  "pending": len(rt.outbox), "spent": 2000 - rt.ledger.remaining("mot", fake.time())}))
"""


def test_a_streetlight_whose_radio_failed_holds_its_passes_instead_of_drawing_weak_noise(mpy: Mpy) -> None:
    # QA: Releaser was built without rng_ready, so noise was drawn with the radio off (BLE failed,
    # no bluetooth module, UART only), when the ESP32's os.urandom is not truly random.
    res = run(mpy, "streetlight-esp32", "sl-0006", f"START = {T0}\nBROKEN = True\n" + RADIO_RUN)
    r = res[-1]
    assert r["links"] == ["UartLink"]
    assert list(r["held"]) == ["mot"] and r["held"]["mot"][1] == T0 - 21600   # kept for its own period
    assert r["spent"] == 0 and r["errors"] == 0                               # no noise drawn, no crash


def test_a_streetlight_with_its_radio_on_releases_its_passes(mpy: Mpy) -> None:
    res = run(mpy, "streetlight-esp32", "sl-0007", f"START = {T0}\nBROKEN = False\n" + RADIO_RUN)
    r = res[-1]
    assert r["links"] == ["UartLink", "BleLink"]
    assert r["held"] == {} and r["spent"] == 500


def test_a_board_that_lost_both_seq_files_resumes_above_its_outbox(mpy: Mpy) -> None:
    # seq.bin and its copy gone (flash worn, a file system repaired) while the outbox still holds reports: a
    # fresh counter would hand out their seqs again (each new report refused as "seq not above", an ACK for
    # the held ones above seq.last). The runtime seeds the counter above the outbox at build.
    res = run(mpy, "streetlight-esp32", "sl-0001", f"""
import os
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
rt.clock = FakeClock(946684800 + 30)   # never set: the board frames a boot report
rt.ask_time()
held = rt.outbox.pending()
for name in os.listdir("/"):
    if name.startswith("seq.bin"):
        os.remove("/" + name)
rt2 = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")      # reboot without the seq files
print(json.dumps({{"held": held, "next": rt2.seq.next(), "pending": rt2.outbox.pending()}}))
""")
    r = res[-1]
    assert r["held"] and r["pending"] == r["held"]
    assert r["next"] > max(r["held"]), r
