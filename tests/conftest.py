"""Shared fixtures. Layer-specific fixtures live in each test folder's conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from gateway.resources import firmware_dir
from hil.sim.mprun import MpResult, run_micropython

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout root."""
    return REPO_ROOT


@pytest.fixture
def mpy() -> Callable[..., MpResult]:
    """Run MicroPython code with the firmware's ``lib/`` on the path (real interpreter, not CPython).

    Usage: ``mpy("from civic.wire import cobs; print(cobs.encode(b'a'))", seed=1).stdout``
    """

    def run(code: str, *, seed: int | str | None = None, heap_bytes: int = 1024 * 1024) -> MpResult:
        return run_micropython(code, libs=[firmware_dir() / "lib"], seed=seed, heap_bytes=heap_bytes)

    return run


@pytest.fixture
def sim_available() -> None:
    """Skip, saying why, where the simulator cannot run (no Node runtime or MicroPython build)."""
    from hil.backends.sim_driver import simulator_unavailable_reason

    reason = simulator_unavailable_reason()
    if reason is not None:
        pytest.skip(str(reason))
