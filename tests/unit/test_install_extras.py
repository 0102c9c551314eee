"""A gateway-only install (``pip install civicedge``, no extras) runs the CLI and the gateway.

What the extras install and the core does not (route solver, field tools, harness, and what they bring
with them: websockets came only through Bumble) is made unimportable in child interpreters by a
``sys.meta_path`` finder installed through ``sitecustomize`` (tests/install_closure.py, from the
metadata); the commands that need them say which extra to install (hil.cli.extras).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from install_closure import write_sitecustomize

ROOT = Path(__file__).resolve().parents[2]
CIVICEDGE = [sys.executable, "-m", "hil.cli.main"]

@pytest.fixture(scope="module")
def blocker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blocker")
    write_sitecustomize(path)
    return path


def _env(blocker: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOURNAL_STREAM")}
    parts = ([str(blocker)] if blocker is not None else []) + [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def _run(args: list[str], blocker: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CIVICEDGE, *args], capture_output=True, text=True, env=_env(blocker), cwd=cwd,
                          timeout=60)


def test_the_blocker_blocks(blocker_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "import esptool"], capture_output=True, text=True,
                         env=_env(blocker_dir), cwd=tmp_path, timeout=30)
    assert out.returncode == 1 and "ModuleNotFoundError: No module named 'esptool'" in out.stderr
    # from the metadata: also what an extra brings only through another distribution (Bumble's websockets)
    out = subprocess.run([sys.executable, "-c", "import websockets"], capture_output=True, text=True,
                         env=_env(blocker_dir), cwd=tmp_path, timeout=30)
    assert out.returncode == 1 and "No module named 'websockets'" in out.stderr


def test_version_and_help_without_extras(blocker_dir: Path, tmp_path: Path) -> None:
    version = _run(["--version"], blocker_dir, tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("civicedge ")
    helped = _run(["--help"], blocker_dir, tmp_path)
    assert helped.returncode == 0, helped.stderr
    for command in ("gateway", "routes", "boards", "flash", "provision", "check"):
        assert command in helped.stdout
    assert "needs the 'field' extra" in helped.stdout


@pytest.mark.parametrize("args", [["flash", "--help"], ["flash", "--port", "/dev/ttyUSB0"], ["provision"]])
def test_field_command_names_its_extra(blocker_dir: Path, tmp_path: Path, args: list[str]) -> None:
    out = _run(args, blocker_dir, tmp_path)
    assert out.returncode == 2, out  # the field commands' error status
    assert out.stderr.startswith(f"error: civicedge {args[0]} needs the 'field' extra: "
                                 "pip install 'civicedge[field]' (missing module "), out.stderr
    assert "Traceback" not in out.stderr


def _free_port() -> int:
    """A free port of this test's range (47500-47599), else the kernel's pick."""
    for port in range(47500, 47600):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gateway_init_check_and_run_without_extras(blocker_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    init = _run(["gateway", "init", str(config)], blocker_dir, tmp_path)
    assert init.returncode == 0, init.stderr
    port = _free_port()
    config.write_text(config.read_text().replace("port = 8080", f"port = {port}", 1))
    check = _run(["gateway", "run", "--check", "--config", str(config)], blocker_dir, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr

    proc = subprocess.Popen([*CIVICEDGE, "gateway", "run", "--config", str(config)], env=_env(blocker_dir),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    health = json.loads(resp.read())
                break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        assert health is not None, "no /healthz answer within 15 s"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err, err


def test_gateway_service_does_not_load_numpy(tmp_path: Path) -> None:
    code = ("import sys, gateway.service, gateway.routes.web, gateway.routes; "
            "print(sorted(m for m in ('numpy', 'ortools') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(None),
                         cwd=tmp_path, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def _session_processes(sid: int) -> list[str]:
    """The processes still in session ``sid`` (a child started with ``start_new_session``), as
    ``pid command`` lines."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm)": state ppid pgrp session ...
        if int(fields[3]) == sid:
            left.append(text[:text.rindex(")") + 1])
    return left


