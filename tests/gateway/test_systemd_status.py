"""systemd's STATUS= follows the gateway's health, and WATCHDOG=1 is sent when the unit asks for it,
through a real unix datagram socket as NOTIFY_SOCKET.

Was: STATUS= was set once at READY=1 ("running: 2 serial port(s) ...") and said so through a port
down, a broker down, a full disk and a damaged store."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import make_env
from procs import REPO

from gateway.config import load_config
from gateway.notify_status import StatusReporter, status_text, watchdog_interval
from gateway.service import ALL_LINKS_DOWN_AFTER_S, Gateway

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A unix datagram socket at a short path (sun_path holds 108 bytes), named by NOTIFY_SOCKET."""
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


async def _next(sock: socket.socket, timeout: float = 10.0) -> dict[str, str]:
    end = time.monotonic() + timeout
    while True:
        try:
            data = sock.recv(4096).decode()
            return dict(line.split("=", 1) for line in data.split("\n"))
        except BlockingIOError:
            assert time.monotonic() < end, "nothing sent in %.0f s" % timeout
            await asyncio.sleep(0.02)


async def test_status_follows_the_health_and_back_to_running(tmp_path: Path, notify_socket: socket.socket) -> None:
    port = tmp_path / "ttyUSB1"  # a symlink to a pty, made later: the port is plugged in
    now = [0.0]
    gw = Gateway(load_config(make_env(tmp_path, serial=(str(port),))), health_monotonic=lambda: now[0])
    await gw.start()
    running = "gateway gw-test running: 1 serial port(s), BLE off, HTTP off"
    reporter = asyncio.create_task(StatusReporter("gw-test", running, gw.health, every_s=0.1).run())
    master, slave = os.openpty()
    try:
        assert await _next(notify_socket) == {
            "STATUS": "gateway gw-test degraded (warning): link_down serial:%s" % port}
        now[0] += ALL_LINKS_DOWN_AFTER_S  # its only port, down that long: every link is down, critical
        assert await _next(notify_socket) == {
            "STATUS": "gateway gw-test degraded (critical): all_links_down; link_down serial:%s" % port}
        port.symlink_to(os.ttyname(slave))
        assert await _next(notify_socket) == {"STATUS": running}
        gw.store.mark_damaged("PRAGMA quick_check found: On tree page 3 cell 0: invalid page number")
        assert await _next(notify_socket) == {"STATUS": "gateway gw-test degraded (critical): store_damaged"}
        await asyncio.sleep(0.5)  # five looks at the same health: nothing more is sent
        with pytest.raises(BlockingIOError):
            notify_socket.recv(4096)
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])
        await gw.stop()
        os.close(master)
        os.close(slave)


async def test_watchdog_pings_at_half_the_interval(notify_socket: socket.socket) -> None:
    reporter = StatusReporter("gw-test", "running", lambda: [], every_s=5.0, watchdog_s=0.2)
    task = asyncio.create_task(reporter.run())
    try:
        started = time.monotonic()
        for _ in range(4):
            assert await _next(notify_socket, timeout=2.0) == {"WATCHDOG": "1"}
        took = time.monotonic() - started
        assert 0.3 < took < 3.0, took  # four pings 0.1 s apart
        reporter.stopping()  # while the gateway drains: pings go on
        assert await _next(notify_socket, timeout=2.0) == {"WATCHDOG": "1"}
    finally:
        task.cancel()
        await asyncio.wait([task])


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_a_long_status_is_cut() -> None:
    from gateway.health import Problem

    problems = [Problem("link_down", "x is down", "serial:/dev/ttyUSB%d" % i) for i in range(60)]
    text = status_text("gw-1", "running", problems)
    assert text.startswith("gateway gw-1 degraded (warning): link_down serial:/dev/ttyUSB0; link_down ")
    assert len(text) == 400 and text.endswith(" ...")


def test_a_cut_status_keeps_the_critical_codes() -> None:
    """Was: the codes in the health's order, so a critical code after many link_down (a health check outside
    the gateway, or a gateway with many ports and a failing disk) was cut off: `degraded (critical): link_down
    ...` named no critical problem."""
    from gateway.health import Problem

    problems = [Problem("link_down", "x is down", "serial:/dev/ttyUSB%d" % i) for i in range(60)]
    problems += [Problem("mqtt_down", "mqtt broker unreachable"), Problem("disk_critical", "report store disk low: ..."),
                 Problem("all_links_down", "every link is down (...)")]
    text = status_text("gw-1", "running", problems)
    assert text.startswith("gateway gw-1 degraded (critical): disk_critical; all_links_down; "
                           "link_down serial:/dev/ttyUSB0; link_down serial:/dev/ttyUSB1; "), text
    assert len(text) == 400 and text.endswith(" ...")


