"""Firmware test helpers: run MicroPython (real wasm runtime) on a persistent virtual flash.

``mprun`` copies ``--lib`` into an in-memory filesystem that vanishes with the process, so
``flash_run`` gives a test a host directory that plays the device flash across runs
("reboots"): its files are written into ``/flash`` before the script runs and every file under
``/flash`` is copied back afterwards, also when the script raised (a "power loss" at that
point). Paths on the device are ``/flash/...``.
"""

from __future__ import annotations

import binascii
from pathlib import Path
from typing import Callable

import pytest

from gateway.resources import firmware_dir
from hil.sim.mprun import MicroPythonError, run_micropython

_MARK = "@@FLASH "
_END = "@@FLASHEND"

_PRELUDE = '''
import os, binascii
def _fl_mkdirs(path):
    cur = ""
    for part in path.split("/")[:-1]:
        if part:
            cur += "/" + part
            try:
                os.mkdir(cur)
            except OSError:
                pass
try:
    os.mkdir("/flash")
except OSError:
    pass
for _p, _h in _FL_FILES:
    _fl_mkdirs(_p)
    with open(_p, "wb") as _f:
        _f.write(binascii.unhexlify(_h))
def _fl_dump(d):
    for _e in os.ilistdir(d):
        _p = d + "/" + _e[0]
        if _e[1] == 0x4000:
            print("@@FLASH " + _p + "/ -")
            _fl_dump(_p)
        else:
            with open(_p, "rb") as _f:
                print("@@FLASH " + _p + " " + binascii.hexlify(_f.read()).decode())
try:
    exec(_FL_CODE, {"__name__": "__main__"})
finally:
    _fl_dump("/flash")
    print("@@FLASHEND")
'''


class FlashResult:
    """Output of a run on persistent flash: ``stdout`` without the flash dump, ``error`` if it raised."""

    def __init__(self, stdout: str, error: MicroPythonError | None) -> None:
        self.stdout = stdout
        self.error = error


def _snapshot(flash: Path) -> list[tuple[str, str]]:
    files = []
    for p in sorted(flash.rglob("*")):
        if p.is_file():
            files.append(("/flash/" + p.relative_to(flash).as_posix(), binascii.hexlify(p.read_bytes()).decode()))
    return files


def _restore(flash: Path, stdout: str) -> str:
    if _END not in stdout:
        raise AssertionError("flash dump missing from MicroPython output:\n" + stdout[-2000:])
    for p in sorted(flash.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    kept = []
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            dev_path, data = line[len(_MARK):].rsplit(" ", 1)
            host = flash / dev_path[len("/flash/"):]
            if dev_path.endswith("/"):
                host.mkdir(parents=True, exist_ok=True)
            else:
                host.parent.mkdir(parents=True, exist_ok=True)
                host.write_bytes(binascii.unhexlify(data))
        elif line != _END:
            kept.append(line)
    return "\n".join(kept)


@pytest.fixture
def flash_run() -> Callable[..., FlashResult]:
    """Run MicroPython ``code`` with ``flash`` (host dir) mounted as persistent ``/flash``.

    ``flash_run(code, flash, seed=None, expect_error=False, heap_bytes=1 MiB)``: raises the MicroPythonError
    unless ``expect_error``; with ``expect_error`` it fails if the code did *not* raise.
    """

    def run(code: str, flash: Path, *, seed: int | str | None = None, expect_error: bool = False,
            heap_bytes: int = 1024 * 1024) -> FlashResult:
        flash.mkdir(parents=True, exist_ok=True)
        script = f"_FL_FILES = {_snapshot(flash)!r}\n_FL_CODE = {code!r}\n" + _PRELUDE
        try:
            res = run_micropython(script, libs=[firmware_dir() / "lib"], seed=seed, heap_bytes=heap_bytes)
        except MicroPythonError as exc:
            if not expect_error:
                _restore(flash, exc.stdout)
                raise
            return FlashResult(_restore(flash, exc.stdout), exc)
        if expect_error:
            raise AssertionError("expected the MicroPython code to raise")
        return FlashResult(_restore(flash, res.stdout), None)

    return run
