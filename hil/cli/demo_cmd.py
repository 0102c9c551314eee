"""``civicedge demo``: the whole path on one laptop, on embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hil.demo.runner import Demo, DemoError, DemoOptions
from hil.demo.summary import render
from hil.errors import HilError


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="run virtual boards, the gateway, SQLite and the dashboard on this machine",
        description=(
            "Start a virtual fleet (streetlights reporting over a serial pty, waste bins over the virtual "
            "BLE radio) running the real firmware on MicroPython, a gateway with a SQLite store and the web "
            "dashboard, and show a live summary. Everything stays on this machine. Ctrl-C stops it cleanly."
        ),
    )
    p.add_argument("--streetlights", type=int, default=3, metavar="N", help="virtual streetlights (default 3)")
    p.add_argument("--bins", type=int, default=2, metavar="N", help="virtual waste bins (default 2)")
    p.add_argument("--speed", type=float, default=30.0,
                   help="virtual seconds per wall second (default 30: a 15-min window every 30 s); a busy "
                        "machine runs the boards slower than asked")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many wall seconds (default: run until Ctrl-C)")
    p.add_argument("--http-port", type=int, default=8080, help="dashboard port (default 8080; 0 = any free port)")
    p.add_argument("--workdir", type=Path, default=Path("var/demo"),
                   help="flash dirs, registry, SQLite and logs (recreated each run; default var/demo)")
    p.add_argument("--seed", type=int, default=7, help="scenery and privacy-noise seed (simulation only)")
    p.add_argument("--start", default=None, metavar="ISO",
                   help="virtual start time, e.g. 2026-11-22T18:00:00Z (default: today 18:00 UTC)")
    p.add_argument("--bin-sleep", choices=("awake", "deep"), default="awake",
                   help="bins stay awake (default) or deep-sleep between readings as on the street; deep sleep "
                        "at high --speed leaves the gateway too little wall time to connect")
    p.add_argument("--plain", action="store_true", help="print a summary line per interval instead of a live table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 on a clean stop, 1 when it could not start."""
    console = Console(stderr=False)
    try:
        start = None if args.start is None else dt.datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    except ValueError as exc:
        console.print(f"[red]error:[/red] bad --start: {exc}")
        return 2
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    options = DemoOptions(streetlights=args.streetlights, bins=args.bins, speed=args.speed,
                          duration_s=args.duration, workdir=args.workdir, http_port=args.http_port,
                          seed=args.seed, start=start, bin_sleep=args.bin_sleep)
    try:
        options.validate()
    except DemoError as exc:  # bad arguments: exit 2, like argparse's own
        console.print(f"[red]error:[/red] {exc}")
        return 2
    try:
        return asyncio.run(_main(options, console, plain=args.plain or not console.is_terminal))
    except DemoError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


async def _main(options: DemoOptions, console: Console, *, plain: bool) -> int:
    demo = Demo(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A closed terminal (SIGHUP) stops the demo like Ctrl-C: nothing is left running behind it.
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    try:
        console.print(f"starting {options.streetlights} streetlight(s) and {options.bins} bin(s) "
                      f"at {options.speed:g}x real time in {options.workdir} ...")
        await demo.start()
        console.print(f"gateway up: dashboard {demo.dashboard_url}  (admin token in {demo.workdir / 'admin.token'})")
        await _watch(demo, console, stop, t0, plain=plain, duration=options.duration_s)
    except HilError as exc:
        console.print(f"[red]error:[/red] {exc}")
        await demo.stop()
        return 1
    except BaseException:
        await asyncio.shield(demo.stop())  # any other failure: stop the gateway, boards and radio too
        raise
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    console.print("stopping: gateway drains, boards and radio shut down ...")
    status = await demo.stop()
    summary = demo.summary()
    console.print(f"stopped. {summary.total_reports} reports and {summary.total_alarms} alarms stored in "
                  f"{demo.workdir / 'data' / 'reports.sqlite'}; gateway exit status {status}")
    return 0 if status == 0 else 1


async def _watch(demo: Demo, console: Console, stop: asyncio.Event, t0: float, *, plain: bool,
                 duration: float | None) -> None:
    async def frame() -> tuple[Table, str]:
        now = (await demo.boards[0].state())["now"] / 1000.0
        summary = demo.summary()
        line = (f"[{time.monotonic() - t0:5.0f}s] virtual {dt.datetime.fromtimestamp(now, dt.timezone.utc):%H:%M} "
                f"reports={summary.total_reports} alarms={summary.total_alarms}")
        return render(summary, virtual_now_s=now, url=demo.dashboard_url, elapsed_s=time.monotonic() - t0), line

    def done() -> bool:
        return stop.is_set() or (duration is not None and time.monotonic() - t0 >= duration)

    if plain:
        while not done():
            if not demo.gateway_alive():
                raise DemoError(f"the gateway stopped unexpectedly; see {demo.gateway_log}")
            _, line = await frame()
            console.print(line)
            await _sleep_or_stop(stop, 5.0)
        return
    table, _ = await frame()
    with Live(table, console=console, refresh_per_second=2) as live:
        while not done():
            if not demo.gateway_alive():
                raise DemoError(f"the gateway stopped unexpectedly; see {demo.gateway_log}")
            table, _ = await frame()
            live.update(table)
            await _sleep_or_stop(stop, 1.0)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


if __name__ == "__main__":
    sys.exit(0)
