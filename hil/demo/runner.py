"""Run the demo: virtual streetlights (UART) and bins (BLE), a gateway process, SQLite, dashboard.

Everything runs on this machine: one or two Node processes (at most one per core) host the boards
(real MicroPython), a Bumble link relay is the radio, ``civicedge gateway run`` is a child process
with a generated config. On exit (duration reached, Ctrl-C or SIGTERM) every child is stopped: the gateway with
SIGTERM (it drains and acknowledges what it has), the Node hosts and the radio after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.registry import Registry
from gateway.storage.store_files import store_writer
from hil.demo.scenery import bin_stimuli, streetlight_stimuli
from hil.demo.summary import FleetSummary, read_summary
from hil.boards import BoardError, load_board
from hil.boards.variants import write_awake_bin
from hil.children import spawn_child, stop_gateway
from hil.errors import HilError
from hil.sim.board import VirtualBoard
from hil.sim.clock_file import ClockFileWriter
from hil.sim.errors import SimError, SimHostError, SimTimeoutError
from hil.sim.host import SimHost, describe_status
from hil.tcp_ports import choose_ports
from hil.workdir import WorkdirInUseError, WorkdirLock, lock_workdir, recreate_workdir, workdir_problem

log = logging.getLogger(__name__)

MARKER = ".civicedge-demo"
READY_PREFIX = "gateway "
# A small city centre: boards are placed around this point.
CENTRE = (52.3702, 4.8952)


class DemoError(HilError):
    """The demo could not start (bad arguments, work directory not ours, gateway failed)."""


EARLIEST_START = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)  # firmware clock.VALID_AFTER is 2024-01-01
LATEST_START = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class DemoOptions:
    """What ``civicedge demo`` runs.

    Attributes:
        streetlights: virtual streetlights (report over their UART, a pty).
        bins: virtual waste bins (report over BLE on the virtual radio).
        speed: virtual seconds per wall second (60: a 15-minute window closes every 15 s).
        duration_s: wall seconds to run; None runs until Ctrl-C.
        workdir: holds flash directories, registry, SQLite and logs; recreated at each run.
        http_port: dashboard/API port (0 picks a free one).
        seed: seeds the scenery and the boards' privacy noise (simulation only).
        start: virtual start time (default: today 17:45 UTC, dusk: the bins release their first fill
            level at 18:00, a 6-hour mark, about half a wall minute in at 30x; firmware/policy.json).
    """

    streetlights: int = 3
    bins: int = 2
    speed: float = 30.0
    duration_s: float | None = None
    workdir: Path = field(default_factory=lambda: Path("var/demo"))
    http_port: int = 8080
    seed: int = 7
    start: dt.datetime | None = None
    bin_sleep: str = "awake"

    def validate(self) -> None:
        """Raise :class:`DemoError` on values the demo cannot run with."""
        if self.streetlights < 0 or self.bins < 0 or self.streetlights + self.bins == 0:
            raise DemoError("the demo needs at least one board (--streetlights N and/or --bins N, N >= 0)")
        if self.streetlights + self.bins > 200:
            raise DemoError("the demo runs at most 200 boards; use `civicedge sim fleet` for larger fleets")
        if not 0 < self.speed <= 3600:
            raise DemoError(f"--speed must be within (0, 3600], got {self.speed!r}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise DemoError(f"--duration must be positive, got {self.duration_s!r}")
        if self.start is not None and not EARLIEST_START <= self.start < LATEST_START:
            # The firmware takes a clock before 2024 for one never set and reports nothing.
            raise DemoError(f"--start must be from {EARLIEST_START:%Y-%m-%d} to {LATEST_START:%Y}, "
                            f"got {self.start.isoformat()}")
        if self.bin_sleep not in ("awake", "deep"):
            raise DemoError(f"--bin-sleep must be awake or deep, got {self.bin_sleep!r}")
        if not 0 <= self.http_port <= 65535:
            raise DemoError(f"--http-port must be a TCP port, got {self.http_port}")


@dataclass(frozen=True)
class HostExit:
    """A simulator host (Node process) that ended while the demo ran; its boards stopped with it.

    Attributes:
        number: the host's number, 1-based, in start order.
        pid: its process id.
        status: its exit status (negative: killed by that signal, as :attr:`subprocess.Popen.returncode`).
        boards: device ids of the boards it ran.
    """

    number: int
    pid: int
    status: int
    boards: tuple[str, ...]

    def message(self) -> str:
        """One line for the user, e.g. "simulator host 2 (pid 812) exited with status -9 (killed by SIGKILL);
        its boards sl-002, bin-001 are stopped"."""
        what = "its boards " + ", ".join(self.boards) + " are" if len(self.boards) != 1 else \
            f"its board {self.boards[0]} is"
        return (f"simulator host {self.number} (pid {self.pid}) exited with {describe_status(self.status)}; "
                f"{what} stopped")


