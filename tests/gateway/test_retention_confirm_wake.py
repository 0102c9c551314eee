"""The running gateway takes `civicedge gateway retention --confirm` within seconds, not at its next pass.

Found last session: the confirm file was read only by the next retention pass, an `interval_s` later (an
hour by default; a held pass retries every minute), while the command said the next pass runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import make_env
from helpers import until

from gateway.config import load_config
from gateway.retention_clock import CONFIRM_POLL_S, HOLD_MIN_VALUES
from gateway.service import Gateway
from gateway.storage import ReportRecord
from hil.cli.main import main

pytestmark = pytest.mark.timeout(60)

DAY = 86400


async def test_a_confirm_is_taken_within_seconds_and_the_command_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A first pass holds a large removal; passes are an hour apart (the held retry too, here). Fails before:
    the confirmation waited for the next pass, an hour later."""
    import gateway.service

    monkeypatch.setattr(gateway.service, "SKIPPED_RETRY_S", 3600.0)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    now = time.time()
    t = int(now) - int(now) % 900
    gw = Gateway(load_config(cfg))
    gw.store.insert_batch([ReportRecord(  # 200 days old values, received just now: held as a large removal
        device="bin-1", seq=s, kind="bin", zone="north", type="win", w=t - 200 * DAY + 900 * s, l=900,
        m={"temp": 12}, e={}, a=[], fw="1.0", received_at=now - 60, link="serial:x", digest="%064x" % s)
        for s in range(1, HOLD_MIN_VALUES + 11)])
    await gw.start()
    try:
        await until(lambda: gw.retention_clock.reason == "held", "retention was not held")
        capsys.readouterr()
        assert main(["gateway", "retention", "--config", str(cfg), "--confirm"]) == 0
        out = capsys.readouterr().out
        assert "the running gateway takes it within %g s" % CONFIRM_POLL_S in out, out
        asked = time.monotonic()
        await until(lambda: gw.metrics.value("civicedge_retention_removed_total") == HOLD_MIN_VALUES + 10,
                    "the confirmation was not taken", 5 * CONFIRM_POLL_S)
        assert time.monotonic() - asked < 5 * CONFIRM_POLL_S
        assert not (gw.config.data_dir / "retention-confirm").exists()  # one confirmation, one pass
    finally:
        await gw.stop()
    capsys.readouterr()
    assert main(["gateway", "retention", "--config", str(cfg), "--confirm"]) == 0  # stopped: taken at its start
    assert "no gateway runs on this store now: the gateway takes it at its next start" in capsys.readouterr().out


async def test_a_confirm_a_failed_pass_left_waits_for_the_next_pass(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A pass that fails (its store read, here) before it takes the confirmation leaves the file: the next pass
    takes it, an interval later, not the next 2 s look (that would repeat a failing pass every 2 s)."""
    interval = 8.0
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = %g\n" % interval)
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw._retention_saved is not None, "no first pass")  # noqa: SLF001
        real = gw.store.last_received_at
        failed: list[float] = []

        def fail_once() -> float | None:
            gw.store.last_received_at = real  # type: ignore[method-assign]
            failed.append(time.monotonic())
            raise RuntimeError("disk I/O error (test)")

        gw.store.last_received_at = fail_once  # type: ignore[method-assign]
        confirm = gw.config.data_dir / "retention-confirm"
        confirm.write_text("confirmed\n")
        await until(lambda: failed, "the confirmation did not wake the retention task", 5 * CONFIRM_POLL_S)
        await until(lambda: any("retention pass failed" in r.getMessage() for r in caplog.records), "no failure")
        await asyncio.sleep(2 * CONFIRM_POLL_S + 0.5)
        assert confirm.exists()  # not taken by a 2 s look after the failed pass
        await until(lambda: not confirm.exists(), "the next pass did not take the confirmation", interval + 5)
        assert time.monotonic() - failed[0] >= interval - 0.5
        assert any("the operator confirmed the gateway clock" in r.getMessage() for r in caplog.records)
    finally:
        await gw.stop()
