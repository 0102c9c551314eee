"""The firmware type-checks against the ESP32 MicroPython stubs (PyPI micropython-esp32-stubs 1.27).

pyright runs with ``firmware/pyrightconfig.json`` and ``--typeshedpath`` pointing at the
installed stubs (micropython-stdlib-stubs puts a MicroPython ``stdlib/`` there), so ``time``,
``os``, ``asyncio``, ``machine`` and ``bluetooth`` are the board's, not CPython's: a call that
does not exist on the device fails here. The pyright PyPI package fetches its Node package
on first use (cached afterwards).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SITE = Path(sysconfig.get_paths()["purelib"])


def _pyright(project: Path) -> dict:
    exe = shutil.which("pyright", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("pyright (PyPI) is not installed in this environment; run scripts/setup")
    if not (SITE / "stdlib" / "builtins.pyi").is_file() or not (SITE / "machine.pyi").is_file():
        pytest.skip("micropython-esp32-stubs are not installed; run scripts/setup")
    proc = subprocess.run(
        [exe, "--outputjson", "-p", str(project), "--typeshedpath", str(SITE), "--pythonpath", sys.executable],
        capture_output=True, text=True, timeout=280,
    )
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def _errors(report: dict) -> list[str]:
    return [f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
            for d in report["generalDiagnostics"] if d["severity"] == "error"]


CORE = ("wire/", "privacy/", "store/", "uplink/", "policy.py", "report.py", "civic/__init__.py")


@pytest.fixture(scope="module")
def firmware_report() -> dict:
    """One pyright run over all of firmware/ (main.py, boot.py, lib/)."""
    return _pyright(FIRMWARE / "pyrightconfig.json")


@pytest.mark.timeout(300)
def test_core_typechecks_against_esp32_stubs(firmware_report: dict) -> None:
    assert firmware_report["summary"]["filesAnalyzed"] >= 15
    core = [e for e in _errors(firmware_report) if any(f"/lib/civic/{c}" in e for c in CORE)]
    assert core == []


@pytest.mark.timeout(300)
def test_all_firmware_typechecks_against_esp32_stubs(firmware_report: dict) -> None:
    assert _errors(firmware_report) == []


@pytest.mark.timeout(300)
def test_a_call_missing_on_the_device_fails(tmp_path: Path) -> None:
    """Same settings, a file calling APIs the ESP32 port does not have: pyright must fail."""
    cfg = json.loads((FIRMWARE / "pyrightconfig.json").read_text())
    cfg["include"] = ["lib"]
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(cfg))
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "bad.py").write_text(
        "import time, os, machine\n"
        "t = time.ticks_msx()\n"         # no such function
        "machine.Pin(5).frobnicate()\n"  # no such method
        "n = time.perf_counter()\n"      # CPython-only
    )
    errors = _errors(_pyright(tmp_path / "pyrightconfig.json"))
    assert len(errors) == 3, errors
    assert any("ticks_msx" in e for e in errors)
    assert any("frobnicate" in e for e in errors)
    assert any("perf_counter" in e for e in errors)
