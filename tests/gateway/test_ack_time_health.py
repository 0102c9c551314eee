"""/healthz says while ACKs go without the gateway's time (ACK time sync withheld: the clock is suspect).

Found last session: only the log said so (a WARNING at most every 10 min); /healthz and STATUS= showed
nothing, so an operator watching the health did not know boards were left out of time sync, nor what to run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_env
from helpers import SteppedTime

from gateway.ack_time import AckTime
from gateway.config import load_config
from gateway.health import WARNING, as_json, summary
from gateway.retention_clock import RetentionClock
from gateway.service import Gateway
from gateway.storage import ReportRecord

DAY = 86400


def _report(device: str, end: float) -> ReportRecord:
    return ReportRecord(device=device, seq=1, kind="bin", zone="north", type="win", w=int(end) - 900, l=900, m={},
                        e={}, a=[], fw="0.1", received_at=end, link="serial:x", digest="0" * 64)


def test_healthz_warns_while_ack_time_is_withheld_and_clears_once_confirmed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: no health problem while the ACKs went without the time. The step is a real one: the
    gateway's wall clock moves 200 days against its monotonic clock (the retention clock detects it)."""
    import gateway.service

    stepped = SteppedTime()
    monkeypatch.setattr(gateway.service, "time", stepped)
    gw = Gateway(load_config(make_env(tmp_path)))
    try:
        now = gw.clock()
        rc = gw.retention_clock
        assert rc.removal_time(now, now - 60) is not None  # a pass: the baseline
        assert gw.ack_time(_report("bin-1", now - 200 * DAY))  # noqa: SLF001 - trusted: a board behind is set
        assert not [p for p in gw._health() if p.code == "ack_time_withheld"]  # noqa: SLF001
        stepped.step = 200 * DAY  # the wall clock jumps forward while the gateway runs
        now = gw.clock()
        assert not [p for p in gw._health() if p.code == "ack_time_withheld"]  # noqa: SLF001 - none withheld yet
        assert not gw.ack_time(_report("bin-1", now - 200 * DAY))  # noqa: SLF001 - seen before any pass
        assert not gw.ack_time(_report("bin-2", now - 200 * DAY))  # noqa: SLF001
        (problem,) = [p for p in gw._health() if p.code == "ack_time_withheld"]  # noqa: SLF001 - /healthz
        assert as_json(problem)["severity"] == WARNING and problem.subject == "time_sync"
        assert "2 board(s)" in problem and "bin-1, bin-2" in problem
        assert "jumped forward while the gateway ran" in problem and rc.confirm_command in problem
        assert summary([problem]) == "ack_time_withheld time_sync"
        assert gw.metrics.value("civicedge_ack_time_withheld_total") == 2
        assert rc.removal_time(now, now - 60) == pytest.approx(now - 200 * DAY, abs=60)  # the pass: an offset
        assert [p for p in gw._health() if p.code == "ack_time_withheld"]  # noqa: SLF001 - still suspect
        rc.confirm(now)  # the operator confirms; taken at the next pass
        assert rc.removal_time(now + 1, now - 60) == now + 1
        # cleared without waiting for an ACK of those boards
        assert not [p for p in gw._health() if p.code == "ack_time_withheld"]  # noqa: SLF001
    finally:
        gw.store.close()
        gw.registry.close()


def test_an_ack_to_a_board_within_a_day_does_not_clear_the_warning_while_the_clock_is_suspect() -> None:
    """Review M2, fails before: a backlog report 2 h old (within the day DATA_AGREE_S allows) got the time, and
    that cleared the /healthz warning although the clock was still found ahead of the data."""
    rc = RetentionClock(3600, monotonic=None)
    now = 1_790_000_000.0
    ack = AckTime(rc, lambda: now)
    assert rc.removal_time(now, now - 200 * DAY) is None and rc.suspects_clock_ahead
    assert not ack(_report("bin-1", now - 200 * DAY))
    assert ack(_report("bin-3", now - 7200))  # within a day: gets the time
    problem = ack.problem()
    assert problem is not None and "1 board(s)" in problem and "bin-1" in problem
    rc.confirm(now)
    assert rc.removal_time(now, now - 200 * DAY) == now and ack(_report("bin-3", now - 7200))
    assert ack.problem() is None and not ack.withheld


def test_the_withheld_acks_are_counted_and_a_clock_found_ahead_of_the_data_is_named() -> None:
    counted: list[int] = []
    rc = RetentionClock(3600, monotonic=None)
    now = 1_790_000_000.0
    ack = AckTime(rc, lambda: now, on_withheld=lambda: counted.append(1))
    assert rc.removal_time(now, now - 200 * DAY) is None and rc.suspects_clock_ahead  # clock_ahead
    assert ack(_report("bin-1", now - 5)) and ack(_report("sl-1", 946684800))  # agrees / never set
    assert ack.problem() is None and counted == []
    assert not ack(_report("bin-1", now - 200 * DAY))
    problem = ack.problem()
    assert problem is not None and "1 board(s) whose clocks disagree with the gateway clock, or that sent an old report from their outbox (bin-1)" in problem
    assert "ahead of the stored reports" in problem and counted == [1]
    rc.confirm(now)
    assert rc.removal_time(now, now - 200 * DAY) == now
    assert ack.problem() is None and ack(_report("bin-1", now - 200 * DAY)) and counted == [1]


def test_healthz_warns_while_retention_removes_by_an_offset_and_names_the_confirm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails before: an unconfirmed offset (removal late, for good until a confirm) showed only on a gauge."""
    import gateway.service

    stepped = SteppedTime()
    monkeypatch.setattr(gateway.service, "time", stepped)
    gw = Gateway(load_config(make_env(tmp_path)))
    try:
        rc = gw.retention_clock
        now = gw.clock()
        assert rc.removal_time(now, now - 60) is not None  # a pass: the baseline
        assert not [p for p in gw._health() if p.code == "retention_clock_offset"]  # noqa: SLF001
        stepped.step = 200 * DAY
        now = gw.clock()
        assert rc.removal_time(now, now - 60) is not None and rc.offset > 0
        offset = [p for p in gw._health() if p.code == "retention_clock_offset"]  # noqa: SLF001
        assert len(offset) == 1 and offset[0].severity == WARNING
        assert "200.0 days" in offset[0] and rc.confirm_command in offset[0]
        rc.confirm(now)
        assert rc.removal_time(now + 60, now) is not None and rc.offset == 0
        assert not [p for p in gw._health() if p.code == "retention_clock_offset"]  # noqa: SLF001
    finally:
        gw.store.close()
