"""``run_micropython(..., steps=True)``: steps run from the top level, where the WebAssembly port
collects garbage; the firmware memory benchmark relies on this to see the live heap."""

from __future__ import annotations

import pytest

from hil.sim.mprun import MicroPythonError, run_micropython

pytestmark = pytest.mark.usefixtures("sim_available")

_STEPS = """
import gc
N = [0]
def mprun_step():
    N[0] += 1
    print("step", N[0], gc.mem_alloc())
    junk = [bytearray(1000) for _ in range(50)]   # ~50 KB of garbage per step
    gc.collect()
    return N[0] < 4
"""


def _allocs(stdout: str) -> list[int]:
    return [int(line.split()[2]) for line in stdout.splitlines() if line.startswith("step ")]


def test_each_step_starts_on_a_collected_heap() -> None:
    allocs = _allocs(run_micropython(_STEPS, steps=True).stdout)
    assert len(allocs) == 4                           # called until it returned False
    assert max(allocs) - min(allocs) < 4096           # the 50 KB of each step was collected


def test_without_steps_a_script_never_frees() -> None:
    # why the benchmark needs steps: inside one script gc.collect() reclaims nothing here
    out = run_micropython(_STEPS + "for _ in range(3):\n    mprun_step()\n").stdout
    allocs = _allocs(out)
    assert allocs[2] - allocs[0] > 2 * 45000


def test_an_error_in_a_step_is_reported() -> None:
    with pytest.raises(MicroPythonError, match="ZeroDivisionError"):
        run_micropython("def mprun_step():\n    return 1 // 0\n", steps=True)
