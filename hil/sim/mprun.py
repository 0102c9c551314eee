"""Run a MicroPython script in the real MicroPython WebAssembly runtime (like the unix port).

This is the lightweight runner used by firmware unit tests and benchmarks; full virtual boards
(console, UART, BLE, virtual time) are ``hil.sim.board``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hil.sim import SIM_DIR
from hil.sim import runtime
from hil.sim.runtime import RuntimeMissingError

__all__ = ["MicroPythonError", "MpResult", "RuntimeMissingError", "node_binary", "run_micropython"]


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


@dataclass(frozen=True)
class MpResult:
    """Output of a completed MicroPython run."""

    stdout: str
    stderr: str


def node_binary() -> str:
    """Return the path of ``node`` once the simulator's Node packages are found too (:mod:`hil.sim.runtime`).

    Raises:
        RuntimeMissingError: no ``node``, or no runtime; the message names ``civicedge sim install-runtime``.
    """
    node = runtime.node_binary()
    runtime.find_runtime()
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
    cmd = [*runtime.node_command(), str(SIM_DIR / "mprun.mjs"), "--heap", str(heap_bytes)]
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
