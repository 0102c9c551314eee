"""A board under test, whatever runs it, and the strategy that brings it to a state.

Labgrid vocabulary: the *resource* is data (board definition, identity, URLs); *drivers* are the
small protocols (the :class:`~hil.dut.Dut` console, reset, the data link); a *strategy* walks
the board through ``off -> flashed -> provisioned -> reporting`` with one backend-specific step
per transition (:class:`BoardDriver`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from hil.backends.errors import BackendError, SimOnlyError
from hil.boards import BoardDefinition
from hil.dut import Dut
from hil.dut.watchdog import HOLD_WATCHDOG_MAX_MS, hold_watchdog_code

log = logging.getLogger(__name__)

STATES: tuple[str, ...] = ("off", "flashed", "provisioned", "reporting")
"""Board states in order; a strategy only moves forward."""

# Seen on the console when the firmware dies while starting (any MicroPython traceback).
CRASH_PATTERN = re.compile(rb"Traceback \(most recent call last\):.*?\n(\w+(?:Error|Exception)[^\r\n]*)", re.S)
# firmware/main.py prints one of these lines when it starts or refuses to.
REFUSAL_PATTERN = re.compile(rb"civicedge: ((?:cannot start|not provisioned|safe mode|recovery mode)[^\r\n]*)")
REPORTING_POLL_S = 0.1
# How long (wall time) a board stopped at the REPL by a test keeps its firmware's watchdog held.
WATCHDOG_HOLD_S = 600
# Longest watchdog timeout set (ms): the simulator's timers take at most 2**31 - 1 ms, as Node's do.
WATCHDOG_HOLD_MAX_MS = HOLD_WATCHDOG_MAX_MS


def watchdog_hold_ms(sim_speed: float | None = 1.0) -> int:
    """The watchdog timeout (ms of board time) for a board stopped at the REPL.

    Real boards (``sim_speed`` 1) and virtual boards at speed >= 1: :data:`WATCHDOG_HOLD_S` of wall
    time (a virtual board's clock runs ``sim_speed`` times as fast), at most
    :data:`WATCHDOG_HOLD_MAX_MS`. Below speed 1 and paused (None):
    :data:`WATCHDOG_HOLD_S` of board time, which is longer in wall time (forever when paused). At
    speed 0 (as fast as possible) also :data:`WATCHDOG_HOLD_S` of board time: the simulator runs
    its clock at wall rate while a board that was typed at waits at its REPL (docs/simulator.md),
    so that is the same wall time as on a real board, and code run there that sleeps longer is
    reset as a real board would be.
    """
    if sim_speed == 0:
        return WATCHDOG_HOLD_S * 1000
    return int(min(WATCHDOG_HOLD_MAX_MS, WATCHDOG_HOLD_S * 1000 * max(1.0, sim_speed or 1.0)))


def console_is_virtual(url: str) -> bool:
    """Whether a serial console is a running virtual board's (``civicedge sim up``, recorded in
    :mod:`hil.sim.console_registry`). Any other console, a pty too (a real board behind socat or
    ser2net), is a real board's: only a positively known virtual board gets the virtual treatment."""
    from hil.sim.console_registry import is_virtual_console

    return is_virtual_console(url)


def console_node(url: str) -> tuple[int, int] | None:
    """``(st_rdev, st_ctime_ns)`` of a local console's device node (None: a URL, or no such node)."""
    if "://" in url:
        return None
    try:
        info = os.stat(url)
    except OSError:
        return None
    return info.st_rdev, info.st_ctime_ns


def running_pattern(device_id: str) -> re.Pattern[bytes]:
    """The console line firmware/main.py prints once the app runs: ``civicedge: <kind> <id> running``."""
    return re.compile(rb"civicedge: \S+ " + re.escape(device_id.encode()) + rb" running")


class BoardStateError(BackendError):
    """A board could not be brought to a state.

    Attributes:
        board: board definition name.
        state: the state reached.
        target: the state asked for.
        console: console output seen while trying (for diagnosis).
    """

    def __init__(self, message: str, *, board: str, state: str, target: str, console: str = "") -> None:
        super().__init__(f"{board}: {message} (reached {state!r}, wanted {target!r})"
                         + (f"\n--- console ---\n{console[-2000:]}" if console else ""),
                         board=board, state=state, target=target)
        self.board = board
        self.state = state
        self.target = target
        self.console = console


def make_identity(definition: BoardDefinition, *, device_id: str | None = None, zone: str = "hil",
                  lat: str = "48.8566", lon: str = "2.3522") -> dict[str, str]:
    """A fresh device identity (``/identity.json``) with a random 32-byte key.

    The key is what the gateway registry must hold for this device; never log it.
    """
    return {
        "id": device_id or f"{definition.kind}-hil-{os.urandom(3).hex()}",
        "kind": definition.kind,
        "zone": zone,
        "lat": lat,
        "lon": lon,
        "key": os.urandom(32).hex(),
    }


