"""Run a scenario: virtual boards on real MicroPython, the virtual radio, a gateway process, SQLite.

The boards boot on paused simulator clocks, get their stimuli and faults timelines, then the clocks
start at the scenario's speed and the gateway starts with ``[sim_clock]`` so that it follows virtual
time. After the virtual duration the runner waits for every board's outbox to drain (bounded), stops
the gateway with SIGTERM (it commits and acknowledges what it holds), then the boards, hosts and radio
— also on Ctrl-C/SIGTERM and on errors — and evaluates the expectations against the SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gateway.registry import Registry
from gateway.resources import load_policy
from hil.errors import HilError
from hil.scenarios.checks import CheckResult, StoredData, evaluate, read_store
from hil.scenarios.errors import ScenarioRunError
from hil.scenarios.model import BoardGroup, Scenario
from hil.scenarios.outbox import OutboxWatch
from hil.workdir import recreate_workdir, workdir_problem
from hil.sim.board import VirtualBoard
from hil.sim.errors import SimTimeoutError
from hil.sim.host import SimHost

log = logging.getLogger(__name__)

MARKER = ".civicedge-scenario"
GATEWAY_READY_S = 30.0
PING_TIMEOUT_S = 30.0
# The drain lets virtual time run at most this far past the end (so it is bounded in virtual time
# too, whatever the speed): enough for the firmware's re-send backoff (a round a minute at most).
DRAIN_VIRTUAL_MS = 30 * 60_000
DRAIN_SPEED = 60.0
# "Cannot keep up": over PACE_WINDOW_S of wall time, virtual time advanced at less than
# PACE_MIN_FRACTION of the requested speed (e.g. a board reset faster than it can boot).
PACE_WINDOW_S = 30.0
PACE_MIN_FRACTION = 0.05


@dataclass
class Progress:
    """A snapshot for the progress display."""

    virtual_elapsed_ms: int
    duration_ms: int
    reports: int
    alarms: int
    phase: str


@dataclass
class ScenarioResult:
    """The outcome of one run.

    Attributes:
        scenario: what was run.
        checks: one result per expectation.
        data: what the gateway stored.
        generated: per device, the seqs its firmware put into its outbox.
        workdir: flash dirs, registry, SQLite, gateway config and log.
        wall_s: wall-clock seconds of the run.
        virtual_end_ms: virtual unix time up to which data was evaluated (the scenario's end when
            the run got there; else how far it got).
        gateway_status: exit status of the gateway process.
        interrupted: stopped early by Ctrl-C/SIGTERM.
        errors: why the run failed (gateway died, simulator could not keep up, timed out).
        speed: the speed the run used.
    """

    scenario: Scenario
    checks: list[CheckResult]
    data: StoredData
    generated: dict[str, set[int]]
    workdir: Path
    wall_s: float
    virtual_end_ms: int
    gateway_status: int | None
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)
    speed: float | None = None

    @property
    def speed_run(self) -> float:
        """The speed the run used (``--speed``, else the scenario file's)."""
        return self.speed if self.speed is not None else self.scenario.speed

    @property
    def passed(self) -> bool:
        """True when the run completed and every expectation held."""
        return not self.interrupted and not self.errors and all(c.passed for c in self.checks)


def check_workdir(path: Path) -> Path:
    """The resolved work directory, if a run may (re)create it.

    Raises:
        ScenarioRunError: it exists and is not a directory, or is not empty and was not made by a
            scenario run (it is never wiped then).
    """
    path = path.resolve()
    problem = workdir_problem(path, marker=MARKER, what="scenario work directory")
    if problem is not None:
        raise ScenarioRunError(problem, path=str(path))
    return path


def prepare_workdir(path: Path) -> Path:
    """Create (or recreate) a scenario work directory; refuse to wipe a directory that is not one.

    Raises:
        ScenarioRunError: see :func:`check_workdir`.
    """
    return recreate_workdir(check_workdir(path), marker=MARKER,
                            note="created by civicedge hil run; removed and recreated at each run")


class ScenarioRun:
    """One run of a scenario (use :func:`run_scenario`)."""

    def __init__(self, scenario: Scenario, workdir: Path, *, speed: float | None = None,
                 drain_s: float = 30.0) -> None:
        self.scenario = scenario
        self.speed = float(speed if speed is not None else scenario.speed)
        if not 0 < self.speed <= 3600:
            raise ScenarioRunError(f"speed must be within (0, 3600], got {self.speed:g}", value=self.speed)
        self.workdir = prepare_workdir(workdir)
        self.drain_s = drain_s
        self.boards: list[VirtualBoard] = []
        self.hosts: list[SimHost] = []
        self.watches: dict[str, OutboxWatch] = {}
        self.relay: Any = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_log = self.workdir / "gateway.log"
        self.db = self.workdir / "data" / "reports.sqlite"
        self.end_seqs: dict[str, set[int]] | None = None  # per device, seqs generated by the end
        self.virtual_end_ms: int | None = None
        self.last_virtual_ms = scenario.start_ms

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Boot every board on paused clocks, register them, load stimuli, start clocks and gateway."""
        sc = self.scenario
        if any(g.link == "ble" for g in sc.boards):
            from hil.sim.radio.relay import start_relay

            self.relay = start_relay()
        n = len(sc.device_ids)
        self.hosts = [SimHost(speed=None, start_ms=sc.start_ms) for _ in range(max(1, min(2, os.cpu_count() or 1, n)))]
        await asyncio.gather(*(h.start() for h in self.hosts))
        registry = Registry(self.workdir / "data" / "registry")
        try:
            i = 0
            for group in sc.boards:
                board = self._board_file(group)
                for dev in group.ids:
                    await self._add_board(group, board, dev, self.hosts[i % len(self.hosts)], registry)
                    i += 1
        finally:
            registry.close()
        end_ms = sc.start_ms + sc.duration_ms
        for h in self.hosts:
            await h.hold_at(end_ms)  # no board takes a reading past the end, whatever the speed
            await h.set_speed(self.speed)
        await self._start_gateway()

    def _board_file(self, group: BoardGroup) -> str | Path:
        """The board definition, with deep sleep switched off when the group runs ``awake``.

        A deep-sleeping board stays awake only ~30 virtual seconds after a reading; at scenario
        speeds that is a fraction of a wall second, too short for a BLE scan and connect.
        """
        if group.sleep == "deep":
            return group.board
        from hil.boards import load_board

        path = Path(load_board(group.board).source)
        text = path.read_text()
        if 'mode = "deep"' not in text:
            return group.board
        out = self.workdir / "boards" / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text.replace('mode = "deep"', 'mode = "none"'))
        return out

    async def _add_board(self, group: BoardGroup, board: str | Path, dev: str, host: SimHost,
                         registry: Registry) -> None:
        flash = self.workdir / "flash" / dev
        self.watches[dev] = OutboxWatch(flash / "outbox")
        vb = VirtualBoard(board, device_id=dev, flash_dir=flash, host=host, seed=f"{self.scenario.seed}-{dev}",
                          radio_url=self.relay.url if group.link == "ble" and self.relay is not None else None,
                          zone=group.zone, lat=group.lat, lon=group.lon)
        self.boards.append(vb)
        await vb.start()
        ident = json.loads(vb.identity_path.read_text())
        registry.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"], lon=ident["lon"],
                     key=bytes.fromhex(ident["key"]))
        await vb.load_stimuli(group.stimuli_toml)

    def _group_of(self, dev: str) -> BoardGroup:
        return next(g for g in self.scenario.boards if dev in g.ids)

    async def _start_gateway(self) -> None:
        virtual_now = (await self.hosts[0].ping())["now"] / 1000.0
        lines = ["# generated by civicedge hil run", "[gateway]", f'id = "gw-{self.scenario.name}"', 'data_dir = "data"',
                 "[storage]", "batch_ms = 20", "[http]", "enabled = false",
                 "[sim_clock]", f"speed = {self.speed!r}", f"virtual_at = {virtual_now!r}", f"wall_at = {time.time()!r}"]
        for vb in self.boards:
            if self._group_of(vb.device_id).link == "uart" and vb.data_path is not None:
                lines += ["[[serial]]", f'port = "{vb.data_path}"']
        n_ble = sum(len(g.ids) for g in self.scenario.boards if g.link == "ble")
        if self.relay is not None:
            lines += ["[ble]", "enabled = true", 'backend = "virtual"', f'radio = "{self.relay.url}"',
                      "scan_interval_s = 0.5", f"max_connections = {max(1, min(8, n_ble))}"]
        config = self.workdir / "gateway.toml"
        config.write_text("\n".join(lines) + "\n")
        with self.gateway_log.open("wb") as out:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "hil.cli.main", "-v", "gateway", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + GATEWAY_READY_S
        while True:
            text = self.gateway_log.read_text(errors="replace")
            if any(line.startswith("gateway ") and " ready" in line for line in text.splitlines()):
                return
            if self.gateway.poll() is not None:
                raise ScenarioRunError(f"the gateway exited at start (status {self.gateway.returncode}):\n{text[-2000:]}",
                                       log=str(self.gateway_log))
            if time.monotonic() > deadline:
                raise ScenarioRunError(f"the gateway was not ready within {GATEWAY_READY_S:.0f} s; see {self.gateway_log}",
                                       log=str(self.gateway_log))
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ run
    async def virtual_now_ms(self) -> int:
        """Virtual unix time (ms) of the first host.

        Raises:
            ScenarioRunError: the host did not answer in time (it cannot keep up with the speed).
        """
        try:
            now = int((await self.hosts[0].request({"op": "ping"}, timeout_s=PING_TIMEOUT_S))["now"])
            self.last_virtual_ms = now
            return now
        except SimTimeoutError as exc:
            raise ScenarioRunError(f"the simulator host did not answer within {PING_TIMEOUT_S:.0f} s: this machine "
                                   f"cannot run the boards at {self.speed:g}x; try a lower --speed",
                                   speed=self.speed) from exc

    def generated(self) -> dict[str, set[int]]:
        """Per device, every seq its firmware put into its outbox so far."""
        return {d: set(w.poll()) for d, w in self.watches.items()}

    def pending(self) -> dict[str, list[str]]:
        """Per device, frame files not acknowledged yet (only devices with some)."""
        return {d: p for d, w in self.watches.items() if (p := w.pending())}

    def gateway_alive(self) -> bool:
        """True while the gateway process runs."""
        return self.gateway is not None and self.gateway.poll() is None

    async def run_until_done(self, stop: asyncio.Event, report: Callable[[Progress], None]) -> bool:
        """Run the virtual duration, then drain the outboxes. Returns False when stopped early.

        The hosts' clocks are held at the scenario's end (see :meth:`start`), so whatever the speed
        no board takes a reading past it; the seqs generated by then are the ones evaluated. The
        drain then lets time run on (at most :data:`DRAIN_VIRTUAL_MS` past the end) until each of
        those reports has left its board's outbox; what the boards write meanwhile is not evaluated.

        Raises:
            ScenarioRunError: the gateway died, or the simulator cannot keep up with the speed.
        """
        sc = self.scenario
        end_ms = sc.start_ms + sc.duration_ms
        pace = _PaceWatch(self.speed)
        while not stop.is_set():
            if not self.gateway_alive():
                raise ScenarioRunError(f"the gateway stopped unexpectedly; see {self.gateway_log}",
                                       log=str(self.gateway_log))
            now = await self.virtual_now_ms()
            self.generated()
            report(self._progress(now, "running"))
            if now >= end_ms:
                break
            pace.check(time.monotonic(), now)
            await _sleep_or_stop(stop, 0.25)
        if stop.is_set():
            return False
        # Held at the end: a board still loading its interpreter after a reset boots in wall time
        # and may write a report (stamped at the end) once it runs; wait for it, then take the cut.
        await self._boots_settled(time.monotonic() + min(self.drain_s, 10.0))
        await asyncio.sleep(0.3)
        self.end_seqs = {d: set(seqs) for d, seqs in self.generated().items()}
        self.virtual_end_ms = end_ms
        # Drain at a moderate speed: an ACK takes the gateway some wall milliseconds, which at a high
        # speed are virtual minutes of re-send backoff; the drain should not depend on the speed.
        for h in self.hosts:
            await h.hold_at(end_ms + DRAIN_VIRTUAL_MS)
            await h.set_speed(min(self.speed, DRAIN_SPEED))
        deadline = time.monotonic() + self.drain_s
        while not stop.is_set():
            self.generated()
            left = self.pending_of_end()
            if not left:
                break
            now = await self.virtual_now_ms()
            if time.monotonic() > deadline or now >= end_ms + DRAIN_VIRTUAL_MS:
                log.warning("outboxes not drained after %.0f s (virtual +%.0f min past the end): %s",
                            self.drain_s, (now - end_ms) / 60_000, left)
                break
            report(self._progress(now, "draining"))
            await _sleep_or_stop(stop, 0.2)
        for h in self.hosts:  # freeze virtual time: nothing more to deliver
            await h.set_speed(None)
        report(self._progress(end_ms, "done"))
        return not stop.is_set()

    def pending_of_end(self) -> dict[str, list[int]]:
        """Per device, reports generated by the scenario's end still in its outbox (only devices with some)."""
        out: dict[str, list[int]] = {}
        end_seqs = self.end_seqs or {}
        for d, names in self.pending().items():
            seqs = sorted(s for s in (int(n[:8], 16) for n in names) if s in end_seqs.get(d, ()))
            if seqs:
                out[d] = seqs
        return out

    async def _boots_settled(self, deadline: float) -> None:
        """Wait (until ``deadline``, monotonic) while any board is ``booting``."""
        while time.monotonic() < deadline:
            states = await asyncio.gather(*(vb.state() for vb in self.boards), return_exceptions=True)
            if not any(isinstance(st, dict) and st.get("state") == "booting" for st in states):
                return
            await asyncio.sleep(0.1)

    def _progress(self, now_ms: int, phase: str) -> Progress:
        reports = alarms = 0
        if self.db.exists():
            import sqlite3

            try:
                conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)
                try:
                    reports = int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
                    alarms = int(conn.execute("SELECT COUNT(*) FROM alarms").fetchone()[0])
                finally:
                    conn.close()
            except sqlite3.Error:
                pass  # schema not created yet, or the gateway holds a write lock this instant
        return Progress(now_ms - self.scenario.start_ms, self.scenario.duration_ms, reports, alarms, phase)

    # ------------------------------------------------------------------ stop
    async def stop(self) -> int | None:
        """Stop the gateway (drain), then boards, hosts and radio. Safe to call more than once."""
        status: int | None = None
        if self.gateway is not None:
            if self.gateway.poll() is None:
                self.gateway.send_signal(signal.SIGTERM)
                try:
                    status = await asyncio.to_thread(self.gateway.wait, 20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.gateway.pid, signal.SIGKILL)
                    status = await asyncio.to_thread(self.gateway.wait)
            else:
                status = self.gateway.returncode
        for vb in self.boards:
            with contextlib.suppress(Exception):
                await vb.stop()
        for h in self.hosts:
            await h.close()
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
        for w in self.watches.values():
            w.poll()
            w.close()
        return status


