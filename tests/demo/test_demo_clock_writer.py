"""The gateway-clock writer (hil.sim.clock_file) in the demo and its stop, with real simulator hosts (no gateway)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from hil.demo.runner import Demo, DemoOptions
from hil.sim.clock_file import CLOCK_EVERY_S, ClockFileWriter
from hil.sim.host import SimHost

pytestmark = pytest.mark.timeout(60)


async def test_a_failed_clock_writer_does_not_stop_demo_stop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """stop() suppressed only CancelledError: any other failure of the writer re-raised there, before the
    hosts, boards and radio were closed."""
    demo = Demo(DemoOptions(workdir=tmp_path / "demo"))
    host = SimHost(speed=1.0)
    await host.start()
    demo.hosts = [host]

    async def broken() -> None:
        raise RuntimeError("a defect in the writer")

    writer = ClockFileWriter(tmp_path / "sim-clock.json", demo.virtual_now_s, speed=1.0)
    writer._task = asyncio.create_task(broken())
    demo._clock = writer
    await asyncio.sleep(0)
    try:
        with caplog.at_level(logging.ERROR, logger="hil.sim.clock_file"):
            await demo.stop()
        assert host.proc is None  # the host was stopped after the writer's failure
        assert any("clock writer failed" in r.getMessage() and r.exc_info for r in caplog.records), caplog.records
    finally:
        await host.close()


async def test_the_clock_writer_survives_a_defect_and_says_it_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A defect in one update (here: no clock file set, Path('').with_name fails) is logged once; the
    writer keeps going and writes once the cause is gone."""
    demo = Demo(DemoOptions(workdir=tmp_path / "demo"))
    host = SimHost(speed=30.0, start_ms=1_767_225_600_000)
    await host.start()
    demo.hosts = [host]
    writer = ClockFileWriter(Path(), demo.virtual_now_s, speed=30.0)
    task = asyncio.create_task(writer.follow())
    try:
        with caplog.at_level(logging.ERROR, logger="hil.sim.clock_file"):
            await asyncio.sleep(CLOCK_EVERY_S * 2.5)
        assert not task.done()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "updating the gateway's clock file" in errors[0].getMessage(), errors
        writer.path = tmp_path / "sim-clock.json"
        deadline = time.monotonic() + 10
        while not writer.path.exists():
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.1)
        clock = json.loads(writer.path.read_text())
        assert clock["virtual_at"] >= 1_767_225_600 and abs(clock["wall_at"] - time.time()) < 5, clock
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await host.close()


async def test_virtual_now_skips_a_host_whose_output_closed(tmp_path: Path) -> None:
    """A killed host's exit status may not be collected yet: a ping sent to it was never answered (60 s)."""
    demo = Demo(DemoOptions(workdir=tmp_path / "demo"))
    hosts = [SimHost(speed=1.0, start_ms=1_767_225_600_000) for _ in range(2)]
    await asyncio.gather(*(h.start() for h in hosts))
    demo.hosts = hosts
    try:
        assert hosts[1].proc is not None
        os.kill(hosts[1].proc.pid, signal.SIGKILL)
        await asyncio.wait_for(hosts[1].closed.wait(), 10)
        t = time.monotonic()
        now = await demo.virtual_now_s()
        assert time.monotonic() - t < 2 and now >= 1_767_225_600
    finally:
        for h in hosts:
            await h.close()


async def test_a_hung_host_is_left_out_and_named_once_then_answering_again(tmp_path: Path) -> None:
    """Demo QA: a host stopped by SIGSTOP froze the demo's output for 60 s (a ping waited that long),
    then the demo advised a lower --speed. Now the other host's time is answered within PING_TIMEOUT_S,
    the watch names the silent host once, says when it answers again, and gives no speed advice meanwhile."""
    from hil.cli.demo_cmd import _Watch
    from hil.demo.runner import PING_TIMEOUT_S, SILENT_AFTER_S

    demo = Demo(DemoOptions(workdir=tmp_path / "demo"))
    hosts = [SimHost(speed=30.0, start_ms=1_767_225_600_000) for _ in range(2)]
    await asyncio.gather(*(h.start() for h in hosts))
    demo.hosts = hosts
    watch = _Watch(demo, 30.0)
    watch.pace.window_s = 0.5  # any slow pace would be told at once
    watch.pace.min_fraction = 1e9
    try:
        await demo.virtual_now_s()
        assert hosts[1].proc is not None
        pid = hosts[1].proc.pid
        os.kill(pid, signal.SIGSTOP)
        t = time.monotonic()
        now = await demo.virtual_now_s()
        assert time.monotonic() - t < PING_TIMEOUT_S + 1 and now >= 1_767_225_600
        assert watch.host_lines() == []  # not silent for SILENT_AFTER_S yet
        await asyncio.sleep(SILENT_AFTER_S)
        await demo.virtual_now_s()
        lines = watch.host_lines()
        assert len(lines) == 1 and f"simulator host 2 (pid {pid}) has not answered for 5 s" in lines[0], lines
        assert watch.host_lines() == []  # once
        watch.pace_line(0.0)
        await asyncio.sleep(0.6)
        assert watch.pace_line(1.0) is None  # no "use a lower --speed" for a hung host
        os.kill(pid, signal.SIGCONT)
        await demo.virtual_now_s(timeout_s=5)
        assert watch.host_lines() == [f"simulator host 2 (pid {pid}) is answering again"]
    finally:
        for h in hosts:
            if h.proc is not None and h.proc.returncode is None:
                os.kill(h.proc.pid, signal.SIGCONT)
            await h.close()


async def test_the_clock_writer_waits_at_start_for_hosts_busy_booting(tmp_path: Path) -> None:
    """A host that misses the 1 s ping while it boots many boards made start() fail at once: a demo of
    40 + 20 boards on two cores exited with "no simulator host answered a ping in 1 s". The host is
    stopped here for 2.5 s (SIGSTOP), as a busy one does not answer; start() waits for it."""
    demo = Demo(DemoOptions(workdir=tmp_path / "demo"))
    host = SimHost(speed=30.0, start_ms=1_767_225_600_000)
    await host.start()
    demo.hosts = [host]
    assert host.proc is not None
    clock = tmp_path / "sim-clock.json"
    writer = ClockFileWriter(clock, demo.virtual_now_s, speed=30.0)
    os.kill(host.proc.pid, signal.SIGSTOP)
    resumed = False

    async def resume() -> None:
        nonlocal resumed
        await asyncio.sleep(2.5)
        assert host.proc is not None
        os.kill(host.proc.pid, signal.SIGCONT)
        resumed = True

    waker = asyncio.create_task(resume())
    try:
        await writer.start()
        assert resumed  # it did wait past the stop
        written = json.loads(clock.read_text())
        assert written["virtual_at"] >= 1_767_225_600
    finally:
        await waker
        await writer.stop()
        await host.close()
