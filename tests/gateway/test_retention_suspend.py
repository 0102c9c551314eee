"""A suspended host or VM that resumes is not a forward step of the gateway clock (review clock2, A).

Found in review: the step check measured elapsed time with ``time.monotonic`` (CLOCK_MONOTONIC), which does
not count suspend on Linux, so every resume of a host suspended overnight looked like a forward step of the
wall clock: the offset grew by the time suspended each night, was saved for good, delayed removal and withheld
ACK time. The gateway now measures with CLOCK_BOOTTIME, which counts suspend.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_env
from helpers import until

from gateway.config import load_config
from gateway.retention_clock import elapsed_clock
from gateway.service import Gateway
from gateway.storage import ReportStore

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0


class Suspended:
    """The ``time`` module with a suspend of ``slept`` s: the wall clock and CLOCK_BOOTTIME count it,
    CLOCK_MONOTONIC does not (as on Linux)."""

    def __init__(self) -> None:
        self.slept = 0.0

    def time(self) -> float:
        return time.time() + self.slept

    def clock_gettime(self, clock: int) -> float:
        assert clock == time.CLOCK_BOOTTIME
        return time.clock_gettime(clock) + self.slept

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="CLOCK_BOOTTIME is Linux's")
async def test_a_resume_after_a_suspend_is_not_a_forward_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: the 8 h suspended were a forward step, saved as an offset at the stop."""
    import gateway.retention_clock
    import gateway.service

    suspended = Suspended()
    monkeypatch.setattr(gateway.service, "time", suspended)
    monkeypatch.setattr(gateway.retention_clock, "time", suspended)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw._retention_saved is not None, "no first pass")  # noqa: SLF001
        suspended.slept = 8 * HOUR
        assert not gw.retention_clock.stepped_since_pass(gw.clock())
        assert not gw.retention_clock.stepped_ahead(gw.clock())
    finally:
        await gw.stop()
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    try:
        assert json.loads(store.retention_meta() or "{}").get("step") is None
    finally:
        store.close()
    assert gw.retention_clock.offset == 0


def test_the_elapsed_clock_counts_suspend_where_linux_can() -> None:
    clock = elapsed_clock()
    if hasattr(time, "CLOCK_BOOTTIME"):
        assert abs(clock() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1.0
    else:
        assert clock is time.monotonic
