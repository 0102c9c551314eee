"""``civicedge sim up`` / ``sim fleet``: one JSON line per board, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from terminal_signals import as_in_a_terminal
import serial

from tests.sim.conftest import node_alive

pytestmark = pytest.mark.timeout(90)

CIVICEDGE = [sys.executable, "-m", "hil.cli.main"]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CIVICEDGE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2], preexec_fn=as_in_a_terminal)


def stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_up_prints_one_json_line_and_exits_cleanly(tmp_path, sig):
    flash = tmp_path / "flash"
    proc = start("sim", "up", "--board", "streetlight-esp32", "--id", "sl-cli", "--flash", str(flash), "--json")
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        info = json.loads(line)
        assert info["id"] == "sl-cli" and info["board"] == "streetlight-esp32"
        assert info["console"].startswith("/dev/pts/") and info["data"].startswith("/dev/pts/")
        assert info["flash"] == str(flash.resolve())
        identity = json.loads(Path(info["identity"]).read_text())
        assert identity["id"] == "sl-cli" and len(bytes.fromhex(identity["key"])) == 32
        assert identity["key"] not in line  # the key is never printed
        assert (flash / "main.py").exists() and (flash / "board.json").exists() and (flash / "policy.json").exists()
        with serial.Serial(info["console"], 115200, timeout=5) as con:
            con.write(b"\r\x03")
            con.write(b"print('UP', 1+1)\r")
            deadline = time.monotonic() + 10
            seen = b""
            while b"UP 2" not in seen and time.monotonic() < deadline:
                seen += con.read(256)
            assert b"UP 2" in seen
        node_pid = info["pid"]
        assert node_alive(node_pid)
    except BaseException:
        proc.kill()
        raise
    assert stop(proc, sig) == 0
    time.sleep(0.2)
    assert not node_alive(node_pid), "the Node host outlived `sim up`"


def test_sim_up_bad_board_is_a_clear_error():
    proc = start("sim", "up", "--board", "no-such-board", "--json")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "no-such-board" in err and out == ""


def test_sim_fleet_one_line_per_board_in_few_processes(tmp_path):
    proc = start("sim", "fleet", "--count", "4", "--board", "bin-esp32c3", "--flash-root", str(tmp_path), "--json")
    try:
        infos = [json.loads(proc.stdout.readline()) for _ in range(4)]  # type: ignore[union-attr]
    except BaseException:
        proc.kill()
        raise
    assert sorted(i["id"] for i in infos) == ["vb-0001", "vb-0002", "vb-0003", "vb-0004"]
    pids = {i["pid"] for i in infos}
    assert len(pids) <= (os.cpu_count() or 1)
    assert all(i["data"] is None for i in infos)  # the bin board has no UART link
    assert stop(proc, signal.SIGTERM) == 0
    time.sleep(0.2)
    assert not any(node_alive(p) for p in pids)


def test_sim_up_with_a_stimuli_file_fixes_start_and_values(tmp_path):
    stim = tmp_path / "s.toml"
    stim.write_text('start = "2026-03-01T21:59:00Z"\n[set]\nlight = 3\n')
    proc = start("sim", "up", "--board", "streetlight-esp32", "--flash", str(tmp_path / "f"), "--no-install",
                 "--stimuli", str(stim), "--json")
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        with serial.Serial(info["console"], 115200, timeout=5) as con:
            con.write(b"import time, machine\rprint('AT', time.time(), machine.ADC(machine.Pin(34)).read_uv())\r")
            deadline = time.monotonic() + 10
            seen = b""
            while (b"AT " not in seen or not seen.rstrip().endswith(b">>>")) and time.monotonic() < deadline:
                seen += con.read(256)
        fields = seen.split(b"AT ")[-1].split()
        assert 1772402340 <= int(fields[0]) < 1772402340 + 60   # 2026-03-01T21:59:00Z + seconds of wall time
        assert int(fields[1]) == 10000                          # 3 lx through lux_per_volt = 300
    finally:
        assert stop(proc, signal.SIGTERM) == 0


def test_sim_up_without_id_names_the_board_after_the_identity_its_flash_holds(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "identity.json").write_text(json.dumps({"id": "sl-held", "kind": "streetlight", "zone": "sim",
                                                     "lat": "0.0", "lon": "0.0", "key": "ab" * 32}))
    proc = start("sim", "up", "--board", "streetlight-esp32", "--flash", str(flash), "--json")
    try:
        info = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert info["id"] == "sl-held"  # it printed a generated vb-... id while the firmware ran as sl-held
    finally:
        assert stop(proc, signal.SIGTERM) == 0
