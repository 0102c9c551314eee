"""Benchmark: how many virtual boards one machine runs, RSS per board, start time per board.

Each board boots the real firmware (boot.py, main.py) from its own flash directory in one Node
process per CPU core. By default boards are unprovisioned, so main.py idles at the REPL (a fleet
waiting for provisioning); ``--provisioned`` runs the firmware's tasks, which is CPU-bound (see
docs/simulator.md, "Performance"). The floor, measured in the same run, is an empty Node host
(RSS and start time with no board), so the per-board numbers are what a board adds.

    python bench/sim_fleet.py [--count N] [--short] [--board NAME] [--no-firmware]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil.sim.fleet import Fleet  # noqa: E402
from hil.sim.host import SimHost  # noqa: E402


async def floor() -> tuple[float, int]:
    """Start time and RSS of an empty host."""
    t0 = time.perf_counter()
    host = SimHost(speed=1.0)
    await host.start()
    started = time.perf_counter() - t0
    rss = int((await host.ping())["rss"])
    await host.close()
    return started, rss


async def run(count: int, board: str, install: bool, processes: int | None, provision: bool) -> dict[str, object]:
    empty_start, empty_rss = await floor()
    fleet = Fleet(board, count=count, processes=processes, install=install, paced=False, speed=1.0,
                  provision=provision)
    t0 = time.perf_counter()
    try:
        await fleet.start()
        wall = time.perf_counter() - t0
        await asyncio.sleep(2)  # let every board reach its steady state
        rss = await fleet.rss_bytes()
        running = 0
        for b in fleet.boards:
            if (await b.state())["state"] == "running":
                running += 1
    finally:
        await fleet.stop()
    per_board_rss = (rss - empty_rss * len(fleet.hosts)) / count
    return {
        "boards": count, "running": running, "processes": len(fleet.hosts),
        "floor_host_start_s": round(empty_start, 3), "floor_host_rss_mb": round(empty_rss / 2**20, 1),
        "fleet_start_wall_s": round(wall, 2), "start_per_board_ms": round(1000 * wall / count, 1),
        "boot_median_ms": round(1000 * statistics.median(fleet.start_seconds), 1),
        "rss_total_mb": round(rss / 2**20, 1), "rss_per_board_mb": round(per_board_rss / 2**20, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--short", action="store_true", help="20 boards (CI)")
    ap.add_argument("--board", default="streetlight-esp32")
    ap.add_argument("--no-firmware", action="store_true", help="empty flash (interpreter only)")
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--provisioned", action="store_true",
                    help="provision every board so the firmware runs its tasks (CPU-bound: use small counts)")
    args = ap.parse_args()
    count = 20 if args.short else args.count
    result = asyncio.run(run(count, args.board, not args.no_firmware, args.processes, args.provisioned))
    print(json.dumps(result))
    print(f"{result['running']}/{count} boards running in {result['processes']} processes; "
          f"{result['rss_per_board_mb']} MB RSS per board (floor: empty host {result['floor_host_rss_mb']} MB); "
          f"{result['start_per_board_ms']} ms start per board (floor: empty host {result['floor_host_start_s']} s)")
    return 0 if result["running"] == count else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
