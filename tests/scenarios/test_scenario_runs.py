"""Scenarios run end to end: real firmware on MicroPython (virtual boards), pty serial and the virtual
BLE radio, a gateway process, SQLite. Each shipped example runs green; a scenario whose expectations
cannot hold fails with useful messages in JUnit/HTML; Ctrl-C stops everything, leaving no process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from terminal_signals import as_in_a_terminal

from hil.scenarios import load_scenario
from hil.scenarios.runner import run_scenario

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SPEED = 150.0

FAILING = """
name = "must-fail"
description = "A streetlight cannot raise a fire alarm, nor store a thousand reports in 16 minutes."
start = "2026-11-21T{hhmm}:00Z"
duration = "{duration}"
speed = 60
[[boards]]
board = "streetlight-esp32"
ids = ["{dev}"]
link = "uart"
[boards.stimuli]
set = {{ light = 4, lamp_current = "auto" }}
at = [{{ time = "+30s", every = "90s", pir = "pulse 2s" }}]
[expect]
reports_min = 1000
no_loss = true
alarms = ["fire"]
[[expect.fields]]
field = "lux"
op = ">="
value = 1000000
by = "+16m"
"""




def log_all(workdir: Path) -> str:
    """The whole gateway log of a run."""
    return (workdir / "gateway.log").read_text(errors="replace")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hil.cli.main", "hil", *args]


def _procs_mentioning(*needles: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in needles) and "pytest" not in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["link-outage", "bin-fills-and-fire", "night-with-pedestrians", "reboot-storm"])
async def test_shipped_example_runs_green(name: str, tmp_path: Path) -> None:
    # The examples ship at 60x so a person can watch them; the same virtual timeline runs at 150x
    # here to keep CI short (the reboot storm too: the drain waits for boards still booting).
    scenario = dataclasses.replace(load_scenario(name), speed=EXAMPLE_SPEED)
    result = await run_scenario(scenario, workdir=tmp_path / "work", handle_signals=False)
    log = (result.workdir / "gateway.log").read_text(errors="replace")[-3000:]
    detail = "\n".join(f"{'ok ' if c.passed else 'BAD'} {c.name}: {c.message}" for c in result.checks)
    assert result.passed, f"{detail}\nerrors: {result.errors}\ngateway log:\n{log}"
    assert len(result.checks) == scenario.expect.count()
    assert sum(len(s) for s in result.generated.values()) == len({(r[0], r[1]) for r in result.data.reports})
    assert not _procs_mentioning(str(result.workdir))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_failing_expectations_fail_with_messages_in_junit_and_html(tmp_path: Path) -> None:
    scenario = tmp_path / "must-fail.toml"
    scenario.write_text(FAILING.format(hhmm="20:00", duration="16m", dev="sl-fail-1"))
    junit, page = tmp_path / "out" / "junit.xml", tmp_path / "out" / "report.html"
    proc = subprocess.run(_cli("run", str(scenario), "--plain", "--workdir", str(tmp_path / "work"),
                               "--junit", str(junit), "--html", str(page)),
                          cwd=REPO, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "scenario.must-fail"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"reports_min >= 1000", "no_loss", "alarm fire", "lux >= 1000000 by +16m"}
    assert cases["no_loss"].find("failure") is None, ET.tostring(cases["no_loss"]).decode()
    fail = cases["reports_min >= 1000"].find("failure")
    assert fail is not None and "expected at least 1000" in (fail.get("message") or "")
    alarm = cases["alarm fire"].find("failure")
    assert alarm is not None and "no alarm 'fire' stored" in (alarm.get("message") or "")
    lux = cases["lux >= 1000000 by +16m"].find("failure")
    assert lux is not None and "lux never >= 1000000" in (lux.get("message") or "")
    assert suite.get("failures") == "3"
    html = page.read_text()
    assert "FAILED" in html and html.count("<svg") == 1 and "lux (stored)" in html and "pir pulses" in html
    assert "FAIL" in proc.stdout and "reports_min >= 1000" in proc.stdout  # the result is on stdout


def test_bad_input_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nduration = "soon"\n')
    proc = subprocess.run(_cli("run", str(bad)), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "duration" in proc.stderr
    proc = subprocess.run(_cli("run", "no-such-scenario"), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "shipped examples" in proc.stderr
    proc = subprocess.run(_cli("run", "link-outage", "--speed", "0"), cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--speed" in proc.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("not a scenario run's")
    proc = subprocess.run(_cli("run", "link-outage", "--workdir", str(foreign)), cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not a scenario work directory" in proc.stderr
    assert (foreign / "precious.txt").exists()
    proc = subprocess.run(_cli("validate", "link-outage", str(bad)), cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "ok  link-outage" in proc.stdout and "bad " in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ctrl_c_stops_cleanly_leaving_no_process(tmp_path: Path) -> None:
    scenario = tmp_path / "interrupt.toml"
    # A start time no other test uses: the simulator hosts carry it on their command line.
    scenario.write_text(FAILING.format(hhmm="03:17", duration="3h", dev="sl-int-1").replace("must-fail", "interrupt"))
    start_ms = str(load_scenario(scenario).start_ms)
    work = tmp_path / "work"
    proc = subprocess.Popen(_cli("run", str(scenario), "--plain", "--workdir", str(work)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=as_in_a_terminal)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        seen = ""
        while "running" not in seen:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        assert _procs_mentioning(start_ms), "the simulator host should be running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, seen + out
    assert "interrupted" in out
    time.sleep(0.5)
    assert not _procs_mentioning(start_ms, str(work)), "stray processes after Ctrl-C"
