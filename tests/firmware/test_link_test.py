"""``civicedge check``'s link-test request in the firmware: a boot report at the restart check makes.

check writes ``/linktest`` and restarts the firmware with a soft reset; the firmware removes the file
before anything else and, at a soft reset only, queues one boot report (no measurement) through the
normal seq/HMAC/outbox path, whatever its clock and outbox hold (not into a full outbox). Run in real
MicroPython (wasm): the boot decision and the runtime with stand-in hardware, then the unchanged
boot.py/main.py on a virtual board of the simulator, restarted over its console as check does.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import time
from typing import Any, Callable

import pytest
import serial

from gateway.protocol.frame import FRAME_ACK, FRAME_REPORT, build_frame, decode_body, parse_frame, verify_tag
from gateway.protocol.serial_codec import SerialDeframer, encode_serial
from hil.sim.board import VirtualBoard
from hil.sim.mprun import MpResult
from board_boot import wait_while_booting
from test_apps_support import FAKE_MACHINE, prelude

Mpy = Callable[..., MpResult]
KEY = bytes(range(32))
T0 = 1767225600  # 2026-01-01 00:00 UTC

SETUP = """
import binascii, os
from civic.apps import runtime
from civic.hal import boot as bootstate
with open("/policy.json", "w") as f:
    f.write(POLICY_TEXT)
IDENTITY = {"id": "sl-0001", "kind": "streetlight", "zone": "z1", "lat": "52.37", "lon": "4.89",
            "key": binascii.hexlify(bytes(range(32))).decode()}
def request():
    with open("/linktest", "w") as f:
        f.write("check")
def requested():
    return "linktest" in os.listdir("/")
"""


def run(mpy: Mpy, body: str) -> Any:
    out = mpy(prelude("streetlight-esp32") + FAKE_MACHINE + SETUP + body, seed=5).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_a_request_counts_only_at_a_soft_reset_and_is_removed_at_every_start(mpy: Mpy) -> None:
    r = run(mpy, """
out = {}
for name in ("SOFT_RESET", "PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET"):
    request()
    FakeMachine.cause = getattr(FakeMachine, name)
    out[name] = [bootstate.take_link_test(FakeMachine), requested()]
FakeMachine.cause = FakeMachine.SOFT_RESET
out["none"] = [bootstate.take_link_test(FakeMachine), requested()]   # no request: nothing to answer
print(json.dumps(out))
""")
    # check restarts with Ctrl-D (a soft reset); a request found at any other start was left by a
    # check whose restart never happened (a bin woken by its lid must not say when): dropped
    assert r == {"SOFT_RESET": [True, False], "PWRON_RESET": [False, False], "HARD_RESET": [False, False],
                 "WDT_RESET": [False, False], "DEEPSLEEP_RESET": [False, False], "none": [False, False]}


def test_the_answer_is_one_boot_report_without_measurements_also_with_a_set_clock_and_a_waiting_report(
        mpy: Mpy) -> None:
    r = run(mpy, f"""
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/", link_test=True)
lines = []
rt.log = lines.append
rt.clock = FakeClock({T0} + 754)           # a set clock: without the request no boot report
waiting = rt.reporter.report("win", {T0} - 900, 900, {{"lux": 300, "lvl": 0, "lamp": 0}})
seq = rt.answer_link_test()
again = rt.answer_link_test()              # once per start
time_only = rt.ask_time()                  # the clock is set: nothing more
frame = rt.outbox.read(seq)
print(json.dumps({{"pending": rt.outbox.pending(), "seq": seq, "waiting": waiting, "again": again,
                  "time_only": time_only, "frame": binascii.hexlify(frame).decode(), "lines": lines}}))
