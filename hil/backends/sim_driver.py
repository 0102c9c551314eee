"""Strategy steps for virtual boards (:class:`hil.sim.board.VirtualBoard`).

The simulator is asyncio; the strategy and most tests are not. The driver therefore runs the
boards on its own event loop in a background thread and offers a synchronous
:class:`SimControl` (stimuli, faults, virtual clock) on ``handle.control``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from hil.backends.board import BoardHandle, wait_reporting_text
from hil.backends.errors import BackendError

log = logging.getLogger(__name__)

T = TypeVar("T")


def simulator_unavailable_reason() -> str | None:
    """Why virtual boards cannot run here (Node or its packages missing), or None."""
    try:
        from hil.sim.mprun import RuntimeMissingError, node_binary
    except ImportError as exc:
        return f"simulator package missing: {exc}"
    try:
        node_binary()
    except RuntimeMissingError as exc:
        return str(exc)
    try:
        import hil.sim.board  # noqa: F401
    except ImportError as exc:
        return f"simulator not installed: {exc}"
    return None


class _LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hil-sim-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], *, timeout_s: float) -> T:
        async def wrapped() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise BackendError(f"simulator call did not finish within {timeout_s:g} s", timeout_s=timeout_s) from None
        except BaseException:
            # A Ctrl-C (KeyboardInterrupt) in the waiting thread: the call must not run on unattended (a host
            # start finishing after it would leave a Node process no one stops).
            future.cancel()
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


def check_advance_seconds(seconds: object) -> None:
    """Refuse a clock advance that is not a finite number of seconds >= 0 (``advance(-10)``, ``"5"``, NaN, inf, True).

    Raises:
        ValueError: naming the value given, in seconds.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"advance(seconds): seconds must be a number of seconds >= 0, not {seconds!r} "
                         f"({type(seconds).__name__})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"advance(seconds): seconds must be a finite number of seconds >= 0, not {seconds!r}")


class SimControl:
    """Synchronous access to a virtual board's simulator-only powers (stimuli, faults, clock).

    Attributes:
        board: the :class:`hil.sim.board.VirtualBoard` (its coroutines run on the driver's loop;
            call them through :meth:`call`).
    """

    def __init__(self, board: Any, loop: _LoopThread) -> None:
        self.board = board
        self._loop = loop

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout_s: float = 60.0, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the simulator's loop and return the result."""
        return self._loop.run(fn(*args, **kwargs), timeout_s=timeout_s)

    def stimulus(self, name: str, value: Any) -> None:
        """Set a sensor now (``"light", 5``, ``"pir", 1``, ``"distance", 40`` ...)."""
        self.call(self.board.stimulus, name, value)

    def fault(self, line: str) -> None:
        """Inject a fault (``"drop uart 60s"``, ``"reset"``, ``"power_loss"``, ``"ble_disconnect"`` ...)."""
        self.call(self.board.fault, line)

    def load_stimuli(self, source: str | Path) -> Any:
        """Apply a stimuli file (path or TOML text)."""
        return self.call(self.board.load_stimuli, source)

    def advance(self, seconds: float) -> int:
        """Advance a paused virtual clock by ``seconds``; returns virtual unix ms.

        Raises:
            ValueError: ``seconds`` is not a finite number >= 0 (checked here, in the unit the caller used,
                not as the simulator host's milliseconds).
        """
        check_advance_seconds(seconds)
        now_ms: int = self.call(self.board.advance, seconds, timeout_s=600.0)
        return now_ms

    def state(self) -> dict[str, Any]:
        """Simulator-side state of the board (running/sleep, pins, link stats, clock)."""
        result: dict[str, Any] = self.call(self.board.state)
        return result

    def console_text(self) -> str:
        """Everything the board printed so far."""
        return str(self.board.console_text())


