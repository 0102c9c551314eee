"""A forward step of the gateway clock seen while running is not forgotten on restart.

Found last session: ``RetentionClock.offset`` lived in memory only. After a restart, the first report stamped
by the jumped clock made the data check agree, so retention (past its first-pass large-removal rule) removed
by the jumped clock, and ACK time sync set the boards ahead (a board's clock comes back 5 min an hour).
"""

from __future__ import annotations

import json
import logging

import pytest

from gateway.ack_time import AckTime
from gateway.retention_clock import AHEAD_MARGIN_S, RetentionClock, parse_saved_state
from gateway.storage import ReportRecord

DAY = 86400.0
T0 = 1_790_000_000.0


class Host:
    """A wall clock and a monotonic clock that the test moves; a restart starts a new monotonic clock."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def run(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def _board(end: float, now: float) -> ReportRecord:
    """A board's report whose period ends at ``end`` (its clock), received at ``now``."""
    return ReportRecord(device="sl-1", seq=1, kind="streetlight", zone="north", type="win", w=int(end) - 900,
                        l=900, m={}, e={}, a=[], fw="0.1", received_at=now, link="serial:x", digest="0" * 64)


def _jumped_run(host: Host, jump: float) -> str:
    """A run whose clock jumps ``jump`` s forward while reports keep arriving; the saved meta row at its stop."""
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    assert rc.removal_time(host.wall, host.wall - 60) == host.wall
    host.run(3600)
    host.wall += jump
    assert rc.removal_time(host.wall, host.wall - 30) == pytest.approx(host.wall - jump)
    return rc.state()


def test_an_unconfirmed_jump_still_counts_after_a_restart(caplog: pytest.LogCaptureFixture) -> None:
    """Fails before: the restarted clock removed by the jumped clock and sent its time to a board on real time."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    host.run(600)  # stopped for 10 min, the clock still 200 days ahead
    host.mono = 5.0  # a new run (the host rebooted, say): its monotonic clock starts afresh
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    ack = AckTime(rc, lambda: host.wall)
    # an ACK before the first pass: a board on real time gets no time; one on the jumped clock or unset does
    assert not ack(_board(host.wall - 200 * DAY - 5, host.wall))
    assert ack(_board(host.wall - 5, host.wall)) and ack(_board(946684800, host.wall))
    assert rc.stepped_ahead(host.wall)
    # the first report after the restart, stamped by the jumped clock, does not make retention follow it
    assert rc.removal_time(host.wall, host.wall - 30) == pytest.approx(host.wall - 200 * DAY)
    assert any("stepped forward by 200.0 days in an earlier run" in r.getMessage() for r in caplog.records)
    host.run(3600)
    assert rc.removal_time(host.wall, host.wall - 30) == pytest.approx(host.wall - 200 * DAY)
    # and it is saved again, for the restart after this one
    step = json.loads(rc.state())["step"]
    assert step["offset"] == pytest.approx(200 * DAY) and step["at"] == host.wall


def test_a_confirm_ends_the_saved_step() -> None:
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    host.mono = 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    rc.confirm(host.wall)  # the operator vouches for the clock
    rc.removal_time(host.wall, host.wall - 30)
    assert not rc.stepped_ahead(host.wall)
    assert json.loads(rc.state())["step"] is None  # nothing left to keep: the next start follows the clock
    again = RetentionClock(3600, monotonic=lambda: 1.0)
    again.restore(rc.state())
    host.run(60)
    assert again.removal_time(host.wall, host.wall - 30) == host.wall and not again.stepped_ahead(host.wall)


@pytest.mark.parametrize("stopped_h", [0.5, 20])
def test_a_clock_put_right_while_stopped_clears_the_step_and_does_not_skip_as_clock_behind(
        stopped_h: float, caplog: pytest.LogCaptureFixture) -> None:
    """The operator fixed the clock (NTP) while the gateway was stopped: the clock is then 200 days behind the
    reports stamped after the jump. Fails before: nothing was saved, and every pass was skipped as
    clock_behind until a board reported (with the fleet silent, until real time caught up: 200 days)."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    last = host.wall - 30  # the newest stored report: stamped by the jumped clock
    host.wall -= 200 * DAY  # put right ...
    host.run(stopped_h * 3600)  # ... while stopped
    host.mono = 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    assert rc.removal_time(host.wall, last) == host.wall, rc.problem
    assert rc.problem is None and rc.offset == 0 and not rc.stepped_ahead(host.wall)
    assert any("taken as the clock put right" in r.getMessage() for r in caplog.records)
    ack = AckTime(rc, lambda: host.wall)
    assert ack(_board(host.wall - 5, host.wall))  # boards on real time get the time again
    # restarted again before any board reported: the allowance for the reports stamped ahead is kept
    again = RetentionClock(3600, monotonic=lambda: host.mono)
    again.restore(rc.state())
    host.run(600)
    assert again.removal_time(host.wall, last) == host.wall and again.reason is None
    # a clock set back further than the jump is still clock_behind
    behind = RetentionClock(3600, monotonic=lambda: 1.0)
    behind.restore(rc.state())
    assert behind.removal_time(host.wall - 3 * DAY, last) is None and behind.reason == "clock_behind"
    # once a report stamped by the clock put right is the newest, the allowance ends (nothing saved)
    host.run(600)
    assert again.removal_time(host.wall, host.wall - 30) == host.wall
    assert json.loads(again.state())["step"] is None


