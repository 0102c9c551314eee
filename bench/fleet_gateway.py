"""Benchmark: the largest fleet of virtual boards this machine runs with the gateway keeping up.

Method. For each step (e.g. 10, 50, 100, ... boards) a fresh fleet of provisioned streetlights
(real firmware on MicroPython wasm, one Node host per CPU core, speed 1 = real time, the
realistic setting) starts ``lead`` virtual seconds before a window boundary, each board on its
own pty, with one gateway subprocess reading every pty (``[sim_clock]`` at speed 1). All boards
close their window at the same instant: a synchronised burst, the worst case for the gateway.
During the step the total outbox depth (frame files on the boards' flash not yet acknowledged)
is sampled every 0.5 s. The gateway **keeps up** when, ``settle`` seconds after the boundary,
every board's window report is in SQLite and the outbox depth is back to 0 (no backlog left). The
sweep stops at the first step that does not keep up or at ``--max``.

RSS per board = (RSS of the Node hosts with the fleet - RSS of the same number of empty hosts,
measured in the same run) / boards. The floor printed next to it is the empty host.

    python bench/fleet_gateway.py [--short] [--steps 10,50,100,200,500,1000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.registry import Registry  # noqa: E402
from hil.scenarios.outbox import frame_files  # noqa: E402
from hil.sim.fleet import Fleet  # noqa: E402
from hil.sim.host import SimHost  # noqa: E402

WINDOW_S = 900


def outbox_depth_of(flash: Path) -> int:
    """Frame files waiting in one board's outbox."""
    return len(frame_files(flash / "outbox"))


def outbox_depth(flash_root: Path) -> int:
    """Frame files waiting in every board's outbox."""
    return sum(outbox_depth_of(d) for d in flash_root.iterdir())


async def empty_host_rss() -> int:
    """RSS of a Node host with no board (the floor)."""
    host = SimHost(speed=1.0)
    await host.start()
    try:
        return int((await host.ping())["rss"])
    finally:
        await host.close()


async def step(count: int, work: Path, settle_s: float, drain_grace_s: float = 0.0) -> dict[str, object]:
    """Run one fleet of ``count`` boards through one window boundary with a gateway.

    ``drain_grace_s``: after ``settle_s``, wait up to this much longer for the boards' outboxes to empty
    (``--short``: on a loaded CI machine the gateway may start after the boards sent their boot reports,
    which then wait for the boards' resend backoff, 5 s doubling; the full bench keeps the strict rule).
    """
    work.mkdir(parents=True)
    lead_s = 4 + 0.1 * count  # boots and gateway start must fit before the boundary
    boundary_ms = (int(time.time()) // WINDOW_S + 2) * WINDOW_S * 1000
    fleet = Fleet("streetlight-esp32", count=count, flash_root=work / "flash", speed=1.0,
                  start_ms=boundary_ms - int(lead_s * 1000), seed=1)
    (work / "flash").mkdir()
    gw: subprocess.Popen[str] | None = None
    t0 = time.monotonic()
    try:
        await fleet.start()
        started_s = time.monotonic() - t0
        reg = Registry(work / "data" / "registry")
        for b in fleet.boards:
            ident = json.loads(b.identity_path.read_text())
            reg.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"], lon=ident["lon"],
                    key=bytes.fromhex(ident["key"]))
        reg.close()
        w0 = time.time()
        virtual_at = (await fleet.boards[0].state())["now"] / 1000.0
        wall_at = (w0 + time.time()) / 2
        cfg = work / "gateway.toml"
        cfg.write_text('[gateway]\nid = "gw-fleet"\ndata_dir = "data"\n[storage]\nbatch_ms = 50\n'
                       '[http]\nenabled = false\n%s[sim_clock]\nspeed = 1.0\nvirtual_at = %r\nwall_at = %r\n'
                       % ("".join('[[serial]]\nport = "%s"\n' % b.data_path for b in fleet.boards),
                          virtual_at, wall_at))
        log = (work / "gw.log").open("w")
        gw = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(cfg)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        assert gw.stdout is not None
        end = time.monotonic() + 60
        # poll() so a gateway that hangs without printing cannot hang the bench (select() cannot
        # take descriptors above 1023, and a big fleet holds thousands of ptys).
        poller = select.poll()
        poller.register(gw.stdout, select.POLLIN)
        while not (poller.poll(200) and "ready" in gw.stdout.readline()):
            if gw.poll() is not None or time.monotonic() > end:
                raise RuntimeError("gateway did not start:\n" + (work / "gw.log").read_text()[-3000:])
        # Wall time of the boundary as seen by the first board's clock.
        boundary_wall = wall_at + (boundary_ms / 1000.0 - virtual_at)
        depths: list[int] = []
        while time.time() < boundary_wall + settle_s or (
                time.time() < boundary_wall + settle_s + drain_grace_s and (not depths or depths[-1] > 0)):
            depths.append(outbox_depth(work / "flash"))
            await asyncio.sleep(0.5)
        rss = await fleet.rss_bytes()
        final_depth = outbox_depth(work / "flash")
        waiting = {b.device_id for b in fleet.boards if outbox_depth_of(b.flash_dir) > 0}
        db = work / "data" / "reports.sqlite"
        with_win: set[str] = set()
        if db.exists():
            conn = sqlite3.connect(db)
            with_win = {r[0] for r in conn.execute("SELECT DISTINCT device FROM reports WHERE type = 'win'")}
            conn.close()
        stored = len(with_win)
        # A board with neither a stored window report nor a waiting frame has not closed its window
        # yet: the simulator, not the gateway, is behind real time.
        not_closed = sum(1 for b in fleet.boards if b.device_id not in with_win and b.device_id not in waiting)
    finally:
        if gw is not None:
            gw.terminate()
            try:
                gw.wait(20)
            except subprocess.TimeoutExpired:
                gw.kill()
                gw.wait(10)
        await fleet.stop()
    return {"boards": count, "processes": len(fleet.hosts), "start_s": round(started_s, 1),
            "boards_with_win_stored": stored, "boards_not_closed_window": not_closed,
            "max_outbox_depth": max(depths, default=0),
            "final_outbox_depth": final_depth, "keeps_up": stored == count and final_depth == 0,
            "rss_total_mb": round(rss / 2**20, 1), "hosts": len(fleet.hosts), "_rss": rss}


