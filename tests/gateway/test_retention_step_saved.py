"""A clock step after the last retention pass is not lost on a restart (review H3).

Found in review: the retention clock's meta row was written only after a pass, so a forward step of the wall
clock made after the last pass (passes are an hour apart) and before a restart was forgotten: the next start
trusted the jumped clock (only the first pass's large-removal rule kept data) and ACKs set boards ahead. Now
the retention task runs its pass as soon as it sees the step (it compares the clocks at each 2 s wake), and
the stop records and saves a step seen since the last pass before the store closes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_env
from helpers import SteppedTime, until

from gateway.config import load_config
from gateway.service import Gateway
from gateway.storage import ReportRecord, ReportStore

pytestmark = pytest.mark.timeout(60)

DAY = 86400.0


async def _saved_step(gw: Gateway) -> dict[str, float] | None:
    raw = await gw.ingest.run_in_store(gw.store.retention_meta)
    assert isinstance(raw, str)
    step = json.loads(raw)["step"]
    assert step is None or isinstance(step, dict)
    return step


def _old_report(gw: Gateway) -> ReportRecord:
    """A report of a board on real time, 200 days behind the stepped clock."""
    now = gw.clock()
    return ReportRecord(device="bin-1", seq=1, kind="bin", zone="north", type="win", w=int(now - 200 * DAY) - 900,
                        l=900, m={}, e={}, a=[], fw="0.1", received_at=now, link="serial:x", digest="0" * 64)


async def _restart_sees_the_step(cfg: Path) -> None:
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw.metrics.value("civicedge_retention_clock_offset_seconds") > 0,
                    "the restarted gateway forgot the step")
        assert gw.metrics.value("civicedge_retention_clock_offset_seconds") == pytest.approx(200 * DAY, abs=600)
        assert gw.retention_clock.stepped_ahead(gw.clock())
        assert not gw.ack_time(_old_report(gw))  # noqa: SLF001 - no ACK time to a board on real time
    finally:
        await gw.stop()


async def test_a_step_between_passes_is_recorded_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: the step waited for the next pass, an interval (here an hour) later."""
    import gateway.service

    stepped = SteppedTime()
    monkeypatch.setattr(gateway.service, "time", stepped)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw._retention_saved is not None, "no first pass")  # noqa: SLF001
        stepped.step = 200 * DAY
        await until(lambda: gw.metrics.value("civicedge_retention_clock_offset_seconds") > 0,
                    "the step was not recorded before the next pass", 10)
        step = await _saved_step(gw)
        assert step is not None and step["offset"] == pytest.approx(200 * DAY, abs=600)
    finally:
        await gw.stop()
    await _restart_sees_the_step(cfg)


async def test_a_step_since_the_last_pass_is_saved_at_the_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway stops before the retention task woke (its look every 2 s made an hour here): the stop saves
    the step. Fails before: the next start trusted the jumped clock."""
    import gateway.service

    stepped = SteppedTime()
    monkeypatch.setattr(gateway.service, "time", stepped)
    monkeypatch.setattr(gateway.service, "CONFIRM_POLL_S", 3600.0)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    gw = Gateway(load_config(cfg))
    await gw.start()
    try:
        await until(lambda: gw._retention_saved is not None, "no first pass")  # noqa: SLF001
        stepped.step = 200 * DAY
    finally:
        await gw.stop()
    # No pass saw it: the stop did, and the gauge shows it (it was set at the end of a pass only, so read 0).
    assert gw.metrics.value("civicedge_retention_clock_offset_seconds") == pytest.approx(200 * DAY, abs=600)
    monkeypatch.setattr(gateway.service, "CONFIRM_POLL_S", 2.0)
    await _restart_sees_the_step(cfg)


def test_the_command_shows_a_saved_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review H2: `civicedge gateway retention` said "not held" while a saved step delayed removal."""
    from gateway.retention_clock import META_KEY
    from hil.cli.main import main

    cfg = make_env(tmp_path)
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    step = {"offset": 200 * DAY, "at": 1_790_000_000.0, "stamped": 0.0}
    store.save_meta(META_KEY, json.dumps({"hold": None, "ran_at": 1_790_000_000.0 - 200 * DAY, "days": None,
                                          "step": step}))
    store.close()
    assert main(["gateway", "retention", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("retention is not held\nclock step saved: the gateway clock stepped forward by 200.0 days"
                          " (not confirmed; its reading at the last pass 2026-09-21 14:13:20 UTC)"), out
    hold = {"reason": "clock_ahead", "since": 1_790_000_000.0, "agreed_s": 0, "detail": "d"}
    store = ReportStore(tmp_path / "data" / "reports.sqlite", gateway_id="gw-test")
    store.save_meta(META_KEY, json.dumps({"hold": hold, "step": step}))
    store.close()
    assert main(["gateway", "retention", "--config", str(cfg), "--confirm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "retention held since 2026-09-21 14:13:20 UTC (gateway clock): d"
    assert lines[1].startswith("clock step saved: the gateway clock stepped forward by 200.0 days")
    assert "no gateway runs on this store now" in lines[2] and "any forward step it was not following ends" in lines[2]
