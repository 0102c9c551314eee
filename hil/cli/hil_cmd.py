"""``civicedge hil``: integrator scenarios on virtual boards.

``civicedge hil run SCENARIO [--junit FILE] [--html FILE] [--speed X] [--workdir DIR]`` runs a scenario
(a file, or the name of a shipped example) and exits 0 when every expectation holds, 1 when one does
not (or the run failed or was interrupted), 2 on bad input. ``hil list`` shows the shipped examples,
``hil validate`` checks scenario files without running them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import errno
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hil.cli.extras import RADIO_MODULES, require_modules
from hil.cli.text import plain
from hil.errors import HilError
from hil.scenarios import ScenarioError, list_examples, load_scenario
from hil.scenarios.model import Scenario
from hil.scenarios.reports import output_problem, write_html, write_junit, write_junit_error
from hil.scenarios.runner import Progress as RunProgress
from hil.scenarios.errors import ScenarioRunError
from hil.scenarios.hints import deep_sleep_warnings
from hil.scenarios.loader import MAX_SPEED, MIN_SPEED, SCENARIO_ID, find_scenario, read_toml_text
from hil.scenarios.runner import ScenarioResult, ScenarioRun, check_workdir, default_timeout_s, run_scenario
from hil.workdir import WorkdirError, WorkdirLock, lock_workdir


class _Console(Console):
    """A rich console that goes quiet when its reader goes away, instead of exiting.

    rich's default ``on_broken_pipe`` raises ``SystemExit(1)``, from inside the run's progress
    callback: the run would stop half way and write no JUnit. A log reader that closes its pipe
    (``2>&1 | head -3``) should not decide the outcome of a run: the output to that stream is
    dropped (its file descriptor now points at /dev/null, so the interpreter's last flush and the
    log handler do not fail either) and the run goes on to its reports and its own exit status.
    A hung-up terminal (its pty closed: writes fail with ``EIO``) is treated the same way, so a
    closed terminal or SSH session still gets its JUnit and HTML reports.
    When not writing to a terminal (CI logs), lines are not wrapped at 80 columns.
    """

    def __init__(self, *, stderr: bool) -> None:
        super().__init__(stderr=stderr)
        self.broken = False
        self.soft_wrap = not self.is_terminal

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            self.on_broken_pipe()

    def on_broken_pipe(self) -> None:
        """Stop writing to this stream; the run goes on."""
        self.quiet = True
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.file.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):  # not a real file descriptor: quiet is enough
            pass


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``hil`` command group (``run``, ``list``, ``validate``)."""
    p = sub.add_parser("hil", help="hardware-in-the-loop scenarios (run, list, validate)",
                       description="Run integrator scenarios: virtual boards, stimuli and faults, a real gateway, "
                                   "expectations on what it stores. See docs/scenarios.md.")
    hs = p.add_subparsers(dest="hil_command", metavar="SUBCOMMAND")
    run = hs.add_parser("run", help="run a scenario and check its expectations",
                        description="Run a scenario file (or a shipped example by name). Exit 0: every expectation "
                                    "held; 1: one did not, or the run failed/was interrupted; 2: bad input.")
    run.add_argument("scenario", help="scenario TOML file or shipped example name (see `civicedge hil list`)")
    run.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    run.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report with plots")
    run.add_argument("--speed", type=float, default=None,
                     help="virtual seconds per wall second (default: the speed the scenario file sets)")
    run.add_argument("--workdir", type=Path, default=None,
                     help="flash dirs, registry, SQLite, logs (recreated; default var/scenarios/<name>)")
    run.add_argument("--drain", type=float, default=30.0, metavar="SECONDS",
                     help="wall seconds to wait for unacknowledged reports after the duration (default 30)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="wall seconds the whole run may take; past it the run stops and fails with an error "
                          "(default: 4x duration/speed + 120 s + 10 s per board + the drain)")
    run.add_argument("--plain", action="store_true", help="no live progress bar (a line every few seconds)")
    run.set_defaults(func=cmd_run)
    ls = hs.add_parser("list", help="list the shipped example scenarios",
                       description="List the example scenarios shipped with civicedge: name, virtual duration, "
                                   "speed and what each shows. Run one with `civicedge hil run NAME`.")
    ls.set_defaults(func=cmd_list)
    val = hs.add_parser("validate", help="check scenario files without running them",
                        description="Load and check scenario files (or shipped examples by name) without starting "
                                    "anything: boards, stimuli, timeline and expectations. Prints 'ok' or 'bad' "
                                    "with the reason per scenario, and warnings for valid scenarios likely to "
                                    "fail. Exit 0: all valid; 2: one is not (or does not exist).")
    val.add_argument("scenarios", nargs="+", help="scenario files or example names")
    val.set_defaults(func=cmd_validate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_list(args: argparse.Namespace) -> int:
    """Print the shipped examples with their descriptions."""
    for path in list_examples():
        try:
            sc = load_scenario(path)
            print(f"{sc.name:28s} {sc.duration_text:>5s} at {sc.speed:g}x  {sc.description}")
        except ScenarioError as exc:
            print(f"{path.stem:28s} INVALID: {exc}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Load each scenario; exit 2 when one is invalid."""
    status = 0
    for name in args.scenarios:
        try:
            sc = load_scenario(name)
            print(f"ok  {name}: {len(sc.device_ids)} board(s), {sc.expect.count()} expectation(s)", flush=True)
            for warning in deep_sleep_warnings(sc):  # valid, but likely to fail: say why before a run does
                print(f"warning: {name}: {warning}", file=sys.stderr)
        except ScenarioError as exc:
            print(f"bad {name}: {exc}", file=sys.stderr)
            status = 2
    return status


class _Signals:
    """SIGINT, SIGTERM and SIGHUP for the whole of ``hil run``, handled by phase.

    ``load`` (reading the scenario, checking options, taking the work directory): nothing was started,
    the signal raises :class:`KeyboardInterrupt` (SIGTERM and SIGHUP too), and the command exits 1
    with a JUnit "interrupted before it started" error. ``run``: the first signal stops the run cleanly
    (the run's ``stop`` event; the runner records it as interrupted) and says so on stderr. ``after``
    (the run returned: its result is printed and its reports are written): a first signal is only
    recorded, so a Ctrl-C at that moment cannot leave a report half written or replace the real one.

    A second signal, while the run stops or after a first one was recorded, forces the end: the
    gateway's process group is killed (a stopped or hung gateway would otherwise hold the clean stop
    for up to 20 s) and the command exits at once with 128 + the signal number (130 for Ctrl-C), no
    report written. A signal ignored when the command started (``nohup``, ``cmd &`` in a script) stays
    ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.phase = "load"
        self.received: list[str] = []
        self.installed = False
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._run: ScenarioRun | None = None

    def install(self) -> None:
        """Take over the three signals (main thread only; elsewhere Python does not deliver them),
        leaving alone those the command inherited as ignored."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            if signal.getsignal(sig) == signal.SIG_IGN:
                continue
            self._previous[sig] = signal.signal(sig, self._handle)
        self.installed = True

    def restore(self) -> None:
        """Put back the handlers from before :meth:`install` (one not set from Python: the default)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        self.installed = False

    def attach(self, loop: asyncio.AbstractEventLoop | None, stop: asyncio.Event | None) -> None:
        """Stop the run through ``stop`` on a signal (``None``: detach); one already received stops it now."""
        self._loop, self._stop = loop, stop
        if stop is not None and self.received:
            stop.set()

    def watch(self, run: ScenarioRun) -> None:
        """The run whose gateway a forced stop kills."""
        self._run = run

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.received and self.phase != "load":
            self._force(signum, name)
        self.received.append(name)
        if self.phase == "load":
            raise KeyboardInterrupt(name)
        if self.phase == "run":
            _say(plain(f"{name}: stopping… (press Ctrl-C again to force)\n", sys.stderr))
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    def _force(self, signum: int, name: str) -> None:
        """Kill the gateway's process group and exit now (the boards' hosts end when their pipes close)."""
        gateway = self._run.gateway if self._run is not None else None
        if gateway is not None and gateway.poll() is None:
            try:  # started in its own session (hil.children.spawn_child): its pid is its group's id
                os.killpg(gateway.pid, signal.SIGKILL)
            except OSError:  # it ended meanwhile
                pass
        _say(f"{name} again: forced stop, gateway killed, no report written\n")
        os._exit(128 + signum)


def _say(text: str) -> None:
    """Write to stderr from a signal handler: straight to the descriptor (the handler may run while
    ``sys.stderr`` is in the middle of a write, and a hung-up terminal must not raise here)."""
    try:
        # in the terminal's encoding, as sys.stderr writes (UTF-8 bytes are mojibake on a Latin-1 one)
        os.write(2, text.encode(getattr(sys.stderr, "encoding", None) or "utf-8", errors="backslashreplace"))
    except OSError:
        pass


def cmd_run(args: argparse.Namespace) -> int:
    """Run one scenario (see module docstring for exit codes).

    The result (expectation lines, PASSED/FAILED, report paths) goes to stdout; the banner, progress,
    warnings and errors to stderr, so ``hil run X > result.txt`` keeps the result.
    """
    out = _Console(stderr=False)
    err = _Console(stderr=True)
    signals = _Signals()
    signals.install()
    try:
        try:
            prepared = _prepare(args, out, err, signals)
        except KeyboardInterrupt as exc:
            signals.phase = "after"  # the report below is written whole
            return _interrupted_before_start(args, out, err, str(exc) or "SIGINT")
        if isinstance(prepared, int):
            return prepared
        return _execute(args, prepared, out, err, signals)
    finally:
        signals.restore()


def _interrupted_before_start(args: argparse.Namespace, out: _Console, err: _Console, signame: str) -> int:
    """A signal while the scenario loaded or the work directory was taken: nothing was started. As
    documented for an interrupted run: exit 1, and the JUnit report says so."""
    how = "" if signame == "SIGINT" else f" ({signame})"
    err.print(f"[yellow]interrupted[/yellow]{how} before the run started", highlight=False)
    if args.junit and output_problem(args.junit) is None:
        name = _suite_name(Path(str(args.scenario)))
        try:
            path = write_junit_error(args.junit, name=name, message=f"run interrupted before it started{how}",
                                     case_name="run", error_type="RunError")
            out.print(f"JUnit report: {path}", highlight=False)
        except OSError as exc:
            err.print(f"[red]error:[/red] cannot write the JUnit report: {exc}", highlight=False)
    return 1


def _suite_name(scenario: Path) -> str:
    """The scenario's ``name`` when its file parses far enough to have a valid one, else the file's
    stem: the JUnit suite of a bad-input report matches the one a good run of that file writes.

    Only called once the scenario's own error is said: a file too deeply nested to parse (a
    RecursionError traceback here before, instead of its report) gets the stem too."""
    import tomllib

    from gateway.small_files import NestedTooDeeplyError, loads_toml

    try:
        doc = loads_toml(read_toml_text(find_scenario(scenario), what="scenario file"))
        name = doc.get("name")
        if isinstance(name, str) and SCENARIO_ID.match(name):
            return name
    except (ScenarioError, tomllib.TOMLDecodeError, NestedTooDeeplyError, OSError):
        pass
    return scenario.stem or "scenario"


@dataclass
class _Prepared:
    """What :func:`_prepare` checked and took for a run."""

    scenario: Scenario
    speed: float
    workdir: Path
    lock: WorkdirLock
    timeout_s: float


def _prepare(args: argparse.Namespace, out: _Console, err: _Console, signals: _Signals) -> _Prepared | int:
    """Load and check the scenario and options, take the work directory: a :class:`_Prepared`, or the
    exit status of bad input (its JUnit error report written). Switches ``signals`` to the run phase
    as its last step; until then a signal raises :class:`KeyboardInterrupt` here."""
    junit_usable = True  # a JUnit error report may be written there (even when other input is bad)
    problems: list[str] = []
    for option, path in (("--junit", args.junit), ("--html", args.html)):
        problem = None if path is None else output_problem(path)
        if problem is not None:
            problems.append(f"{option}: {problem}")
            junit_usable = junit_usable and option != "--junit"
    scenario_file = Path(str(args.scenario))
    if args.junit is not None and scenario_file.is_file() and _same_file(args.junit, scenario_file):
        problems.append(f"--junit: {args.junit} is the scenario file itself; give another file name")
        junit_usable = False
    if args.junit is not None and args.html is not None and _same_file(args.junit, args.html):
        problems.append(f"--junit and --html name the same file {args.html}; give two file names")
    try:
        if problems:
            raise ScenarioError("; ".join(problems), key="output")
        scenario = load_scenario(args.scenario)
        if any(group.link == "ble" for group in scenario.boards):
            require_modules(RADIO_MODULES)  # the virtual radio's extra, named before the banner
        speed = args.speed if args.speed is not None else scenario.speed
        if not MIN_SPEED <= speed <= MAX_SPEED:  # also NaN; the file's speed too (the gateway's clock bound)
            what = "--speed" if args.speed is not None else f"the scenario's speed ({scenario.path})"
            raise ScenarioError(f"{what} must be within [{MIN_SPEED:g}, {MAX_SPEED:g}], got {speed:g}", key="speed")
        if not (math.isfinite(args.drain) and args.drain >= 0):
            raise ScenarioError(f"--drain must be a finite number >= 0, got {args.drain:g}", key="drain")
        if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
            raise ScenarioError(f"--timeout must be a finite number > 0 seconds, got {args.timeout:g}", key="timeout")
        workdir = check_workdir(args.workdir or Path("var/scenarios") / scenario.name)
        if scenario.path is not None and _inside(scenario.path, workdir):
            raise ScenarioError(f"the scenario file {scenario.path} is inside the work directory {workdir}, which "
                                "each run deletes and recreates; move it or choose another --workdir", key="workdir")
        # Held for the whole run: a second run on the same directory is refused here, before it
        # wipes the first one's flash and store. Creating the lock file next to the directory also
        # proves up front that files can be made there (under /proc they cannot).
        lock = lock_workdir(workdir)
    except (ScenarioError, ScenarioRunError, WorkdirError) as exc:
        signals.phase = "after"  # bad input: its report is written whole
        for line in (problems or [str(exc)]):
            err.print(f"[red]error:[/red] {line}", highlight=False)
        if args.junit and junit_usable:
            name = _suite_name(scenario_file)
            try:
                out.print(f"JUnit report: {write_junit_error(args.junit, name=name, message=str(exc))}",
                          highlight=False)
            except OSError as exc2:
                err.print(f"[red]error:[/red] cannot write the JUnit report: {exc2}", highlight=False)
        return 2
    try:
        timeout_s = args.timeout or default_timeout_s(scenario, speed=speed, drain_s=args.drain)
        err.print(f"scenario {scenario.name}: {len(scenario.device_ids)} board(s), {scenario.duration_text} "
                  f"virtual at {speed:g}x, work directory {workdir}, timeout {timeout_s:.0f} s", highlight=False)
        for warning in deep_sleep_warnings(scenario, speed):
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    except BaseException:
        lock.release()  # interrupted before the run: the directory is free again
        raise
    signals.phase = "run"  # from here a signal stops the run cleanly instead of raising
    return _Prepared(scenario, speed, workdir, lock, timeout_s)


def _execute(args: argparse.Namespace, prepared: _Prepared, out: _Console, err: _Console,
             signals: _Signals) -> int:
    """Run a prepared scenario, print its result and write its reports: the exit status."""
    scenario, workdir, lock = prepared.scenario, prepared.workdir, prepared.lock
    if signals.received:  # came between the end of _prepare and here: do not boot every board first
        lock.release()
        signals.phase = "after"
        return _interrupted_before_start(args, out, err, signals.received[0])
    try:
        with lock:
            result = asyncio.run(_run(scenario, workdir, lock, args, err, prepared.timeout_s, signals))
    except HilError as exc:
        signals.phase = "after"
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        if args.junit:
            out.print(f"JUnit report: {write_junit_error(args.junit, name=scenario.name, message=str(exc))}",
                      highlight=False)
        return 1
    signals.phase = "after"  # the run is over: a signal now must not cut its reports short
    try:
        _print_result(result, out)
        if args.junit:
            out.print(f"JUnit report: {write_junit(result, args.junit)}", highlight=False)
        if args.html:
            out.print(f"HTML report: {write_html(result, args.html)}", highlight=False)
    except OSError as exc:  # checked up front; the file system can still change during a run
        err.print(f"[red]error:[/red] cannot write a report: {exc}", highlight=False)
        return 1
    if signals.received and not result.interrupted:
        err.print(f"[yellow]note:[/yellow] {signals.received[0]} came after the scenario's end; the result and "
                  "reports above are complete", highlight=False)
    return 0 if result.passed else 1


async def _run(scenario: Scenario, workdir: Path, lock: WorkdirLock, args: argparse.Namespace, console: Console,
               timeout_s: float, signals: _Signals) -> ScenarioResult:
    stop = asyncio.Event()
    signals.attach(asyncio.get_running_loop(), stop)
    try:
        # Never the runner's own handlers: _Signals has them on the main thread, and off it the
        # runner's add_signal_handler would raise.
        return await _run_with_progress(scenario, workdir, lock, args, console, timeout_s, stop,
                                        on_run=signals.watch)
    finally:
        signals.attach(None, None)  # the loop closes after this; later signals are only recorded


async def _run_with_progress(scenario: Scenario, workdir: Path, lock: WorkdirLock, args: argparse.Namespace,
                             console: Console, timeout_s: float, stop: asyncio.Event, *,
                             on_run: Callable[[ScenarioRun], None]) -> ScenarioResult:
    plain = args.plain or not console.is_terminal
    last = [0.0]

    if plain:
        import time

        def report_plain(p: RunProgress) -> None:
            if time.monotonic() - last[0] >= 5 or p.phase == "done":
                last[0] = time.monotonic()
                console.print(f"{p.phase:8s} virtual {_progress_text(p)}  reports={p.reports} alarms={p.alarms}",
                              highlight=False)

        return await run_scenario(scenario, workdir=workdir, speed=args.speed, on_progress=report_plain,
                                  drain_s=args.drain, timeout_s=timeout_s, workdir_lock=lock, stop=stop,
                                  handle_signals=False, on_run=on_run)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(scenario.name, total=scenario.duration_ms, info="booting")

        def report(p: RunProgress) -> None:
            bar.update(task, completed=min(p.virtual_elapsed_ms, p.duration_ms),
                       info=f"{p.phase} virtual {_progress_text(p)}, {p.reports} reports, {p.alarms} alarms stored")

        return await run_scenario(scenario, workdir=workdir, speed=args.speed, on_progress=report,
                                  drain_s=args.drain, timeout_s=timeout_s, workdir_lock=lock, stop=stop,
                                  handle_signals=False, on_run=on_run)


def _progress_text(p: RunProgress) -> str:
    """``+12.5 / 40 min``, ``+3.2 / 24 h``, ``+1.5 / 7 d``: virtual time elapsed of the duration, in a unit
    that suits the duration, never past it (the drain runs on after the end; it is not the scenario's time)."""
    unit, ms = (("min", 60_000) if p.duration_ms < 2 * 3_600_000 else ("h", 3_600_000) if p.duration_ms < 2 * 86_400_000
                else ("d", 86_400_000))
    elapsed = max(0, min(p.virtual_elapsed_ms, p.duration_ms)) / ms
    return f"+{elapsed:6.1f} / {p.duration_ms / ms:g} {unit}"


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (same resolved path, or the same inode via links)."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, directory: Path) -> bool:
    """True when ``path`` (resolved) is ``directory`` or below it."""
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except OSError:
        return False


def _print_result(result: ScenarioResult, console: Console) -> None:
    end = dt.datetime.fromtimestamp(result.virtual_end_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    console.print(f"ran to virtual {end} UTC in {result.wall_s:.0f} s; {len(result.data.reports)} report{'' if len(result.data.reports) == 1 else 's'} stored",
                  highlight=False)
    for c in result.checks:
        mark = ("[yellow]skip[/yellow]" if c.skipped else "[green]pass[/green]" if c.passed
                else "[red]FAIL[/red]")
        console.print(f"  {mark} {c.name}: {c.message}", highlight=False)
    for e in result.errors:
        console.print(f"  [red]error[/red] {e}", highlight=False)
    if result.interrupted:
        console.print("  [yellow]interrupted[/yellow]: stopped before the scenario's duration")
    if not result.passed:  # where to look next: the gateway's output and each board's console
        for what, path in result.logs.items():
            label = "gateway log" if what == "gateway" else f"console {what}"
            console.print(f"  {label}: {path}", highlight=False, soft_wrap=True)
    console.print("[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]")