def test_a_clock_set_back_only_part_of_the_jump_while_stopped_keeps_what_is_left() -> None:
    """Set back 100 of 200 days: the step back undoes 100 days of the offset, never more (the clock may still
    be 100 days ahead); a board on real time still gets no time."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    last = host.wall - 30
    host.wall -= 100 * DAY
    host.mono = 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    assert rc.removal_time(host.wall, last) == pytest.approx(host.wall - 100 * DAY), rc.problem
    assert rc.stepped_ahead(host.wall)
    assert not AckTime(rc, lambda: host.wall)(_board(host.wall - 100 * DAY - 5, host.wall))
    # a remainder within the data check's margin is dropped (the data check follows such an error anyway)
    host2 = Host()
    saved2 = _jumped_run(host2, 200 * DAY)
    host2.wall -= 200 * DAY - (3600 + AHEAD_MARGIN_S - 60)
    near = RetentionClock(3600, monotonic=lambda: 5.0)
    near.restore(saved2)
    assert near.removal_time(host2.wall, host2.wall - 30) == host2.wall and near.offset == 0


def test_a_step_back_while_running_does_not_skip_as_clock_behind_for_the_reports_stamped_ahead() -> None:
    """Fails before: after +200 days and -200 days while running, the reports stamped in between made every
    pass clock_behind until a board reported again."""
    host = Host()
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.removal_time(host.wall, host.wall - 60)
    host.run(600)
    host.wall += 200 * DAY
    last = host.wall - 30
    rc.removal_time(host.wall, last)
    host.run(600)
    host.wall -= 200 * DAY
    assert rc.removal_time(host.wall, last) == pytest.approx(host.wall) and rc.reason is None
    assert rc.offset == 0


def test_saved_rows_without_a_step_are_read_and_a_bad_step_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    old = json.dumps({"hold": None, "ran_at": T0, "days": {"bin.temp": 90}})  # written before the step existed
    assert parse_saved_state(old) == (None, T0, {"bin.temp": 90}, None)
    rc = RetentionClock(3600, monotonic=lambda: 5.0)
    rc.restore(old)
    assert rc.removal_time(T0 + 60, T0) == T0 + 60 and json.loads(rc.state())["step"] is None
    for bad in ({"offset": -1, "at": T0, "stamped": 0}, {"offset": 1, "at": T0}, {"offset": True, "at": T0, "stamped": 0}):
        with pytest.raises(ValueError, match="bad step"):
            parse_saved_state(json.dumps({"hold": None, "ran_at": None, "days": None, "step": bad}))
    caplog.set_level(logging.WARNING)
    rc.restore(json.dumps({"step": {"offset": "x"}}))
    assert any("cannot be read (bad step" in r.getMessage() for r in caplog.records)


def test_under_sim_clock_a_saved_step_is_ignored() -> None:
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    sim = RetentionClock(3600, monotonic=None)
    sim.restore(saved)
    assert sim.removal_time(host.wall, host.wall - 30) == host.wall and not sim.stepped_ahead(host.wall)