async def test_status_says_disk_low_with_the_store_directory(tmp_path: Path, notify_socket: socket.socket) -> None:
    """The new warning disk_low reaches STATUS= as every health code does (gateway.health, docs/api.md)."""
    from gateway.storage.disk_space import MIB, free_bytes

    free = free_bytes(tmp_path)
    assert free is not None and free > 64 * MIB
    cfg = make_env(tmp_path)  # min_free_mb twice what is free: below it, far above its eighth (disk_critical)
    cfg.write_text(cfg.read_text().replace("batch_ms = 20\n", "batch_ms = 20\nmin_free_mb = %d\n" % (2 * free // MIB + 1)))
    gw = Gateway(load_config(cfg))
    await gw.start()
    reporter = asyncio.create_task(StatusReporter("gw-test", "running", gw.health, every_s=0.1).run())
    try:
        assert await _next(notify_socket) == {
            "STATUS": "gateway gw-test degraded (warning): disk_low %s" % (tmp_path / "data")}
    finally:
        reporter.cancel()
        await asyncio.wait([reporter])
        await gw.stop()


def test_gateway_run_says_a_missing_port_in_its_status_and_pings_the_watchdog(tmp_path: Path) -> None:
    """The real `gateway run` under a NOTIFY_SOCKET with WatchdogSec=2 s: READY=1 running, then degraded."""
    folder = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    missing = tmp_path / "ttyUSB9"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "gateway", "run", "-c",
                             str(make_env(tmp_path, serial=(str(missing),)))],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        got: list[dict[str, str]] = []
        end = time.monotonic() + 40
        while not any("degraded" in g.get("STATUS", "") for g in got):
            assert time.monotonic() < end and proc.poll() is None, got
            if select.select([sock], [], [], 0.5)[0]:
                got.append(dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n")))
        assert got[0] == {"READY": "1", "STATUS": "gateway gw-test running: 1 serial port(s), BLE off, HTTP off"}
        assert got[-1] == {"WATCHDOG": "1",
                           "STATUS": "gateway gw-test degraded (warning): link_down serial:%s"
                                     % missing}
        assert {"WATCHDOG": "1"} in got  # pinged (every 1 s) before the first look at the health (5 s)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


async def test_a_health_check_that_raises_is_said_and_the_pings_go_on(notify_socket: socket.socket) -> None:
    """A bug in a health check must not end the task: the watchdog would then kill a gateway that collects."""
    def broken() -> list[object]:
        raise RuntimeError("boom")

    reporter = StatusReporter("gw-test", "running", broken, every_s=0.1, watchdog_s=0.2)  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run())
    try:
        assert await _next(notify_socket) == {
            "WATCHDOG": "1", "STATUS": "gateway gw-test degraded (critical): health_check_failed"}
        assert await _next(notify_socket) == {"WATCHDOG": "1"}
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_unexpected_health_values_never_stop_the_pings(notify_socket: socket.socket,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A bare string is classified (unclassified, critical, as /healthz does); a value that cannot be
    made into a status is logged once and the watchdog pings go on (review rev-obs L1)."""
    from gateway.health import Problem

    broken = Problem("mqtt_down", "mqtt down")
    del broken.code  # a value summary() cannot read: making the status raises
    answers: list[object] = [["a reason without a code"], [Problem("mqtt_down", "mqtt down"), 42]]

    def health() -> object:
        return answers.pop(0) if answers else [broken]

    reporter = StatusReporter("gw-test", "running", health, every_s=0.1, watchdog_s=0.2)  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run())
    try:
        assert await _next(notify_socket) == {
            "WATCHDOG": "1", "STATUS": "gateway gw-test degraded (critical): unclassified"}
        assert await _next(notify_socket) == {
            "WATCHDOG": "1", "STATUS": "gateway gw-test degraded (critical): mqtt_down; unclassified"}
        for _ in range(4):
            assert await _next(notify_socket) == {"WATCHDOG": "1"}
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.wait([task])
    assert caplog.text.count("cannot make the status text") == 1, caplog.text