class _PaceWatch:
    """Tells a simulator that cannot keep up with the requested speed (for a sustained time)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.samples: list[tuple[float, int]] = []  # (wall monotonic s, virtual ms)

    def check(self, wall_s: float, virtual_ms: int) -> None:
        """Record a sample.

        Raises:
            ScenarioRunError: over the last :data:`PACE_WINDOW_S`, virtual time ran at less than
                :data:`PACE_MIN_FRACTION` of the speed.
        """
        self.samples.append((wall_s, virtual_ms))
        while len(self.samples) > 2 and wall_s - self.samples[1][0] >= PACE_WINDOW_S:
            self.samples.pop(0)
        w0, v0 = self.samples[0]
        if wall_s - w0 < PACE_WINDOW_S:
            return
        achieved = (virtual_ms - v0) / 1000 / (wall_s - w0)
        if achieved < PACE_MIN_FRACTION * self.speed:
            raise ScenarioRunError(
                f"the simulator cannot keep up: virtual time ran at {achieved:.2g}x over the last "
                f"{wall_s - w0:.0f} s, {self.speed:g}x was asked (boards resetting faster than they boot, or "
                f"this machine is overloaded); try a lower --speed or fewer faults",
                speed=self.speed, achieved=achieved)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def default_timeout_s(scenario: Scenario, *, speed: float | None = None, drain_s: float = 30.0) -> float:
    """A generous wall-clock bound for a whole run: 4x the nominal time, plus boots and the drain."""
    nominal = scenario.duration_ms / 1000 / float(speed if speed is not None else scenario.speed)
    return 4 * nominal + 120 + 10 * len(scenario.device_ids) + drain_s


async def run_scenario(scenario: Scenario, *, workdir: Path, speed: float | None = None,
                       on_progress: Callable[[Progress], None] | None = None,
                       stop: asyncio.Event | None = None, handle_signals: bool = True,
                       drain_s: float = 30.0, timeout_s: float | None = None) -> ScenarioResult:
    """Run a scenario and evaluate its expectations.

    Args:
        scenario: a loaded scenario (:func:`hil.scenarios.load_scenario`).
        workdir: work directory (recreated; refused when it holds something else).
        speed: overrides the scenario's speed (virtual seconds per wall second).
        on_progress: called with a :class:`Progress` a few times per second.
        stop: set it to stop early (as Ctrl-C does).
        handle_signals: stop cleanly on SIGINT/SIGTERM (main thread only).
        drain_s: wall seconds to wait for unacknowledged reports after the duration.
        timeout_s: wall seconds the boot, run and drain may take (None:
            :func:`default_timeout_s`); past it the run stops and records an error.

    Only what the boards generated up to the scenario's end is evaluated (see
    :meth:`ScenarioRun.run_until_done`); a run that did not get there (interrupted, failed, timed
    out) evaluates nothing: each expectation is reported as skipped.

    Raises:
        ScenarioRunError: the run could not start or the gateway died; everything started is stopped.
    """
    stop = stop or asyncio.Event()
    run = ScenarioRun(scenario, workdir, speed=speed, drain_s=drain_s)
    if timeout_s is None:
        timeout_s = default_timeout_s(scenario, speed=run.speed, drain_s=drain_s)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    completed = started = False
    errors: list[str] = []
    status: int | None = None
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await run.start()
                started = True
                completed = await run.run_until_done(stop, on_progress or (lambda p: None))
        except TimeoutError:
            log.error("scenario %s timed out after %.0f s", scenario.name, timeout_s)
            errors.append(f"run timed out after {timeout_s:.0f} s of wall time (--timeout); reached virtual "
                          f"+{(run.last_virtual_ms - scenario.start_ms) / 60_000:.1f} of "
                          f"{scenario.duration_ms / 60_000:.0f} min")
            completed = True
        except HilError as exc:  # e.g. an overloaded simulator host: still stop and report
            if not started:
                raise
            log.error("scenario %s failed while running: %s", scenario.name, exc)
            errors.append(f"run failed: {exc}")
            completed = True
    finally:
        try:
            status = await asyncio.shield(run.stop())
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
    if status not in (0, None):
        errors.append(f"gateway exited with status {status}; see {run.gateway_log}")
    data = read_store(run.db)
    if run.end_seqs is not None:
        generated = run.end_seqs
        data = data.up_to({d: max(seqs, default=-1) for d, seqs in generated.items()})
    else:
        generated = {d: set(w.seqs) for d, w in run.watches.items()}
    checks = evaluate(scenario, data, generated, load_policy())
    if run.virtual_end_ms is None:
        why = "run interrupted" if not completed else "the run did not reach the scenario's end"
        checks = [c.skip(f"not evaluated: {why}") for c in checks]
    return ScenarioResult(scenario=scenario, checks=checks, data=data, generated=generated, workdir=run.workdir,
                          wall_s=time.monotonic() - t0, virtual_end_ms=run.virtual_end_ms or run.last_virtual_ms,
                          gateway_status=status, interrupted=not completed, errors=errors, speed=run.speed)
