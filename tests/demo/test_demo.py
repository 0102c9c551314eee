"""`civicedge demo` (issue 5 item 7): the README's first command, run as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hil.demo.runner import TEST_HOLD_BOOT_ENV
from terminal_signals import as_in_a_terminal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline[:200]}")
    return found


def _stored(db: Path) -> dict[str, set[str]]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT device, link FROM reports").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    out: dict[str, set[str]] = {}
    for device, link in rows:
        out.setdefault(device, set()).add(link.split(":")[0])
    return out


def test_demo_runs_both_links_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli.main", "demo", "--streetlights", "1", "--bins", "1", "--speed", "30",
         "--http-port", "0", "--workdir", str(workdir), "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=as_in_a_terminal,
    )
    db = workdir / "data" / "reports.sqlite"
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and proc.poll() is None:
            stored = _stored(db)
            if stored.get("sl-001") and stored.get("bin-001"):
                break
            time.sleep(1)
        assert proc.poll() is None, "demo exited early"
        # The dashboard's collection-plan panel has a depot to plan from (it answered 400 before).
        import tomllib
        import urllib.request

        port = tomllib.loads((workdir / "gateway.toml").read_text())["http"]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/routes/plan", timeout=30) as resp:
            plan = json.loads(resp.read())
        assert resp.status == 200 and plan["depot"]["lat"] == pytest.approx(52.3702), plan
        # The gateway's clock follows the boards: the demo rewrites the file its [sim_clock] follows.
        assert 'follow_file = "sim-clock.json"' in (workdir / "gateway.toml").read_text()
        clock = json.loads((workdir / "sim-clock.json").read_text())
        assert abs(clock["wall_at"] - time.time()) < 5 and 0 < clock["speed"] <= 30 * 1.5, clock
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "dashboard http://127.0.0.1:" in out
    assert "stopped." in out
    stored = _stored(db)
    assert stored.get("sl-001") == {"serial"}, out   # streetlights report over their UART pty
    assert stored.get("bin-001") == {"ble"}, out     # bins over the virtual BLE radio
    assert _processes_mentioning(str(workdir)) == []  # no stray Node host or gateway


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--streetlights", "0", "--bins", "0"], "at least one board"),
        (["--speed", "0"], "--speed must be"),
        (["--duration", "-5"], "--duration must be positive"),
        (["--start", "yesterday"], "bad --start"),
        (["--start", "1970-01-01T00:00:00Z"], "--start must be from 2024-01-02"),
        (["--duration", "nan"], "--duration must be positive"),
        (["--speed", "3600.5"], "got 3600.5"),
    ],
)
def test_demo_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "demo", "--workdir", str(tmp_path / "d"), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr


def test_demo_never_deletes_a_directory_it_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "demo", "--workdir", str(precious), "--duration", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2  # a bad argument, as --help says
    assert "not a civicedge demo directory" in proc.stderr  # errors go to stderr
    assert "starting" not in proc.stdout  # told before anything is said to start
    assert (precious / "notes.txt").read_text() == "keep me"


def test_a_workdir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    for workdir in (tmp_path / "afile" / "sub", Path("/proc/civicedge-demo")):
        proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "demo", "--workdir", str(workdir),
                               "--duration", "1"], capture_output=True, text=True, timeout=60)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out and "choose another --workdir" in out, out


def test_the_gateway_does_not_outlive_a_killed_demo(tmp_path: Path) -> None:
    """kill -9 (or a closed terminal) used to leave the gateway running, holding the port and store."""
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli.main", "demo", "--streetlights", "1", "--bins", "0", "--http-port", "0",
         "--workdir", str(workdir), "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=as_in_a_terminal,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("gateway up"):
                break
        gateway = [p for p in _processes_mentioning(str(workdir)) if "gateway run" in p]
        assert gateway, _processes_mentioning(str(workdir))
        # A second demo on the same workdir would have deleted this one's store under it.
        second = subprocess.run([sys.executable, "-m", "hil.cli.main", "demo", "--workdir", str(workdir),
                                 "--duration", "1", "--http-port", "0"], capture_output=True, text=True, timeout=60)
        # Refused by the work directory's lock (held for the demo's whole life), naming the holder.
        assert second.returncode == 2 and f"in use by another run (pid {proc.pid})" in second.stderr, second
        assert (workdir / "data" / "reports.sqlite").is_file()
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 30
        while [p for p in _processes_mentioning(str(workdir)) if "gateway run" in p]:
            assert time.monotonic() < deadline, _processes_mentioning(str(workdir))
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _demo(workdir: Path, *args: str, hold_boot: Path | None = None) -> subprocess.Popen[str]:
    """``civicedge demo`` with one streetlight; ``hold_boot``: the demo's test hook (:func:`_held_while_booting`)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(TEST_HOLD_BOOT_ENV, None)
    if hold_boot is not None:
        env[TEST_HOLD_BOOT_ENV] = str(hold_boot)
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli.main", "demo", "--streetlights", "1", "--bins", "0", "--http-port", "0",
         "--workdir", str(workdir), "--plain", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=as_in_a_terminal,
    )


