"""``civicedge demo``: the whole path on one laptop, on embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from hil.cli.extras import RADIO_MODULES, require_modules
from hil.pace import PaceWatch
from hil.demo.runner import SILENT_AFTER_S, Demo, DemoError, DemoOptions, HostExit
from hil.demo.summary import render
from hil.errors import HilError
from hil.sim.errors import SimError, SimTimeoutError
from hil.workdir import WorkdirInUseError


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HEALTH_EVERY_S = 5.0  # how often the watch asks the gateway's /healthz
HEALTH_GRACE_S = 10.0  # first ask after this: the links come up in the first seconds ("link ble is down")
HOST_EXIT_GRACE_S = 1.0  # after a host ended, how long the others may take to be seen ending too (killed together)

EXIT_STATUSES = (
    "Exit status: 0 stopped cleanly; 1 could not start, the gateway failed, a simulator host process "
    "ended during the run (crash, out of memory, kill), or the report store had failures during the run "
    "(the gateway's /healthz said so; reports may be missing); 2 bad arguments (also a --workdir that is "
    "not a demo directory or cannot be created) or the work directory is in use by another demo or scenario run; 128 + the signal number (130 for "
    "Ctrl-C) when stopped while starting."
)


def board_count(text: str) -> int:
    """argparse type of ``--streetlights`` / ``--bins``: a whole number of boards, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of boards (0 or more), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more boards, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="run virtual boards, the gateway, SQLite and the dashboard on this machine",
        description=(
            "Start a virtual fleet (streetlights reporting over a serial pty, waste bins over the virtual "
            "BLE radio) running the real firmware on MicroPython, a gateway with a SQLite store and the web "
            "dashboard, and show a live summary. Everything stays on this machine. Ctrl-C stops it cleanly, "
            "also while it starts. The demo warns when the gateway reports itself degraded (/healthz) and "
            "when this machine runs the boards at less than 80 % of --speed for 30 s (the gateway's clock "
            "follows the boards, so the whole demo then runs slower than asked). When a simulator host process "
            "(one or two of them, each running some of the boards) ends during the run, the demo names it (every "
            "one that ended), its exit status and its boards, and stops at once, cleanly (the gateway drains, "
            "the summary is printed): "
            "with part of the fleet silent the dashboard and summary no longer show the demo's city, and "
            "running on would hide the failure until Ctrl-C. " + EXIT_STATUSES
        ),
    )
    p.add_argument("--streetlights", type=board_count, default=3, metavar="N",
                   help="virtual streetlights, 0 or more (default 3)")
    p.add_argument("--bins", type=board_count, default=2, metavar="N", help="virtual waste bins, 0 or more (default 2)")
    p.add_argument("--speed", type=float, default=30.0,
                   help="virtual seconds per wall second (default 30: a 15-min window every 30 s); a busy "
                        "machine runs the boards slower than asked (the gateway's clock follows them): the "
                        "demo warns then, use a lower --speed")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many wall seconds (default: run until Ctrl-C)")
    p.add_argument("--http-port", type=int, default=8080, help="dashboard port (default 8080; 0 = any free port)")
    p.add_argument("--workdir", type=Path, default=Path("var/demo"),
                   help="flash dirs, registry, SQLite and logs (emptied each run, may be a mount point; one demo at a "
                        "time; default var/demo)")
    p.add_argument("--seed", type=int, default=7, help="scenery and privacy-noise seed (simulation only; default 7)")
    p.add_argument("--start", default=None, metavar="ISO",
                   help="virtual start time, e.g. 2026-11-22T18:00:00Z (default: today 17:45 UTC: bins release fill at 6-hour marks)")
    p.add_argument("--bin-sleep", choices=("awake", "deep"), default="awake",
                   help="bins stay awake (default) or deep-sleep between readings as on the street; deep sleep "
                        "at high --speed leaves the gateway too little wall time to connect")
    p.add_argument("--plain", action="store_true", help="print a summary line per interval instead of a live table")
    p.set_defaults(func=run)


def _consoles() -> tuple[Console, Console]:
    """Output on stdout, errors on stderr; not wrapped when not a terminal (a path is never split)."""
    out, err = Console(), Console(stderr=True)
    for console in (out, err):
        if not console.is_terminal:
            console.soft_wrap = True
    return out, err


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run(args: argparse.Namespace) -> int:
    """Run the demo; see the exit statuses in the command's help (:data:`EXIT_STATUSES`)."""
    if args.bins:
        require_modules(RADIO_MODULES)  # the bins' virtual radio: its extra named before anything starts
    console, err = _consoles()
    try:
        start = None if args.start is None else dt.datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    except ValueError as exc:
        err.print(f"[red]error:[/red] bad --start: {escape(str(exc))}")
        return 2
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    options = DemoOptions(streetlights=args.streetlights, bins=args.bins, speed=args.speed,
                          duration_s=args.duration, workdir=args.workdir, http_port=args.http_port,
                          seed=args.seed, start=start, bin_sleep=args.bin_sleep)
    try:
        options.validate()
    except DemoError as exc:  # bad arguments: exit 2, like argparse's own
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    try:
        return asyncio.run(_main(options, console, err, plain=args.plain or not console.is_terminal))
    except HilError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        return 1