def write_token_file(path: Path, token: str) -> None:
    """Write the demo's admin token to ``path``, readable by this user only from its first byte.

    ``write_text`` then ``chmod`` left a new file readable by others (per the umask) until the chmod,
    and an existing file keeps its mode through ``O_TRUNC``, hence the ``fchmod``.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(token + "\n")


# Test hook (tests/demo), inert unless the variable is set: set to a file path, the demo writes that file
# (its pid) once its first board is started, then holds there, still booting, until "<path>.release"
# exists. A test can then signal the demo at a point known to be during the boot, however loaded the
# machine (polling for a flash folder raced the rest of the boot). Not released in time: DemoError.
TEST_HOLD_BOOT_ENV = "CIVICEDGE_DEMO_TEST_HOLD_BOOT"
TEST_HOLD_BOOT_MAX_S = 120.0


async def _test_hook_hold_boot() -> None:
    """The :data:`TEST_HOLD_BOOT_ENV` test hook: nothing unless the variable is set."""
    marker = os.environ.get(TEST_HOLD_BOOT_ENV)
    if not marker:
        return
    held = Path(marker)
    release = held.with_name(held.name + ".release")
    held.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + TEST_HOLD_BOOT_MAX_S
    while not release.exists():
        if time.monotonic() > deadline:
            raise DemoError(f"test hook {TEST_HOLD_BOOT_ENV}: {release} was not created within "
                            f"{TEST_HOLD_BOOT_MAX_S:g} s")
        await asyncio.sleep(0.05)


# A simulator host answers a ping in milliseconds; the demo's questions wait at most this long, and the
# boards of a host that did not answer are left out of that answer (a hung host, e.g. kill -STOP, froze
# the demo's output for 60 s). The watch names a host silent for SILENT_AFTER_S.
PING_TIMEOUT_S = 1.0
SILENT_AFTER_S = 5.0


def _prepare_workdir(path: Path) -> tuple[Path, WorkdirLock]:
    """Lock the work directory for the demo's whole life, then empty and mark it.

    The lock (:func:`hil.workdir.lock_workdir`) is taken before anything is removed, so a second
    demo started on the same directory is refused (:class:`WorkdirInUseError`) instead of wiping
    the first one's files while it boots.
    """
    path = path.resolve()
    problem = workdir_problem(path, marker=MARKER, what="civicedge demo directory")
    if problem is not None:
        raise DemoError(problem, path=str(path))
    lock = lock_workdir(path)
    try:
        holder = store_writer(path / "data" / "reports.sqlite")
        if holder is not None:  # a killed demo's gateway still draining: in use, exit 2 like a live demo
            raise WorkdirInUseError(f"{path} is in use by a running demo (its gateway is pid {holder}); stop it "
                                    "or choose another --workdir", path=str(path),
                                    holder_pid=int(holder) if holder.isdigit() else None)
        recreate_workdir(path, marker=MARKER, note="created by civicedge demo; emptied at each run")
    except BaseException:
        lock.release()
        raise
    return path, lock


def _place(rng: random.Random) -> tuple[str, str]:
    lat = CENTRE[0] + rng.uniform(-0.006, 0.006)
    lon = CENTRE[1] + rng.uniform(-0.01, 0.01)
    return f"{lat:.5f}", f"{lon:.5f}"


class Demo:
    """One demo run (see module docstring). Use :meth:`run`."""

    def __init__(self, options: DemoOptions) -> None:
        options.validate()
        self.opt = options
        self.rng = random.Random(options.seed)
        self.workdir = Path()
        self.boards: list[VirtualBoard] = []
        self.hosts: list[SimHost] = []
        self.relay: Any = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.http_port: int | None = None
        self.gateway_log = Path()
        self.lock: WorkdirLock | None = None
        self.clock_file = Path()
        self._clock: ClockFileWriter | None = None
        self._answered: dict[int, float] = {}  # host number -> time.monotonic() of its last answer to a ping

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """Lock, empty and mark the work directory (:meth:`start` does it if not done before).

        Raises:
            DemoError: ``--workdir`` is not a demo directory (or under a file, or not writable).
            WorkdirError: it cannot be created; :class:`WorkdirInUseError`: another run holds it.
        """
        if self.lock is None:
            self.workdir, self.lock = _prepare_workdir(self.opt.workdir)

    async def start(self) -> None:
        """Create the work dir (unless :meth:`prepare` did), boot the fleet, register it, start the gateway."""
        self.prepare()
        # 15 virtual minutes before a 6-hour mark: a bin releases its fill only as the level at the end of
        # each 6 h (docs/privacy.md §1a), so the dashboard's fill chart and the plan fill in at once
        start = self.opt.start or dt.datetime.now(dt.timezone.utc).replace(hour=17, minute=45, second=0, microsecond=0)
        start_ms = int(start.timestamp() * 1000)
        if self.opt.bins:
            from hil.sim.radio.relay import start_relay

            self.relay = start_relay()
        processes = max(1, min(os.cpu_count() or 1, 2, self.opt.streetlights + self.opt.bins))
        # Paused until every board has its stimuli: a first reading must not see default sensor values.
        self.hosts = [SimHost(speed=None, start_ms=start_ms) for _ in range(processes)]
        await asyncio.gather(*(h.start() for h in self.hosts))
        registry = Registry(self.workdir / "data" / "registry")
        try:
            for i in range(self.opt.streetlights):
                await self._add_board("streetlight-esp32", f"sl-{i + 1:03d}", i, registry,
                                      streetlight_stimuli(i, rng=self.rng))
            fire_at = 0 if self.opt.bins else -1
            bin_board = self._bin_board()
            for i in range(self.opt.bins):
                await self._add_board(bin_board, f"bin-{i + 1:03d}", self.opt.streetlights + i, registry,
                                      bin_stimuli(i, rng=self.rng, fire=(i == fire_at)))
        finally:
            registry.close()
        await asyncio.gather(*(h.set_speed(self.opt.speed) for h in self.hosts))
        await self._start_gateway()

    def _bin_board(self) -> str | Path:
        """The bin board definition: as shipped (deep sleep), or kept awake.

        A deep-sleeping bin stays awake for 30 virtual seconds after each reading for the gateway
        to collect its reports; at demo speeds that is a fraction of a wall second, shorter than a
        BLE scan and connect. Kept awake, it reports on the same schedule with the radio always on.
        """
        if self.opt.bin_sleep == "deep":
            return "bin-esp32c3"
        try:
            return write_awake_bin(self.workdir / "boards")
        except BoardError as exc:
            raise DemoError(str(exc)) from exc

    async def _add_board(self, board: str | Path, dev: str, index: int, registry: Registry, stimuli: str) -> None:
        lat, lon = _place(self.rng)
        zone = "centre" if index % 2 == 0 else "harbour"
        definition = load_board(board)
        # On the radio: a board the gateway reaches only over BLE (a UART board is read on its pty).
        over_ble = definition.ble is not None and definition.uart is None
        vb = VirtualBoard(definition, device_id=dev, flash_dir=self.workdir / "flash" / dev,
                          host=self.hosts[index % len(self.hosts)], seed=f"{self.opt.seed}-{dev}",
                          radio_url=self.relay.url if (self.relay is not None and over_ble) else None,
                          zone=zone, lat=lat, lon=lon)
        await vb.start()
        self.boards.append(vb)
        ident = json.loads(vb.identity_path.read_text())
        registry.add(ident["id"], kind=ident["kind"], zone=ident["zone"], lat=ident["lat"], lon=ident["lon"],
                     key=bytes.fromhex(ident["key"]))
        await vb.load_stimuli(stimuli)
        if len(self.boards) == 1:
            await _test_hook_hold_boot()

    async def _start_gateway(self) -> None:
        self.http_port = self.opt.http_port or choose_ports(1, None)[0]  # the kernel's pick
        token_file = self.workdir / "admin.token"
        write_token_file(token_file, secrets.token_urlsafe(24))
        # The gateway's clock follows where the boards actually are (hil.sim.clock_file), not --speed
        # alone: a loaded machine runs them slower, and a fixed clock ran ahead of them (devices shown
        # stale). The writer starts before the gateway, with a measured first pace.
        self.clock_file = self.workdir / "sim-clock.json"
        self._clock = ClockFileWriter(self.clock_file, self.virtual_now_s, speed=self.opt.speed)
        await self._clock.start()
        lines = [
            "# generated by civicedge demo",
            "[gateway]", 'id = "gw-demo"', 'data_dir = "data"',
            "[storage]", "batch_ms = 20",
            "[http]", "enabled = true", 'listen = "127.0.0.1"', f"port = {self.http_port}",
            'admin_token_file = "admin.token"',
            "[sim_clock]", f'follow_file = "{self.clock_file.name}"',
            # made-up readings of made-up streets: public domain, and a licence set as a city's must be
            "[opendata]", 'licence = "CC0-1.0"', 'title = "civicedge demo: street lights and waste bins"',
        ]
        # The depot in the middle of the demo's streets, so the dashboard can draw today's collection
        # routes (without one the plan endpoint answers "no depot configured").
        lines += ["[routes]", f'depot = "{CENTRE[0]:.5f},{CENTRE[1]:.5f}"', "time_limit_s = 1"]
        for vb in self.boards:
            if vb.data_path is not None:
                lines += ["[[serial]]", f'port = "{vb.data_path}"']
        if self.relay is not None:
            from hil.scenarios.runner import ble_slot_lines  # a slot per bin from the start, as scenario runs

            lines += ["[ble]", "enabled = true", 'backend = "virtual"', f'radio = "{self.relay.url}"',
                      "scan_interval_s = 1.0", *ble_slot_lines(self.opt.bins, speed=self.opt.speed)]
        config = self.workdir / "gateway.toml"
        config.write_text("\n".join(lines) + "\n")
        self.gateway_log = self.workdir / "gateway.log"
        with self.gateway_log.open("wb") as out:
            self.gateway = spawn_child(
                [sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT,
                # The gateway stops (drains) when the demo dies, even by kill -9 or a closed terminal
                # (hil.children asks the kernel; the variable makes the gateway ask too).
                env=dict(os.environ, PYTHONUNBUFFERED="1", CIVICEDGE_STOP_WITH_PARENT=str(os.getpid())),
            )
        deadline = time.monotonic() + 30
        while True:
            text = self.gateway_log.read_text(errors="replace")
            if any(line.startswith(READY_PREFIX) and " ready" in line for line in text.splitlines()):
                return
            if self.gateway.poll() is not None:
                raise DemoError(f"the gateway exited at start (status {self.gateway.returncode}):\n{text[-2000:]}")
            if time.monotonic() > deadline:
                raise DemoError(f"the gateway was not ready within 30 s; see {self.gateway_log}")
            await asyncio.sleep(0.1)

    async def stop(self) -> int | None:
        """Stop the gateway (drain), then the boards, hosts and radio, and release the work directory.

        Safe on a demo whose start failed or was cancelled half-way. Returns the gateway's status.
        """
        status: int | None = None
        try:
            if self.gateway is not None:
                status = await stop_gateway(self.gateway)
            if self._clock is not None:  # after the drain: the gateway's clock follows the boards until it ends
                await self._clock.stop()
            for h in self.hosts:
                await h.close()
            for vb in self.boards:
                vb.started = False
                await vb.stop()
            if self.relay is not None:
                self.relay.stop()
                self.relay = None
        finally:
            if self.lock is not None:  # last: the directory is free only once nothing runs in it
                self.lock.release()
                self.lock = None
        return status

    # ------------------------------------------------------------------ run
    def summary(self) -> FleetSummary:
        """What the gateway has stored so far, per board."""
        return read_summary(self.workdir / "data" / "reports.sqlite", boards=self.boards)

    @property
    def dashboard_url(self) -> str:
        """The gateway dashboard."""
        return f"http://127.0.0.1:{self.http_port}/"

    def gateway_alive(self) -> bool:
        """True while the gateway process runs."""
        return self.gateway is not None and self.gateway.poll() is None

    async def exited_hosts(self) -> list[HostExit]:
        """The simulator hosts whose process has ended since the start (crash, OOM kill, ``kill``).

        A host is seen to end when its output closes; its exit status is then collected (waiting at
        most a few seconds for the kernel to report it).
        """
        exited = []
        for number, host in enumerate(self.hosts, 1):
            proc = host.proc
            if proc is None or (proc.returncode is None and not host.closed.is_set()):
                continue
            try:
                status = await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:  # output closed, process still there: not ended (yet)
                continue
            boards = tuple(vb.device_id for vb in self.boards if vb.host is host)
            exited.append(HostExit(number, proc.pid, status, boards))
        return exited

    def host_ended_events(self) -> list[asyncio.Event]:
        """Events set when a simulator host's process ends (its output closes), for a watch to wake on."""
        return [h.closed for h in self.hosts]

    async def virtual_now_s(self, *, timeout_s: float = PING_TIMEOUT_S) -> float:
        """The virtual time (unix s) of the slowest running simulator host that answers: where the fleet has got to.

        The hosts are asked together; one that does not answer within ``timeout_s`` (hung, e.g. stopped
        by SIGSTOP) is left out, so the others' boards and the gateway's clock go on without it
        (:meth:`silent_hosts` names it).

        Raises:
            SimHostError: no host is running, or one ended while asked.
            SimTimeoutError: no running host answered within ``timeout_s``.
        """
        # Not a host whose output closed (killed, its exit status not collected yet): nobody answers it.
        running = [(n, h) for n, h in enumerate(self.hosts, 1) if h.running]
        if not running:
            raise SimHostError("no simulator host is running")
        for n, _ in running:
            self._answered.setdefault(n, time.monotonic())  # silence counts from the first question
        replies = await asyncio.gather(*(h.request({"op": "ping"}, timeout_s) for _, h in running),
                                       return_exceptions=True)
        nows = []
        for (n, _), reply in zip(running, replies):
            if isinstance(reply, SimTimeoutError):
                continue
            if isinstance(reply, BaseException):
                raise reply
            self._answered[n] = time.monotonic()
            nows.append(reply["now"])
        if not nows:
            raise SimTimeoutError(f"no simulator host answered a ping in {timeout_s:g} s", op="ping",
                                  timeout_s=timeout_s)
        return float(min(nows)) / 1000.0

    def silent_hosts(self, after_s: float = SILENT_AFTER_S) -> list[tuple[int, int]]:
        """(number, pid) of each running simulator host that has not answered a ping for ``after_s``."""
        now = time.monotonic()
        return [(n, h.proc.pid) for n, h in enumerate(self.hosts, 1)
                if h.running and h.proc is not None and now - self._answered.get(n, now) >= after_s]