def _held_while_booting(proc: subprocess.Popen[str], hold_boot: Path) -> None:
    """Wait until the demo says (through its test hook) that it holds mid-boot: its first board started,
    the rest and the gateway not. Polling for a flash folder instead raced the rest of the boot under load."""
    deadline = time.monotonic() + 120
    while not hold_boot.exists() or not hold_boot.read_text().endswith("\n"):
        assert time.monotonic() < deadline and proc.poll() is None, "the demo never reached its boot hold"
        time.sleep(0.05)
    assert hold_boot.read_text() == f"{proc.pid}\n"


def test_two_demos_started_together_on_one_workdir(tmp_path: Path) -> None:
    """The second used to wipe the first's work directory while it booted (FileNotFoundError: gateway.log)."""
    workdir = tmp_path / "demo"
    hold = tmp_path / "booting"
    first = _demo(workdir, "--duration", "1", hold_boot=hold)
    try:
        _held_while_booting(first, hold)  # the second comes while the first boots, however loaded the machine
        second = _demo(workdir, "--duration", "3")
        out2, err2 = second.communicate(timeout=60)
        assert second.returncode == 2 and "starting" not in out2, out2 + err2
        assert f"in use by another run (pid {first.pid})" in err2 and "Traceback" not in out2 + err2
        assert (workdir / "flash" / "sl-001").is_dir()  # the first's files are still there
        hold.with_name(hold.name + ".release").touch()
        out1, err1 = first.communicate(timeout=120)
        assert first.returncode == 0 and "Traceback" not in out1 + err1, out1 + err1
        assert "stopped." in out1
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
                p.communicate()
    # Free again once the first stopped.
    third = _demo(workdir, "--duration", "1")
    out3, err3 = third.communicate(timeout=120)
    assert third.returncode == 0, out3 + err3


def test_ctrl_c_while_booting_stops_at_once(tmp_path: Path) -> None:
    """SIGINT during the fleet's boot used to be acted on only once the fleet and gateway were up."""
    workdir = tmp_path / "demo"
    hold = tmp_path / "booting"
    proc = _demo(workdir, "--streetlights", "6", hold_boot=hold)  # never released: only Ctrl-C ends the boot
    try:
        _held_while_booting(proc, hold)
        proc.send_signal(signal.SIGINT)
        t = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "gateway up" not in out, out + err
    assert "interrupted while starting" in out
    assert took < 20, took
    assert not (workdir / "gateway.log").exists()
    assert [p.name for p in (workdir / "flash").iterdir()] == ["sl-001"]  # no board started after Ctrl-C
    assert _processes_mentioning(str(workdir)) == []


def _host_pids(parent: int) -> list[int]:
    """The Node simulator hosts started by process ``parent``."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"host.mjs" in cmdline:
            pids.append(int(pid))
    return sorted(pids)


def _ble_connected(workdir: Path) -> bool:
    """The demo's gateway has a BLE link to a bin (its /metrics say so)."""
    import tomllib
    import urllib.request

    try:
        port = tomllib.loads((workdir / "gateway.toml").read_text())["http"]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    except (OSError, ValueError, KeyError):
        return False
    return any(line.startswith("civicedge_ble_connected ") and float(line.split()[1]) >= 1
               for line in metrics.splitlines())


def test_simulator_hosts_that_die_stop_the_demo_with_exit_1(tmp_path: Path) -> None:
    """A killed Node host used to leave its boards silent for the rest of the run, with nothing said.
    Every host that ended is named (two killed together: only one was). With a bin connected over
    BLE, its link's end, forwarded to a board whose host is gone, was an ERROR with a traceback."""
    workdir = tmp_path / "demo"
    proc = _demo(workdir, "--streetlights", "1", "--bins", "1", "--duration", "90")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("gateway up"):
                break
        deadline = time.monotonic() + 60
        while not _ble_connected(workdir):
            assert time.monotonic() < deadline and proc.poll() is None, "the bin never connected"
            time.sleep(0.5)
        hosts = _host_pids(proc.pid)
        assert len(hosts) == min(2, os.cpu_count() or 1), hosts
        for victim in hosts:
            os.kill(victim, signal.SIGKILL)
        t = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, rest + err
    if len(hosts) == 2:  # board i runs on host i % 2: sl-001 on host 1, bin-001 on host 2
        boards = {"1": "sl-001", "2": "bin-001"}
        for victim in hosts:
            number = re.search(rf"simulator host (\d) \(pid {victim}\)", err)
            assert number is not None, err
            assert (f"error: simulator host {number[1]} (pid {victim}) exited with status -9 (killed by SIGKILL); "
                    f"its board {boards[number[1]]} is stopped") in err, err
        assert err.count("; stopping the demo") == 1, err  # said once, after the last host
    else:
        assert (f"error: simulator host 1 (pid {hosts[0]}) exited with status -9 (killed by SIGKILL); "
                "its boards sl-001, bin-001 are stopped; stopping the demo") in err, err
    assert took < 30, took  # at once, not at --duration's end
    assert "Traceback" not in rest + err and "ERROR" not in err, err
    assert "stopped." in rest and "gateway exit status 0" in rest, rest  # drained and summed up as usual
    assert _processes_mentioning(str(workdir)) == []