async def _main(options: DemoOptions, console: Console, err: Console, *, plain: bool) -> int:
    demo = Demo(options)
    stop = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    # A closed terminal (SIGHUP) stops the demo like Ctrl-C: nothing is left running behind it.
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    t0 = time.monotonic()
    watch = _Watch(demo, options.speed)
    try:  # the work directory first: a bad or busy one is told before anything is said to start
        demo.prepare()
    except HilError as exc:  # not a demo directory, cannot be created, in use: a bad --workdir, nothing started
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        return 2
    try:
        console.print(f"starting {options.streetlights} streetlight(s) and {options.bins} bin(s) "
                      f"at {options.speed:g}x real time in {escape(str(options.workdir))} ...")
        if not await _start_or_stop(demo, stop):
            console.print("interrupted while starting: stopping what was started ...")
            await demo.stop()
            console.print("stopped.")
            return 128 + (received[0] if received else signal.SIGINT)
        console.print(f"gateway up: dashboard {demo.dashboard_url}  "
                      f"(admin token in {escape(str(demo.workdir / 'admin.token'))})")
        watch.next_health = time.monotonic() + HEALTH_GRACE_S
        exited = await _watch(demo, watch, console, stop, t0, plain=plain, duration=options.duration_s, err=err)
        if exited:
            exited = await _all_exited(demo, exited)
        for i, host in enumerate(exited, 1):  # at once, before the drain: what ended the run
            err.print(f"[red]error:[/red] {escape(host.message())}" + ("; stopping the demo" if i == len(exited) else ""))
        if demo.gateway_alive():  # a last look: the store's failed commits since the start, however brief
            failed = await asyncio.to_thread(_commit_failures, demo.dashboard_url + "metrics")
            if failed:
                watch.store_failures.append(f"{failed} report batch(es) failed to commit")
    except WorkdirInUseError as exc:  # another demo (or scenario run) holds it: nothing was started
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        await demo.stop()
        return 2
    except HilError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
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
    console.print(f"stopped. {_plural(summary.total_reports, 'report')} and {_plural(summary.total_alarms, 'alarm')} "
                  f"stored in {escape(str(demo.workdir / 'data' / 'reports.sqlite'))}; gateway exit status {status}")
    if watch.store_failures:
        err.print(f"[red]error:[/red] the report store had failures during the run "
                  f"({escape('; '.join(watch.store_failures))}): reports may be missing; see "
                  f"{escape(str(demo.gateway_log))}")
        return 1
    if exited:
        return 1
    return 0 if status == 0 else 1