""")
    assert r["again"] is None and r["time_only"] is False
    assert r["pending"] == [r["waiting"], r["seq"]] and r["seq"] > r["waiting"]  # after the waiting report
    assert r["lines"] == [f"civicedge: link test: boot report queued (seq {r['seq']})"]
    frame = parse_frame(bytes.fromhex(r["frame"]))
    assert frame.type == FRAME_REPORT and frame.device_id == "sl-0001" and frame.seq == r["seq"]
    assert verify_tag(frame, KEY)
    body = decode_body(frame.body)
    assert {k: body[k] for k in ("t", "k", "w", "l", "m")} == {"t": "boot", "k": "streetlight",
                                                             "w": T0 + 720, "l": 60, "m": {}}
    assert "e" not in body and "a" not in body
    assert body["h"] == [r["waiting"], r["waiting"]]


def test_an_unset_clock_with_a_request_sends_one_boot_report_not_two(mpy: Mpy) -> None:
    r = run(mpy, """
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/", link_test=True)
rt.log = lambda s: None
rt.clock = FakeClock(946684800 + 30)       # never set: a boot report anyway
rt.links = []                              # no link tasks: this script must end
rt.start_links()
print(json.dumps({"pending": len(rt.outbox)}))
""")
    assert r == {"pending": 1}


def test_an_outbox_half_full_or_more_gets_no_boot_report_and_loses_no_report(mpy: Mpy) -> None:
    # Before: only a full outbox was refused; with one slot free the boot report took it and the
    # next window report pushed out the oldest measurement.
    r = run(mpy, f"""
res = {{}}
for n in (63, 32, 31):
    root = "/b%d/" % n                        # a board of its own each
    os.mkdir(root)
    with open(root + "policy.json", "w") as f:
        f.write(POLICY_TEXT)
    rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root=root, link_test=True)
    lines = []
    rt.log = lines.append
    rt.clock = FakeClock({T0} + 60)
    for i in range(n):
        rt.reporter.report("win", {T0} - 900 * (i + 1), 900, {{"lux": 300, "lvl": 0, "lamp": 0}})
    before = rt.outbox.pending()
    seq = rt.answer_link_test()
    rt.reporter.report("win", {T0}, 900, {{"lux": 300, "lvl": 0, "lamp": 0}})   # the next window
    res[n] = {{"seq": seq, "same": rt.outbox.pending()[:n] == before, "dropped": rt.outbox.dropped,
              "size": rt.outbox.max_entries, "lines": lines}}
print(json.dumps(res))
""")
    assert r["63"]["size"] == 64
    for n in ("63", "32"):   # the frame would bring a lost report nearer: its reports go first
        assert r[n]["seq"] is None and r[n]["same"] is True and r[n]["dropped"] == 0
        assert r[n]["lines"] == [f"civicedge: link test: outbox half full or more ({n} of 64 reports wait), "
                                 "no boot report queued"]
    assert r["31"]["seq"] is not None and r["31"]["same"] is True and r["31"]["dropped"] == 0
    assert r["31"]["lines"] == [f"civicedge: link test: boot report queued (seq {r['31']['seq']})"]


def test_a_deep_sleeping_bin_restarted_by_check_queues_the_boot_report_when_its_links_start(mpy: Mpy) -> None:
    # The links of a deep-sleep bin start only when a start needs them (start_links, a callback of
    # run_deep); it then lingers awake until its outbox is empty (here linger_s=0: no link to drain it).
    code = prelude("bin-esp32c3") + FAKE_MACHINE + SETUP.replace('"sl-0001", "kind": "streetlight"',
                                                                 '"bin-0001", "kind": "bin"') + f"""
import sys
class esp32_fake:
    @staticmethod
    def wake_on_gpio(pins, level):
        pass
sys.modules["esp32"] = esp32_fake
FakeMachine.cause = FakeMachine.SOFT_RESET        # check's restart: not a wake, so the links start
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/", link_test=True)
rt.log = lambda s: None
rt.app.clock = rt.clock = FakeClock({T0} + 60)
rt.app.state["next"] = {T0} + 600                 # no reading due at this start
co = rt.app.run_deep(False, lambda: len(rt.outbox), rt.deep_sleep, linger_s=0, start_links=rt.start_links)
try:
    while True:
        co.send(None)
except StopIteration:
    pass
frames = [rt.outbox.read(s) for s in rt.outbox.pending()]
print(json.dumps({{"frames": [binascii.hexlify(f).decode() for f in frames], "slept": FakeMachine.slept}}))
"""
    out = mpy(code, seed=5).stdout
    r = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    bodies = [decode_body(parse_frame(bytes.fromhex(f)).body) for f in r["frames"]]
    assert [(b["t"], b["k"], b["m"]) for b in bodies] == [("boot", "bin", {})]
    assert r["slept"] and r["slept"][-1] > 0       # then it sleeps as after any start


def test_without_a_request_a_set_clock_queues_nothing(mpy: Mpy) -> None:
    r = run(mpy, f"""
