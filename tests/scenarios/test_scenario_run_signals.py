"""`hil run` killed or hung up: the gateway never outlives it; SIGHUP is a clean stop like SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from terminal_signals import as_in_a_terminal

REPO = Path(__file__).resolve().parents[2]

LONG = """
name = "{name}"
description = "one streetlight for hours: the run is stopped by a signal"
start = "2026-11-21T{hhmm}:00Z"
duration = "3h"
speed = 60
[[boards]]
board = "streetlight-esp32"
ids = ["{dev}"]
link = "uart"
[expect]
no_loss = true
"""


def _pids_mentioning(needle: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and int(pid) != os.getpid() and state != "Z":
            found.append(int(pid))
    return found


def _start_run(tmp_path: Path, *, name: str, hhmm: str, dev: str,
               extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], Path, str]:
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text(LONG.format(name=name, hhmm=hhmm, dev=dev))
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "hil", "run", str(scenario), "--plain",
                             "--workdir", str(work), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=as_in_a_terminal)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = ""
    while "running" not in seen:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, seen
        seen += line
    return proc, work, seen


def _cleanup(proc: subprocess.Popen[str], work: Path) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)
    for pid in _pids_mentioning(str(work)):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_of_hil_run_ends_its_gateway(tmp_path: Path) -> None:
    proc, work, _ = _start_run(tmp_path, name="killed", hhmm="03:41", dev="sl-kill-1")
    try:
        gateways = _pids_mentioning(str(work / "gateway.toml"))
        assert len(gateways) == 1, gateways
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 30
        while _pids_mentioning(str(work / "gateway.toml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pids_mentioning(str(work / "gateway.toml")), "the gateway outlived the SIGKILLed hil run"
    finally:
        _cleanup(proc, work)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sighup_of_hil_run_stops_cleanly_and_writes_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    proc, work, seen = _start_run(tmp_path, name="hungup", hhmm="03:43", dev="sl-hup-1",
                                  extra=("--junit", str(junit)))
    try:
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 1, seen + out
        assert "interrupted" in out
        suite = ET.parse(junit).getroot().find("testsuite")
        assert suite is not None
        err = suite.find("testcase[@name='run']/error")
        assert err is not None and "interrupted" in (err.get("message") or "")
        assert not _pids_mentioning(str(work)), "stray processes after SIGHUP"
    finally:
        _cleanup(proc, work)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_second_ctrl_c_forces_the_end_when_the_gateway_does_not_stop(tmp_path: Path) -> None:
    proc, work, seen = _start_run(tmp_path, name="forced", hhmm="03:45", dev="sl-force-1")
    try:
        gateways = _pids_mentioning(str(work / "gateway.toml"))
        assert len(gateways) == 1, gateways
        os.kill(gateways[0], signal.SIGSTOP)  # a hung gateway: the clean stop would wait 20 s for it
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None, "the first Ctrl-C must stop cleanly, not force"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert time.monotonic() - t0 < 5, "the second Ctrl-C did not cut the stop short"
        assert proc.returncode == 130, seen + out
        assert "stopping… (press Ctrl-C again to force)" in out
        assert "forced stop" in out
        deadline = time.monotonic() + 10
        while _pids_mentioning(str(work / "gateway.toml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pids_mentioning(str(work / "gateway.toml")), "the stopped gateway survived the forced end"
    finally:
        _cleanup(proc, work)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_terminal_hangup_still_writes_the_reports(tmp_path: Path) -> None:
    import fcntl
    import termios

    scenario = tmp_path / "hangup-pty.toml"
    scenario.write_text(LONG.format(name="hangup-pty", hhmm="03:47", dev="sl-pty-1"))
    work, junit, html = tmp_path / "work", tmp_path / "junit.xml", tmp_path / "report.html"
    master, slave = os.openpty()

    def controlling_tty() -> None:  # after setsid (start_new_session): the pty becomes the terminal
        as_in_a_terminal()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "hil", "run", str(scenario),  # progress bar
                             "--workdir", str(work), "--junit", str(junit), "--html", str(html)],
                            cwd=REPO, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, preexec_fn=controlling_tty)
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 120
        while b"booting" not in seen or not (work / "gateway.log").exists():
            assert time.monotonic() < deadline and proc.poll() is None, seen
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        time.sleep(2)
        os.close(master)  # hang up: SIGHUP, and every later write to the terminal fails with EIO
        master = -1
        assert proc.wait(90) == 1  # interrupted, not crashed
        error = ET.parse(junit).getroot().find("testsuite/testcase[@name='run']/error")
        assert error is not None and "interrupted" in (error.get("message") or "")
        assert html.stat().st_size > 0
    finally:
        if master >= 0:
            os.close(master)
        _cleanup(proc, work)  # type: ignore[arg-type]