async def _start_or_stop(demo: Demo, stop: asyncio.Event) -> bool:
    """Start the demo; False when a stop signal came first (the start is cancelled then).

    Raises:
        HilError: the start failed.
    """
    starting = asyncio.ensure_future(demo.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping anyway: what failed does not matter
        await starting
    return False


class _Watch:
    """The gateway's health and the boards' pace, told once per change."""

    def __init__(self, demo: Demo, speed: float) -> None:
        self.demo = demo
        self.speed = speed
        self.pace = PaceWatch(speed)
        self.pace_warned = False
        self.reasons: tuple[str, ...] = ()
        self.store_failures: list[str] = []
        self.next_health = 0.0
        self.silent: set[tuple[int, int]] = set()  # (number, pid) of hosts said not to answer

    def host_lines(self) -> list[str]:
        """A line when a simulator host stops answering (hung: kill -STOP, swapping) and when it answers again."""
        now = set(self.demo.silent_hosts())
        lines = [f"[yellow]warning:[/yellow] simulator host {n} (pid {pid}) has not answered for "
                 f"{SILENT_AFTER_S:g} s; its boards are not running" for n, pid in sorted(now - self.silent)]
        lines += [f"simulator host {n} (pid {pid}) is answering again" for n, pid in sorted(self.silent - now)]
        if self.silent - now:  # its stall is no measure of the machine's pace: measure afresh
            self.pace = PaceWatch(self.speed)
        self.silent = now
        return lines

    def pace_line(self, virtual_ms: float) -> str | None:
        """The warning when the boards run slower than asked (once); none while a host does not answer:
        a hung host is no reason to lower --speed."""
        achieved = self.pace.check(time.monotonic(), virtual_ms)
        if achieved is None or self.pace_warned or self.silent:
            return None
        self.pace_warned = True
        return (f"[yellow]warning:[/yellow] the machine runs the boards at {achieved:.3g}x, not the requested "
                f"{self.speed:g}x (the gateway's clock follows them): the demo runs slower than asked; "
                "use a lower --speed")

    async def health_line(self) -> str | None:
        """Poll /healthz (every :data:`HEALTH_EVERY_S`); a line when its reasons changed."""
        if time.monotonic() < self.next_health:
            return None
        self.next_health = time.monotonic() + HEALTH_EVERY_S
        reasons = await asyncio.to_thread(_healthz_reasons, self.demo.dashboard_url + "healthz")
        if reasons is None or tuple(reasons) == self.reasons:
            return None
        self.reasons = tuple(reasons)
        for reason in reasons:  # not "store not answering": a slow read of /healthz loses nothing
            if reason.startswith("report store commits failing") and reason not in self.store_failures:
                self.store_failures.append(reason)
        if not reasons:
            return "gateway healthy again"
        return f"[yellow]warning:[/yellow] gateway degraded: {escape('; '.join(reasons))}"


def _http_get(url: str) -> tuple[int, bytes] | None:
    """GET ``url`` from the gateway: its status and body (an error status too), or None if it did not answer."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # e.g. /healthz's 503: degraded, with the reasons in the body
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None


def _healthz_reasons(url: str) -> list[str] | None:
    """The gateway's degradation reasons ([] when ok), or None when it did not answer."""
    got = _http_get(url)
    if got is None:
        return None
    try:
        reasons = json.loads(got[1]).get("reasons", [])
    except (ValueError, AttributeError):
        return None
    return [str(r) for r in reasons]


COMMIT_FAILURES = "civicedge_store_commit_failures_total"


def _commit_failures(url: str) -> int | None:
    """``civicedge_store_commit_failures_total`` from the gateway's /metrics, or None if unreadable."""
    got = _http_get(url)
    if got is None or got[0] != 200:
        return None
    try:
        for family in text_string_to_metric_families(got[1].decode("utf-8", "replace")):
            for sample in family.samples:
                if sample.name == COMMIT_FAILURES:
                    return int(sample.value)
    except (ValueError, OverflowError):  # not the exposition format (or NaN, inf): unknown, as no answer
        return None
    return None


async def _watch(demo: Demo, watch: _Watch, console: Console, stop: asyncio.Event, t0: float, *, plain: bool,
                 duration: float | None, err: Console | None = None) -> list[HostExit]:
    """Show the fleet until the duration or a stop signal; returns early the simulator hosts that ended.

    Raises:
        DemoError: the gateway stopped.
    """
    last: list[tuple[Table, str]] = []

    async def frame() -> tuple[Table, str]:
        now: float | None
        try:
            now = await demo.virtual_now_s()
        except SimTimeoutError:  # no host answers (hung): said below, the last frame stays
            if not last:
                raise
            now = None
        for note in watch.host_lines():
            (err or console).print(note)
        if now is None:
            return last[0]
        summary = demo.summary()
        line = (f"[{time.monotonic() - t0:5.0f}s] virtual {dt.datetime.fromtimestamp(now, dt.timezone.utc):%H:%M} "
                f"reports={summary.total_reports} alarms={summary.total_alarms}")
        for pace_or_health in (watch.pace_line(now * 1000), await watch.health_line()):
            if pace_or_health is not None:
                console.print(pace_or_health)
        got = render(summary, virtual_now_s=now, url=demo.dashboard_url, elapsed_s=time.monotonic() - t0), line
        last[:] = [got]
        return got

    def done() -> bool:
        return stop.is_set() or (duration is not None and time.monotonic() - t0 >= duration)

    async def look() -> tuple[Table, str] | list[HostExit]:
        """A frame, or the hosts that ended (a host ending during the frame's questions is one too)."""
        if not demo.gateway_alive():
            raise DemoError(f"the gateway stopped unexpectedly; see {demo.gateway_log}")
        exited = await demo.exited_hosts()
        if exited:
            return exited
        try:
            return await frame()
        except SimError:  # also a ping not answered: a host that ended is named, not the unanswered ping
            exited = await demo.exited_hosts()
            if exited:
                return exited
            raise

    # Woken at once by a host's end, not only at the next frame.
    wake = [stop, *demo.host_ended_events()]
    if plain:
        while not done():
            got = await look()
            if isinstance(got, list):
                return got
            console.print(got[1], markup=False, highlight=False)
            await _sleep_or_wake(wake, 5.0)
        return []
    got = await look()
    if isinstance(got, list):
        return got
    with Live(got[0], console=console, refresh_per_second=2) as live:
        while not done():
            got = await look()
            if isinstance(got, list):
                return got
            live.update(got[0])
            await _sleep_or_wake(wake, 1.0)
    return []


async def _all_exited(demo: Demo, exited: list[HostExit]) -> list[HostExit]:
    """Every host that ended, not only the first seen: hosts killed together (an OOM kill, a closed
    session) end within moments of each other. Waits at most :data:`HOST_EXIT_GRACE_S` for the others."""
    others = [e for e in demo.host_ended_events() if not e.is_set()]
    if others:
        waits = [asyncio.ensure_future(e.wait()) for e in others]
        try:
            await asyncio.wait(waits, timeout=HOST_EXIT_GRACE_S)
        finally:
            for w in waits:
                w.cancel()
    return await demo.exited_hosts() or exited


async def _sleep_or_wake(events: list[asyncio.Event], seconds: float) -> None:
    """Sleep ``seconds``, or less when one of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


if __name__ == "__main__":
    sys.exit(0)