@pytest.mark.parametrize("args, command", [
    (["demo"], "demo"),
    (["hil", "run", "bin-fills-and-fire"], "hil run"),  # its bins report over the virtual BLE radio
])
def test_ble_commands_name_the_hil_extra(blocker_dir: Path, tmp_path: Path, args: list[str], command: str) -> None:
    # websockets (the radio relay) came only through Bumble: it was a traceback, not the extra's name.
    started = time.monotonic()
    proc = subprocess.Popen([*CIVICEDGE, *args], env=_env(blocker_dir), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    left = _session_processes(proc.pid)
    if left:
        os.killpg(proc.pid, 9)
    assert time.monotonic() - started < 20, "the extra's error must come before anything starts"
    assert "Traceback" not in err, err
    assert proc.returncode == 1, err  # demo's and hil run's "could not start"
    # one line, before anything is said to start (review: demo printed "starting ...", hil run its banner)
    assert (out, err) == ("", f"error: civicedge {command} needs the 'hil' extra: pip install 'civicedge[hil]' "
                              "(missing module bumble)\n"), (out, err)
    assert not left, f"processes left behind: {left}"


@pytest.mark.parametrize(("args", "given"), [
    (["provision", "--json"], {}), (["check", "--port", "/dev/ttyUSB0", "--json"], {"port": "/dev/ttyUSB0"}),
    (["check", "--json", "--help"], {}), (["provision", "--id", "x", "--json"], {"id": "x"}),
    # review of 278d9fa: the batch example of docs/field.md builds its inventory from .id
    (["provision", "--port=/dev/x", "--id=bin-01", "--json"], {"id": "bin-01", "port": "/dev/x"}),
])
def test_json_field_commands_print_one_record(blocker_dir: Path, tmp_path: Path, args: list[str],
                                              given: dict[str, str]) -> None:
    out = _run(args, blocker_dir, tmp_path)
    assert out.returncode == 2, out
    message = (f"civicedge {args[0]} needs the 'field' extra: pip install 'civicedge[field]' "
               "(missing module mpremote)")
    # exactly one JSON object on stdout, as docs/field.md ("Batches: --json") promises whatever happens
    assert json.loads(out.stdout) == {"id": None, "port": None, "fingerprint": None, "result": "error",
                                      "error": message, "exit": 2, **given}, out.stdout
    assert out.stdout.count("\n") == 1
    assert out.stderr == f"error: {message}\n"


def test_json_commands_are_the_field_clis() -> None:
    from hil.cli import extras
    from hil.field.cli_common import JSON_COMMANDS

    assert extras._JSON_COMMANDS == JSON_COMMANDS


def test_field_command_without_json_prints_nothing_on_stdout(blocker_dir: Path, tmp_path: Path) -> None:
    out = _run(["flash", "--json"], blocker_dir, tmp_path)  # flash has no --json
    assert out.returncode == 2 and out.stdout == "", out


def test_virtual_ble_backend_needs_the_hil_extra(blocker_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    assert _run(["gateway", "init", str(config)], blocker_dir, tmp_path).returncode == 0
    text = config.read_text().replace("port = 8080", f"port = {_free_port()}", 1)
    text = text.replace('enabled = false\nbackend = "bluez"',
                        'enabled = true\nbackend = "virtual"\nradio = "ws://127.0.0.1:47599/civic"', 1)
    assert 'backend = "virtual"' in text
    config.write_text(text)
    message = ("error (open_failed): [ble] backend = \"virtual\" needs the 'hil' extra: pip install "
               "'civicedge[hil]' (missing module ")
    check = _run(["gateway", "run", "--check", "--config", str(config)], blocker_dir, tmp_path)
    assert check.returncode == 1, check  # refused by the check, not only when run
    assert message in check.stderr and "config OK" not in check.stdout, check
    run = _run(["gateway", "run", "--config", str(config)], blocker_dir, tmp_path)
    assert run.returncode == 1, run
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr
    # with the extra installed (this venv) the check passes
    ok = subprocess.run([*CIVICEDGE, "gateway", "run", "--check", "--config", str(config)], capture_output=True,
                        text=True, env=_env(None), cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_the_standalone_radio_relay_names_the_hil_extra(blocker_dir: Path, tmp_path: Path) -> None:
    """Review of 278d9fa: ``python -m hil.sim.radio`` imported the relay at module level (a traceback)."""
    out = subprocess.run([sys.executable, "-m", "hil.sim.radio"], capture_output=True, text=True,
                         env=_env(blocker_dir), cwd=tmp_path, timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == ("radio: python -m hil.sim.radio needs the 'hil' extra: pip install 'civicedge[hil]'"
                                  " (missing module websockets)"), out.stderr


def test_paho_is_a_declared_core_dependency() -> None:
    """gateway/upstream imports paho directly; it came only through aiomqtt."""
    from importlib.metadata import requires

    core = [r for r in requires("civicedge") or [] if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("paho-mqtt") for r in core), core


def test_the_closure_follows_a_dependencys_own_extras(tmp_path: Path) -> None:
    """Review of 278d9fa: `pkg[extra]` requirements were followed without their extra's dependencies, so a
    module reachable only that way stayed visible in the simulated core-only install."""
    from install_closure import closure

    with_extras = closure(core=False, roots=("esptool",))
    if not {"esptool", "esp-pylib"} <= with_extras:
        pytest.skip("esptool (the field extra) is not installed here")
    from importlib.metadata import requires

    by_extra = [r for r in requires("esp-pylib") or [] if "extra ==" in r]
    asked = [r for r in requires("esptool") or [] if r.replace(" ", "").startswith("esp-pylib[")]
    if not by_extra or not asked:
        pytest.skip("this esptool asks for no esp-pylib extra")
    from packaging.requirements import Requirement

    needed = {Requirement(r).name.lower().replace("_", "-") for r in by_extra
              if any(Requirement(r).marker.evaluate({"extra": e}) for e in Requirement(asked[0]).extras)}
    assert needed and needed <= with_extras, (needed, with_extras)