rt = runtime.build(CFG, IDENTITY, FakeMachine, None, root="/")
rt.log = lambda s: None
rt.clock = FakeClock({T0} + 60)
rt.links = []
rt.start_links()
print(json.dumps({{"answer": rt.answer_link_test(), "pending": len(rt.outbox)}}))
""")
    assert r == {"answer": None, "pending": 0}


# ----------------------------------------------------------------------- on a virtual board


def _frames(port: serial.Serial) -> list[bytes]:
    return [f for f in SerialDeframer().feed(port.read(65536)) if isinstance(f, bytes)]


async def _advance_until(board: VirtualBoard, text: str, since: int, max_s: int = 30) -> None:
    """Advance the clock a second at a time until ``text`` is printed: ``max_s`` virtual seconds, and on
    a loaded machine on for 10 s of wall time at least (a reset board's restart, and the host's writes
    of the console pty after advance() returned, were seen to lag in CI). A booting board is waited
    for in wall time, not advanced: its boot report's window is the minute the firmware came up in."""
    deadline = time.monotonic() + 10
    advanced = 0
    while advanced < max_s or time.monotonic() < deadline:
        await wait_while_booting(board)
        if text in board.console_text()[since:]:
            return
        await board.advance(1, chunk_s=1)
        advanced += 1
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} not printed within {advanced} virtual s:\n{board.console_text()[since:]}")


async def _sent(board: VirtualBoard, port: serial.Serial, seconds: int) -> list[bytes]:
    """Advance ``seconds`` (virtual) and read what the board sent on its data UART meanwhile."""
    frames: list[bytes] = []
    for _ in range(seconds):
        await board.advance(1, chunk_s=1)
        await asyncio.sleep(0.05)
        frames += await asyncio.to_thread(_frames, port)
    for _ in range(10):  # the host writes the pty after advance() returned: read until it is quiet
        more = await asyncio.to_thread(_frames, port)
        if not more:
            break
        frames += more
    return frames


@pytest.mark.timeout(150)
async def test_check_restart_on_a_virtual_board_sends_a_boot_report_at_once(tmp_path, sim_available: None) -> None:
    start = T0 + 3600 + 60                                # 01:01: the next window closes at 01:15
    board = VirtualBoard("streetlight-esp32", device_id="sl-link-1", flash_dir=tmp_path / "flash", speed=None,
                         seed=1, start_ms=start * 1000, paced=False)
    await board.start()
    try:
        await _advance_until(board, "running", 0)
        key = binascii.unhexlify(json.loads(board.identity_path.read_text())["key"])
        assert board.data_path is not None
        port = serial.Serial(board.data_path, timeout=0.3)
        assert await _sent(board, port, 5) == []          # a set clock and nothing to send: silent

        # check's restart: the request file, Ctrl-C (the firmware stops), Ctrl-D (soft reset)
        request = tmp_path / "flash" / "linktest"
        request.write_text("check")
        mark = len(board.console_text())
        board.write_console(b"\r\x03\x03")
        await board.advance(1, chunk_s=1)
        board.write_console(b"\x04")
        await _advance_until(board, "link test: boot report queued", mark)
        assert not request.exists()                       # removed at the start, before anything else
        frames = [parse_frame(f) for f in await _sent(board, port, 3)]
        boots = [f for f in frames if decode_body(f.body)["t"] == "boot"]
        assert len(boots) == 1, frames
        boot = boots[0]
        assert boot.type == FRAME_REPORT and boot.device_id == "sl-link-1" and verify_tag(boot, key)
        body = decode_body(boot.body)
        assert body["m"] == {} and body["l"] == 60 and "e" not in body
        assert start <= body["w"] <= start + 60 and body["w"] % 60 == 0
        port.write(encode_serial(build_frame(FRAME_ACK, "sl-link-1", boot.seq, {"t": start + 3}, key)))
        port.flush()
        await _sent(board, port, 3)

        # A request the firmware finds at another start (a reset, power, its watchdog) is dropped: it
        # was left by a check whose restart never happened.
        request.write_text("check")
        mark = len(board.console_text())
        await board.fault("reset")
        await _advance_until(board, "running", mark)
        assert not request.exists()
        later = [parse_frame(f) for f in await _sent(board, port, 5)]
        assert [f.seq for f in later if decode_body(f.body)["t"] == "boot"] == [], later
        assert "link test" not in board.console_text()[mark:]
    finally:
        await board.stop()
