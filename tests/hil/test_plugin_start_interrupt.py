"""A Ctrl-C (KeyboardInterrupt) while the plugin starts a child process (the gateway, the simulator's Node
host) leaves none running: the start stops what it spawned before re-raising, and ``hil_gateway``'s cleanup
covers its start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from held_ports import port_block  # noqa: F401 - a fixture
from test_child_lifetime import _alive, _wait_gone

from hil.pytest_plugin import gateway_process
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.pytest_plugin.ports import PortRange

pytest_plugins = ["pytester"]

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the children")]

# A gateway that never gets ready: it says it is starting and waits; one also ignores SIGTERM.
NEVER_READY = "import time; print('gateway starting', flush=True); time.sleep(120)"
DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('starting', flush=True); time.sleep(120)"


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids of children a test's code spawned; any still running at the end is killed (a failing test must
    not leave the orphan it found)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize("child", [NEVER_READY, DEAF], ids=["stops-on-sigterm", "ignores-sigterm"])
def test_an_interrupt_in_the_ready_wait_stops_the_gateway_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                spawned: list[int], child: str) -> None:
    real_spawn = gateway_process.spawn_child
    procs: list[subprocess.Popen[str]] = []

    def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        assert cmd[1:4] == ["-m", "hil.cli.main", "gateway"]
        proc: subprocess.Popen[str] = real_spawn([sys.executable, "-c", child], **kwargs)
        spawned.append(proc.pid)
        procs.append(proc)
        real_poll = proc.poll
        looks: list[int] = []

        def poll() -> int | None:
            looks.append(1)
            # The ready wait's first look at the child, once it said something: where Ctrl-C lands.
            if len(looks) == 1:
                deadline = time.monotonic() + 10
                while "starting" not in gateway.output and time.monotonic() < deadline:
                    time.sleep(0.02)
                raise KeyboardInterrupt
            return real_poll()

        proc.poll = poll  # type: ignore[method-assign]
        return proc

    monkeypatch.setattr(gateway_process, "spawn_child", spawn)
    monkeypatch.setattr(gateway_process, "STOP_ON_FAILED_START_S", 1.0, raising=False)
    gateway = GatewayProcess(workdir=tmp_path / "gw", http=False)
    with pytest.raises(KeyboardInterrupt):
        gateway.start(timeout_s=30)
    assert len(spawned) == 1
    assert _wait_gone(spawned[0], 1.0), f"the gateway child {spawned[0]} outlived the interrupted start"
    assert procs[0].returncode is not None  # reaped: no zombie either
    assert gateway.proc is None


HOLD_GATEWAY = """
def test_uses_the_gateway(hil_gateway):
    raise AssertionError("the interrupt comes before the test runs")
"""


def test_an_interrupt_right_after_the_gateway_started_is_cleaned_up_by_the_fixture(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, spawned: list[int],
        port_block: Callable[[int], PortRange]) -> None:
    """The gateway is up; Ctrl-C lands before the fixture yields it: its teardown still stops the gateway."""
    real_start = GatewayProcess.start

    def start(self: GatewayProcess, *, timeout_s: float = 30.0) -> None:
        real_start(self, timeout_s=timeout_s)
        assert self.proc is not None
        spawned.append(self.proc.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(GatewayProcess, "start", start)  # in-process run: the inner session sees it
    pytester.makepyfile(HOLD_GATEWAY)
    result = pytester.runpytest_inprocess(f"--hil-port-range={port_block(4)}", "-p", "no:cacheprovider")
    # (INTERRUPTED, or INTERNAL_ERROR when pytest's own tmp_path teardown trips over the interrupted setup)
    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR), result.ret
    result.stdout.fnmatch_lines(["*!!! KeyboardInterrupt !!!*"])
    assert len(spawned) == 1
    assert _wait_gone(spawned[0], 20), f"gateway {spawned[0]} still runs after the interrupted session"


def test_an_interrupted_simulator_host_start_leaves_no_node_process(
        monkeypatch: pytest.MonkeyPatch, spawned: list[int], sim_available: None) -> None:
    """Ctrl-C while the driver waits for the Node host's hello: the host is stopped, not left to finish its
    start on the loop thread with no one to close it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is handled on the main thread")
    from hil.backends.sim_driver import SimDriver
    from hil.sim.host import SimHost

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident
    assert main is not None
    real_start = SimHost.start

    async def start(self: SimHost) -> None:
        task = asyncio.ensure_future(real_start(self))
        while self.proc is None and not task.done():
            await asyncio.sleep(0.005)
        assert self.proc is not None
        spawned.append(self.proc.pid)
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C, while the main thread waits for this start
        await task

    monkeypatch.setattr(SimHost, "start", start)
    driver = SimDriver(speed=None)
    try:
        with pytest.raises(KeyboardInterrupt):
            driver._ensure_host()
            time.sleep(5)  # (the signal lands in the wait above; this only bounds a miss)
    finally:
        signal.signal(signal.SIGINT, previous)
        driver.close()  # what the fixtures' teardown does
    assert len(spawned) == 1
    assert _wait_gone(spawned[0], 10), f"the simulator host {spawned[0]} outlived the interrupted start"