class SimOnlyControl:
    """``BoardHandle.control`` off the sim backend: any use raises a :class:`SimOnlyError` saying that
    stimuli, faults and the virtual clock are the simulator's (falsy, like the None it replaces)."""

    def __init__(self, backend: str) -> None:
        self._backend = backend

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"SimOnlyControl(backend={self._backend!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        # An AttributeError too: hasattr()/getattr(control, name, None) probe it without a try.
        raise SimOnlyError(
            f"hil_board.control.{name} is sim-only: stimuli, faults and the virtual clock exist on the sim backend, "
            f"not on {self._backend}; mark the test @pytest.mark.requires(\"stimuli\") (or \"faults\", "
            "\"virtual_time\") so it is skipped elsewhere, or drive the board over its REPL (hil_board.dut)",
            backend=self._backend, attribute=name)


@dataclass(eq=False)
class BoardHandle:
    """What a test gets: one board under test on some backend.

    Attributes:
        backend: ``sim``, ``qemu`` or ``serial``.
        definition: the board definition.
        identity: the device identity written to its flash (includes the key: keep it out of logs;
            ``repr(handle)`` masks it).
        workdir: scratch directory for this board (flash dir, image, logs).
        state: current state (see :data:`STATES`).
        console_url: pyserial URL of the REPL console.
        data_url: pyserial URL of the UART data link the gateway opens, if the board has one here.
        ble_address: BLE address on the virtual radio, if any.
        resource: the backend object (``VirtualBoard``, ``QemuMachine``, or a ``Lease``).
        control: backend-specific powers, e.g. :class:`hil.backends.sim_driver.SimControl`
            (stimuli, faults, virtual clock) on the sim backend; elsewhere a :class:`SimOnlyControl`
            whose every use raises, naming the ``requires("stimuli")`` marker.
        extras: what the steps recorded (sync result, boot console, image).
    """

    backend: str
    definition: BoardDefinition
    identity: dict[str, str]
    workdir: Path
    state: str = "off"
    console_url: str = ""
    data_url: str | None = None
    ble_address: str | None = None
    resource: Any = None
    control: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    _dut: Dut | None = field(default=None, repr=False)
    _strategy: "Strategy | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.control is None and self.backend != "sim":
            self.control = SimOnlyControl(self.backend)

    def __eq__(self, other: object) -> bool:
        """A live board is equal only to itself. Written out (not the dataclass one) because pytest
        diffs the fields of objects with a generated ``__eq__`` in failures: the identity's key too."""
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        """The handle with the device key masked (pytest prints reprs in failures, -vvvv and JUnit)."""
        identity = {k: ("<hidden>" if k == "key" else v) for k, v in self.identity.items()}
        return (f"BoardHandle(backend={self.backend!r}, board={self.definition.name!r}, identity={identity!r}, "
                f"state={self.state!r}, console_url={self.console_url!r}, data_url={self.data_url!r}, "
                f"ble_address={self.ble_address!r}, workdir={str(self.workdir)!r})")

    @property
    def device_id(self) -> str:
        """The device id (``identity["id"]``)."""
        return self.identity["id"]

    @property
    def key(self) -> bytes:
        """The device key (32 bytes) the gateway registry needs."""
        return bytes.fromhex(self.identity["key"])

    @property
    def dut(self) -> Dut:
        """The console as a :class:`~hil.dut.Dut` (opened on first use).

        Note: exec/eval enter the raw REPL, which stops the running firmware (Ctrl-C), as on a
        real board; call :meth:`restart_firmware` to run it again. Each time it stops the firmware,
        the firmware's watchdog (which cannot be stopped) is stretched to :data:`WATCHDOG_HOLD_S` of
        wall time (:func:`watchdog_hold_ms`) and fed, so that the board is not reset under the test:
        on the sim backend in the same write as the Ctrl-C (at high speed its watchdog lasts
        milliseconds of wall time; the simulator queues console input), and so for a serial console
        that is a running virtual board's (:func:`console_is_virtual`; it stands in for a real one, of
        unknown speed: held for :data:`WATCHDOG_HOLD_MAX_MS` of board time); elsewhere, any other pty
        included, as an exec right after the raw REPL is entered (a real board's console buffer would
        overflow with one write; its 30 s watchdog leaves ample time). ``dut.on_stop_result`` is ``"True\n"`` when a watchdog
        was held, ``"False\n"`` when the firmware started none.
        """
        if self._dut is None:
            sim = self.backend == "sim"
            if sim:
                hold, one_write = watchdog_hold_ms(self.extras.get("sim_speed", 1.0)), True
            elif self.backend == "serial" and console_is_virtual(self.console_url):
                # A virtual board standing in for a real one (`civicedge sim up`), at a speed unknown
                # here (300x: a 30 s watchdog is 0.1 s of wall time): one write, the longest hold.
                hold, one_write = WATCHDOG_HOLD_MAX_MS, True
            else:
                hold, one_write = watchdog_hold_ms(1.0), False
            self._dut = Dut(self.console_url, on_stop=hold_watchdog_code(hold), on_stop_one_write=one_write)
            self.extras.setdefault("console_node", console_node(self.console_url))
            # A connection closed with the firmware stopped leaves it stopped: the new one knows.
            self._dut.firmware_stopped = bool(self.extras.pop("firmware_stopped", False))
        return self._dut

    def restart_firmware(self, *, timeout_s: float = 60.0) -> str:
        """Soft-reset so ``boot.py``/``main.py`` run again, and wait until the firmware says it runs
        (its ``civicedge: <kind> <id> running`` line, as :meth:`hard_reset` waits).

        ``state`` is ``"provisioned"`` from the reset until that line comes (then ``"reporting"``
        again), so a board whose firmware did not come back is not taken for a reporting one.

        Args:
            timeout_s: limit for the soft reset and the running line together.

        Returns:
            The console output from the reset to the running line.

        Raises:
            BoardStateError: the firmware refused to start (the message carries the console's
                ``civicedge: cannot start: ...`` line), crashed, or did not say it runs within
                ``timeout_s``; ``console`` holds what it printed.
            DutError: the soft reset itself failed (no ``soft reboot`` line, link lost).
        """
        deadline = time.monotonic() + timeout_s
        if self.state == "reporting":
            self.state = "provisioned"  # until the firmware says it runs again
        out = self.dut.soft_reset(timeout_s=timeout_s)
        wait_reporting_dut(self, timeout_s=max(0.0, deadline - time.monotonic()))
        self.state = "reporting"
        return out + str(self.extras.get("boot_console", ""))

    def hard_reset(self, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        """Hard-reset the board (simulated reset / QMP ``system_reset`` / EN pulse) and, by
        default, wait until the firmware runs again. See :meth:`Strategy.hard_reset`."""
        if self._strategy is None:
            raise BoardStateError("board was not brought up by a strategy", board=self.definition.name,
                                  state=self.state, target="reporting")
        self._strategy.hard_reset(self, wait=wait, timeout_s=timeout_s)

    @property
    def firmware_stopped(self) -> bool:
        """Whether the harness stopped the board's firmware (raw REPL) and has not restarted it since."""
        return bool(self.extras.get("firmware_stopped")) or (self._dut is not None and self._dut.firmware_stopped)

    def console_replaced(self) -> bool:
        """Whether the console's device node is no longer the one first opened: a pty whose board is
        gone, its number now another's (``/dev/pts/N`` is made anew, with a new ctime, for each pty;
        the ctime has the kernel's coarse clock, so a pty made within a tick (~4 ms) of the first is not
        told apart)."""
        first = self.extras.get("console_node")
        return first is not None and console_node(self.console_url) != first

    def close_dut(self) -> None:
        """Close the console connection (a running firmware keeps running; one the connection stopped
        stays stopped, which ``extras["firmware_stopped"]`` records for the next connection)."""
        if self._dut is not None:
            if self._dut.firmware_stopped:
                self.extras["firmware_stopped"] = True
            self._dut.close()
            self._dut = None


class BoardDriver(Protocol):
    """Backend-specific steps of the strategy; each moves the handle one state forward."""

    backend: str

    def flash(self, handle: BoardHandle) -> None:
        """Put MicroPython + our firmware files on the board (``off -> flashed``)."""

    def provision(self, handle: BoardHandle) -> None:
        """Give the board its identity and key (``flashed -> provisioned``)."""

    def start(self, handle: BoardHandle) -> None:
        """Boot the firmware and check it runs (``provisioned -> reporting``)."""

    def stop(self, handle: BoardHandle) -> None:
        """Power the board off / release it (any state -> ``off``)."""

    def reset(self, handle: BoardHandle) -> None:
        """Hard-reset the running board (EN pin / QMP ``system_reset`` / simulated reset)."""

    def wait_running(self, handle: BoardHandle, *, timeout_s: float) -> None:
        """Wait for the firmware's "running" line printed after the last reset."""

    def close(self) -> None:
        """Release what the driver shares between boards (after every board is stopped)."""


class Strategy:
    """Brings boards to a state with a :class:`BoardDriver`.

    Args:
        driver: the backend's driver.
    """

    def __init__(self, driver: BoardDriver) -> None:
        self.driver = driver

    def transition(self, handle: BoardHandle, target: str = "reporting") -> BoardHandle:
        """Walk ``handle`` forward to ``target``.

        Raises:
            BackendError: unknown state.
            BoardStateError: a step failed (the board is left where it got to).
        """
        if target not in STATES:
            raise BackendError(f"unknown board state {target!r}; states: {', '.join(STATES)}", state=target)
        handle._strategy = self
        steps = {"flashed": self.driver.flash, "provisioned": self.driver.provision, "reporting": self.driver.start}
        for state in STATES[STATES.index(handle.state) + 1:STATES.index(target) + 1]:
            log.info("%s %s: %s -> %s", handle.backend, handle.device_id, handle.state, state)
            try:
                steps[state](handle)
            except BoardStateError:
                raise
            except Exception as exc:
                raise BoardStateError(f"step to {state!r} failed: {exc}", board=handle.definition.name,
                                      state=handle.state, target=target) from exc
            handle.state = state
        return handle

    def close(self) -> None:
        """Release the driver's shared resources (e.g. the simulator host)."""
        self.driver.close()

    def hard_reset(self, handle: BoardHandle, *, wait: bool = True, timeout_s: float = 60.0) -> None:
        """Hard-reset a reporting board and (by default) wait until its firmware runs again.

        Raises:
            BoardStateError: the board is not running, or after the reset the firmware refused
                to start, crashed, or said nothing within ``timeout_s``.
        """
        if handle.state != "reporting":
            raise BoardStateError("only a running board can be reset", board=handle.definition.name,
                                  state=handle.state, target="reporting")
        log.info("%s %s: hard reset", handle.backend, handle.device_id)
        self.driver.reset(handle)
        if wait:
            self.driver.wait_running(handle, timeout_s=timeout_s)

    def power_off(self, handle: BoardHandle) -> None:
        """Stop the board and release its resources (idempotent)."""
        handle.close_dut()
        if handle.state != "off" or handle.resource is not None:
            self.driver.stop(handle)
        handle.state = "off"


def wait_reporting_text(handle: BoardHandle, read_console: Callable[[], bytes], *, deadline: float,
                        since: int = 0) -> None:
    """Poll the console text until the firmware says it runs; raise on refusal, crash or timeout.

    Args:
        since: ignore console text before this offset (output of an earlier boot).

    Raises:
        BoardStateError: the firmware refused to start, crashed, or said nothing in time.
    """
    running = running_pattern(handle.device_id)
    while True:
        console = read_console()[since:]
        _raise_on_failure(handle, console)
        if running.search(console):
            handle.extras["boot_console"] = console.decode(errors="replace")
            return
        if time.monotonic() > deadline:
            raise BoardStateError("firmware did not report that it runs", board=handle.definition.name,
                                  state=handle.state, target="reporting", console=console.decode(errors="replace"))
        time.sleep(REPORTING_POLL_S)


def wait_reporting_dut(handle: BoardHandle, *, timeout_s: float) -> None:
    """Watch the console through the DUT (firmware keeps running) until it says it runs.

    Raises:
        BoardStateError: the firmware refused to start, crashed, or said nothing in time.
    """
    running = running_pattern(handle.device_id)
    seen = b""
    deadline = time.monotonic() + timeout_s
    while True:
        seen += handle.dut.read_output(duration_s=min(0.5, max(0.0, deadline - time.monotonic())))
        _raise_on_failure(handle, seen)
        if running.search(seen):
            handle.extras["boot_console"] = seen.decode(errors="replace")
            return
        if time.monotonic() > deadline:
            raise BoardStateError("firmware did not report that it runs", board=handle.definition.name,
                                  state=handle.state, target="reporting", console=seen.decode(errors="replace"))


def _raise_on_failure(handle: BoardHandle, console: bytes) -> None:
    refusal = REFUSAL_PATTERN.search(console)
    if refusal is not None:
        raise BoardStateError(f"firmware refused to start: {refusal.group(1).decode(errors='replace')}",
                              board=handle.definition.name, state=handle.state, target="reporting",
                              console=console.decode(errors="replace"))
    check_console_for_crash(handle, console, target="reporting")


def check_console_for_crash(handle: BoardHandle, console: bytes, *, target: str) -> None:
    """Raise :class:`BoardStateError` when ``console`` shows the firmware died with a traceback."""
    match = CRASH_PATTERN.search(console)
    if match is not None:
        raise BoardStateError(f"firmware crashed at start: {match.group(1).decode(errors='replace')}",
                              board=handle.definition.name, state=handle.state, target=target,
                              console=console.decode(errors="replace"))
