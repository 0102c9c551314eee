"""Benchmark: simulated hours per wall second on the virtual clock, for 1 and 100 boards.

Each board runs a sensing loop like a streetlight's (ADC read, PWM set, every ``--tick-ms``) on
a paused clock advanced as fast as possible. The floor, measured in the same run, is the same
span with boards that only idle at the REPL (pure clock + host overhead), so the ratio shows
what the per-board MicroPython work costs. ``--firmware`` uses the real provisioned firmware
instead of the sensing loop (unacknowledged: its re-sends back off to one a minute).

    python bench/sim_time.py [--short] [--firmware] [--tick-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil.sim.board import VirtualBoard  # noqa: E402
from hil.sim.host import SimHost  # noqa: E402

LOOP = """
import asyncio, machine
light = machine.ADC(machine.Pin(34))
lamp = machine.PWM(machine.Pin(25), freq=1000, duty_u16=0)
async def sense():
    while True:
        lamp.duty_u16(65535 if light.read_uv() < 100000 else 0)
        await asyncio.sleep_ms(%d)
asyncio.create_task(sense())
"""


async def measure(boards: int, sim_hours: float, program: str | None, firmware: bool) -> float:
    """Return simulated hours per wall second for ``boards`` boards on one host."""
    host = SimHost(speed=None, start_ms=1_767_225_600_000)
    await host.start()
    vbs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i in range(boards):
                flash = Path(tmp) / f"b{i}"
                flash.mkdir()
                if program is not None:
                    (flash / "main.py").write_text(program)
                vb = VirtualBoard("streetlight-esp32", device_id=f"t-{i}" if firmware else None, flash_dir=flash,
                                  host=host, install=firmware, paced=False)
                await vb.start()
                vbs.append(vb)
            t0 = time.perf_counter()
            await host.advance(int(sim_hours * 3_600_000), chunk_ms=60_000, timeout_s=3600)
            wall = time.perf_counter() - t0
        finally:
            for vb in vbs:
                vb.started = False
                await vb.stop()
            await host.close()
    return sim_hours / wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="small spans (CI)")
    ap.add_argument("--firmware", action="store_true", help="real provisioned firmware instead of the loop")
    ap.add_argument("--tick-ms", type=int, default=1000, help="sensing period of the loop program")
    args = ap.parse_args()
    program = None if args.firmware else LOOP % args.tick_ms
    spans = {1: 0.5 if args.short else 24.0, 100: 0.05 if args.short else 1.0}
    if args.firmware:
        spans = {1: 0.25 if args.short else 24.0, 100: 0.05 if args.short else 1.0}
    results = {}
    for n, hours in spans.items():
        floor = asyncio.run(measure(n, hours, None, False))
        rate = asyncio.run(measure(n, hours, program, args.firmware))
        results[n] = {"sim_hours": hours, "sim_h_per_wall_s": round(rate, 2),
                      "floor_idle_sim_h_per_wall_s": round(floor, 2), "ratio_to_floor": round(rate / floor, 4)}
        print(f"{n:>3} board(s), {'firmware' if args.firmware else f'{args.tick_ms} ms loop'}: "
              f"{rate:.2f} simulated h per wall s (idle floor {floor:.2f}, ratio {rate / floor:.3f}); "
              f"24 h would take {24 / rate:.1f} s", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
