"""The running gateway takes `civicedge gateway retention --confirm` within seconds, not at its next pass.

Found last session: the confirm file was read only by the next retention pass, an `interval_s` later (an
hour by default; a held pass retries every minute), while the command said the next pass runs.
"""

from __future__ import annotations

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