class SimDriver:
    """Brings virtual boards up; all boards of one driver share one Node host process.

    Args:
        radio_url: virtual BLE radio for boards with BLE (None: no BLE peripheral).
        speed: virtual seconds per wall second (0 = as fast as possible, None = paused).
        seed: deterministic ``os.urandom`` (privacy noise) and faults; simulation only.
        start_timeout_s: limit for the firmware to report it runs.
        start_ms: the virtual clock's start (unix ms) for the shared host; None: the wall clock now.
    """

    backend = "sim"

    def __init__(self, *, radio_url: str | None = None, speed: float | None = 1.0, seed: int | None = None,
                 start_timeout_s: float = 60.0, start_ms: int | None = None) -> None:
        self.radio_url = radio_url
        self.start_ms = start_ms
        self.speed = speed
        self.seed = seed
        self.start_timeout_s = start_timeout_s
        self._loop: _LoopThread | None = None
        self._host: Any = None
        self._boards = 0

    def _ensure_host(self) -> _LoopThread:
        from hil.sim.host import SimHost

        if self._loop is None:
            self._loop = _LoopThread()
        if self._host is None:
            host = SimHost(speed=self.speed, start_ms=self.start_ms)
            try:
                self._loop.run(host.start(), timeout_s=60.0)
            except BaseException:
                # Failed, timed out or interrupted (Ctrl-C): a Node process the start spawned must not outlive it.
                self._close_host(host)
                raise
            self._host = host
        return self._loop

    def _close_host(self, host: Any) -> None:
        """Stop ``host``'s Node process (graceful, then killed: SimHost.close); a failure is logged."""
        assert self._loop is not None
        try:
            self._loop.run(host.close(), timeout_s=30.0)
        except BackendError as exc:
            log.warning("closing the simulator host: %s", exc)

    def flash(self, handle: BoardHandle) -> None:
        """Install firmware/ + /policy.json + /board.json into the board's flash directory."""
        from hil.sim.flash import install_firmware

        flash = handle.workdir / "flash"
        install_firmware(flash, handle.definition.to_device_config())
        handle.extras["flash_dir"] = flash

    def provision(self, handle: BoardHandle) -> None:
        """Write our identity (the key the gateway registry gets) as /identity.json, mode 0600."""
        path = Path(handle.extras["flash_dir"]) / "identity.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(handle.identity, fh)

    def start(self, handle: BoardHandle) -> None:
        """Boot the virtual board and wait for the firmware's "running" line."""
        from hil.sim.board import VirtualBoard

        loop = self._ensure_host()
        board = VirtualBoard(handle.definition, device_id=handle.device_id, flash_dir=handle.extras["flash_dir"],
                             host=self._host, seed=self.seed, install=False, radio_url=self.radio_url,
                             zone=handle.identity["zone"], lat=handle.identity["lat"], lon=handle.identity["lon"])
        handle.resource = board
        self._boards += 1
        loop.run(board.start(), timeout_s=180.0)
        handle.control = SimControl(board, loop)
        handle.console_url = board.console_path
        handle.data_url = board.data_path
        handle.ble_address = board.ble_address
        handle.extras["sim_speed"] = self.speed  # virtual s per wall s (0 = as fast as possible, None = paused)
        deadline = time.monotonic() + self.start_timeout_s
        wait_reporting_text(handle, lambda: board.console_text().encode(), deadline=deadline)

    def reset(self, handle: BoardHandle) -> None:
        """Simulated hard reset (the firmware boots again from boot.py)."""
        board = handle.resource
        handle.extras["reset_console_offset"] = len(board.console_log)
        handle.control.fault("reset")

    def wait_running(self, handle: BoardHandle, *, timeout_s: float) -> None:
        """Wait for the "running" line printed after the last reset."""
        board = handle.resource
        wait_reporting_text(handle, lambda: bytes(board.console_log), deadline=time.monotonic() + timeout_s,
                            since=int(handle.extras.get("reset_console_offset", 0)))

    def stop(self, handle: BoardHandle) -> None:
        """Power the virtual board off."""
        handle.close_dut()
        board, handle.resource = handle.resource, None
        if board is not None and self._loop is not None:
            self._loop.run(board.stop(), timeout_s=60.0)
            self._boards -= 1

    def close(self) -> None:
        """Stop the shared Node host and the loop thread (after every board is stopped)."""
        if self._loop is None:
            return
        if self._host is not None:
            host, self._host = self._host, None
            self._close_host(host)
        self._loop.close()
        self._loop = None
