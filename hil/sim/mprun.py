"""Run a MicroPython script in the real MicroPython WebAssembly runtime (like the unix port).

This is the lightweight runner used by firmware unit tests and benchmarks; full virtual boards
(console, UART, BLE, virtual time) are ``hil.sim.board``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hil.sim import SIM_DIR


class MicroPythonError(Exception):
    """A script raised an uncaught exception inside MicroPython.

    Attributes:
        traceback: the MicroPython traceback text as printed by the device.
        stdout: what the script printed before failing.
    """

    def __init__(self, traceback: str, stdout: str) -> None:
        super().__init__(f"MicroPython raised:\n{traceback}")
        self.traceback = traceback
        self.stdout = stdout


class RuntimeMissingError(Exception):
    """Node or the simulator's Node packages are not installed (run ``scripts/setup``)."""


@dataclass(frozen=True)
class MpResult:
    """Output of a completed MicroPython run."""

    stdout: str
    stderr: str


def node_binary() -> str:
    """Return the path of ``node`` or raise :class:`RuntimeMissingError`."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeMissingError("node is not on PATH; run scripts/setup")
    if not (SIM_DIR / "node_modules" / "@micropython").is_dir():
        raise RuntimeMissingError(f"{SIM_DIR}/node_modules is missing; run scripts/setup (npm ci in hil/sim)")
    return node


def run_micropython(
    code: str,
    *,
    libs: Sequence[Path] = (),
    seed: int | str | None = None,
    heap_bytes: int = 1024 * 1024,
    timeout_s: float = 120.0,
    steps: bool = False,
) -> MpResult:
    """Execute ``code`` in MicroPython and return its output.

    Args:
        code: MicroPython source to run as ``__main__``.
        libs: host directories copied to ``/lib`` on the virtual flash (on ``sys.path``).
        seed: make ``os.urandom`` deterministic (simulation only); None uses the host CSPRNG.
        heap_bytes: MicroPython GC heap size.
        timeout_s: wall-clock limit for the run.
        steps: after ``code``, call its ``mprun_step()`` from the top level until it returns
            something other than True. The WebAssembly port collects garbage only at the top
            level (``gc.collect()`` inside a script only marks a collection as pending), so a step
            that ends with ``gc.collect()`` leaves the next one a heap of live objects only.

    Raises:
        MicroPythonError: the script raised; carries the device traceback.
        subprocess.TimeoutExpired: the script ran longer than ``timeout_s``.
    """
    cmd = [node_binary(), str(SIM_DIR / "mprun.mjs"), "--heap", str(heap_bytes)]
    for lib in libs:
        cmd += ["--lib", str(lib)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if steps:
        cmd.append("--steps")
    cmd.append("-")
    proc = subprocess.run(cmd, input=code, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode == 1:
        raise MicroPythonError(proc.stderr, proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"mprun failed ({proc.returncode}): {proc.stderr.strip()}")
    return MpResult(stdout=proc.stdout, stderr=proc.stderr)