async def sweep(counts: list[int], settle_s: float, work: Path, drain_grace_s: float = 0.0) -> dict[str, object]:
    floor_rss = await empty_host_rss()
    steps: list[dict[str, object]] = []
    for n in counts:
        r = await step(n, work / ("step-%d" % n), settle_s, drain_grace_s)
        rss = int(r.pop("_rss"))  # type: ignore[call-overload]
        r["rss_per_board_mb"] = round((rss - floor_rss * int(r["hosts"])) / n / 2**20, 2)  # type: ignore[call-overload]
        steps.append(r)
        print("%(boards)d boards: win stored %(boards_with_win_stored)d, outbox max %(max_outbox_depth)d "
              "final %(final_outbox_depth)d, window not closed (sim behind) %(boards_not_closed_window)d, "
              "keeps up %(keeps_up)s, %(rss_per_board_mb)s MB RSS per board" % r,
              flush=True)
        if not r["keeps_up"]:
            break
    ok = [int(s["boards"]) for s in steps if s["keeps_up"]]  # type: ignore[call-overload]
    return {"bench": "fleet_gateway", "floor_empty_host_rss_mb": round(floor_rss / 2**20, 1),
            "largest_keeping_up": max(ok, default=0), "steps": steps}


def raise_fd_limit() -> None:
    """Two ptys per board here and one per board in the gateway: lift the soft open-files limit
    to the hard one (children inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="one step of 5 boards (CI)")
    ap.add_argument("--steps", default="10,50,100,200,500,1000", help="comma-separated board counts")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after the boundary to drain")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    raise_fd_limit()
    try:
        counts = [5] if args.short else [int(x) for x in args.steps.split(",")]
    except ValueError:
        ap.error("--steps must be comma-separated integers, got %r" % args.steps)
    if not counts or min(counts) < 1 or args.settle <= 0:
        ap.error("board counts must be >= 1 and --settle > 0")
    with tempfile.TemporaryDirectory(prefix="civicedge-fleetgw-") as tmp:
        result = asyncio.run(sweep(counts, 5.0 if args.short else args.settle, Path(tmp),
                                   drain_grace_s=25.0 if args.short else 0.0))
    if args.json:
        print(json.dumps(result))
    steps: list[dict[str, object]] = result["steps"]  # type: ignore[assignment]
    # RSS of the largest step that kept up (else of the failed first step).
    last = next((r for r in reversed(steps) if r["keeps_up"]), steps[-1])
    print("largest fleet with the gateway keeping up: %s boards; %s MB RSS per board (floor: empty host %s MB)"
          % (result["largest_keeping_up"], last["rss_per_board_mb"], result["floor_empty_host_rss_mb"]))
    return 0 if result["largest_keeping_up"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
