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


def test_a_clock_set_back_only_part_of_the_jump_while_stopped_is_held_and_kept_as_an_offset() -> None:
    """Set back 100 of 200 days: what is left (100 days: the gateway stopped that long, or the clock still
    ahead) cannot be told apart; it was kept as a silent offset (removal 100 days late for good, /healthz
    quiet). Now it holds retention (retention_held) and ACK time, and stays the offset, until a confirm, which
    runs by the clock."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    last = host.wall - 30
    host.wall -= 100 * DAY
    host.mono = 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    assert rc.removal_time(host.wall, last) is None and rc.reason == "held", rc.problem
    assert rc.problem is not None and rc.problem.startswith("retention held") and "100.0 days unexplained" in rc.problem
    assert rc.offset == 100 * DAY and rc.suspects_clock_ahead
    assert not AckTime(rc, lambda: host.wall)(_board(host.wall - 100 * DAY - 5, host.wall))
    rc.confirm(host.wall)
    host.mono += 60
    host.wall += 60
    assert rc.removal_time(host.wall, last) == host.wall
    rc.ran(host.wall, {})
    assert rc.problem is None and json.loads(rc.state())["hold"] is None
    # a remainder within the data check's margin is dropped (the data check follows such an error anyway)
    host2 = Host()
    saved2 = _jumped_run(host2, 200 * DAY)
    host2.wall -= 200 * DAY - (3600 + AHEAD_MARGIN_S - 60)
    near = RetentionClock(3600, monotonic=lambda: 5.0)
    near.restore(saved2)
    assert near.removal_time(host2.wall, host2.wall - 30) == host2.wall and near.offset == 0 and near.hold is None


def test_a_clock_put_right_after_a_stop_longer_than_the_interval_and_a_day_is_held_then_released_by_time() -> None:
    """Review H2: jump +200 days, stop 3 days, clock put right: the 3 days left were a permanent offset (removal
    3 days late for good, `gateway retention` said "not held"). Now a hold, released after CONFIRM_SPAN_S of
    agreement with the stored reports; the 3 days stay the offset (late, never early: the clock cannot be told
    from one still 3 days ahead) until the operator confirms, then retention removes by the clock."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    last = host.wall - 30
    true = host.wall - 200 * DAY + 3 * DAY
    host.wall, host.mono = true, 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    assert rc.removal_time(host.wall, last) is None and rc.reason == "held"
    assert json.loads(rc.state())["hold"]["reason"] == "clock_ahead"
    for _ in range(25):  # reports on the right clock again, an hour apart
        host.run(3600)
        removal = rc.removal_time(host.wall, host.wall - 60)
    assert removal == pytest.approx(host.wall - 3 * DAY) and rc.offset == pytest.approx(3 * DAY)
    rc.ran(removal, {})
    rc.confirm(host.wall)
    host.run(3600)
    assert rc.removal_time(host.wall, host.wall - 60) == host.wall and rc.offset == 0


def test_a_clock_set_back_part_of_the_way_released_by_agreement_removes_nothing_early() -> None:
    """Review clock2 (B), fails before: +200 days seen, stop 1 h, clock set back only 100 days (still 100 days
    ahead). Reports stamped by it released the hold after CONFIRM_SPAN_S with offset 0: retention removed 100
    days early and ACKs set boards on real time 100 days ahead. Now the 100 days left stay the offset."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    true = host.wall - 200 * DAY + 3600
    host.wall, host.mono = true + 100 * DAY, 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    ack = AckTime(rc, lambda: host.wall)
    removal = None
    for _ in range(30 * 24):  # a month of hourly passes, reports stamped by the gateway clock
        removal = rc.removal_time(host.wall, host.wall - 60)
        if removal is not None:
            break
        host.run(3600)
        true += 3600
    assert removal is not None and removal <= true  # released by agreement: late, never early
    assert rc.stepped_ahead(host.wall)
    assert not ack(_board(true, host.wall))  # a board on real time is not set 100 days ahead
    assert json.loads(rc.state())["step"]["offset"] == pytest.approx(100 * DAY, abs=3600)


def test_a_second_jump_while_stopped_is_not_hidden_by_the_saved_step() -> None:
    """Review H1, fails before: +200 days seen at a pass (saved), stop 1 h, +150 days more at boot: the saved
    offset made the clock look 50 days *behind* the data check's reference and the pass removed by real time +
    150 days. Now the first pass after the restart is checked in the clock's own terms: clock_ahead."""
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    last = host.wall - 30
    host.wall += 3600 + 150 * DAY
    host.mono = 5.0
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    rc.restore(saved)
    assert rc.removal_time(host.wall, last) is None and rc.reason == "clock_ahead", rc.problem
    assert "before this start" in (rc.problem or "") and rc.suspects_clock_ahead
    # without the second jump the saved step still counts, and the pass runs by the clock less it
    host2 = Host()
    saved2 = _jumped_run(host2, 200 * DAY)
    last2 = host2.wall - 30
    host2.wall += 3600
    again = RetentionClock(3600, monotonic=lambda: 5.0)
    again.restore(saved2)
    assert again.removal_time(host2.wall, last2) == pytest.approx(host2.wall - 200 * DAY)


def test_a_step_after_the_last_pass_is_saved_at_the_stop() -> None:
    """Review H3: pass, +200 days 20 min later, stop before the next pass: the step was lost (meta written only
    after a pass) and the next start trusted the jumped clock. note_stop records it (the service calls it
    before the store closes), so the next start removes by the clock less it and withholds ACK time."""
    host = Host()
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    assert rc.removal_time(host.wall, host.wall - 60) == host.wall
    host.run(1200)
    host.wall += 200 * DAY
    assert rc.stepped_since_pass(host.wall)
    host.run(600)
    rc.note_stop(host.wall, host.wall - 30)
    saved = rc.state()
    assert json.loads(saved)["step"]["offset"] == pytest.approx(200 * DAY)
    host.run(60)
    host.mono = 5.0
    again = RetentionClock(3600, monotonic=lambda: host.mono)
    again.restore(saved)
    assert again.removal_time(host.wall, host.wall - 30) == pytest.approx(host.wall - 200 * DAY)
    assert not AckTime(again, lambda: host.wall)(_board(host.wall - 200 * DAY - 5, host.wall))


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


def test_saved_rows_without_a_step_are_read_and_a_bad_step_is_dropped_alone(caplog: pytest.LogCaptureFixture) -> None:
    """Review M1: a bad or extra key in ``step`` refused the whole row and dropped a valid hold with it."""
    old = json.dumps({"hold": None, "ran_at": T0, "days": {"bin.temp": 90}})  # written before the step existed
    assert parse_saved_state(old) == (None, T0, {"bin.temp": 90}, None)
    rc = RetentionClock(3600, monotonic=lambda: 5.0)
    rc.restore(old)
    assert rc.removal_time(T0 + 60, T0) == T0 + 60 and json.loads(rc.state())["step"] is None
    hold = {"reason": "clock_ahead", "since": T0, "detail": "x", "agreed_s": 0.0}
    caplog.set_level(logging.WARNING)
    for bad in ({"offset": -1, "at": T0, "stamped": 0}, {"offset": 1, "at": T0}, {"offset": True, "at": T0, "stamped": 0},
                {"offset": 1e300, "at": T0, "stamped": 0}, {"offset": 1, "at": float("nan"), "stamped": 0}, "x"):
        caplog.clear()
        row = json.dumps({"hold": hold, "ran_at": T0 - 5, "days": {"a.b": 30}, "step": bad})
        assert parse_saved_state(row) == (hold, T0 - 5, {"a.b": 30}, None)
        assert any("saved clock step" in r.getMessage() for r in caplog.records)
        held = RetentionClock(3600, monotonic=lambda: 5.0)
        held.restore(row)
        assert held.hold == hold and held.removal_time(T0 + 60, T0) is None and held.reason == "held"
    extra = {"offset": 1.0, "at": T0, "stamped": 0.0, "note": 1}  # a later version's key: read by the three
    assert parse_saved_state(json.dumps({"step": extra}))[3] == {"offset": 1.0, "at": T0, "stamped": 0.0}


@pytest.mark.parametrize("bad", [float("nan"), 1e300, -5.0, "x"])
def test_implausible_saved_times_are_left_out_not_failing_every_pass(bad: object) -> None:
    """Review L4: a hold.since / agreed_s / ran_at of NaN or 1e300 was read, then formatting it raised at every
    pass for good. Now such a field is left out (the hold kept, its start unknown, its span restarted)."""
    row = json.dumps({"hold": {"reason": "clock_ahead", "since": bad, "detail": "d", "agreed_s": bad}, "ran_at": bad})
    hold, ran_at, _, _ = parse_saved_state(row)
    assert hold is not None and hold["since"] is None and hold["agreed_s"] == 0.0 and ran_at is None
    rc = RetentionClock(3600, monotonic=lambda: 5.0)
    rc.restore(row)
    assert rc.removal_time(T0, T0 - 10) is None and rc.reason == "held"
    assert rc.problem is not None and "held since an unknown time" in rc.problem
    rc.confirm(T0)
    assert rc.removal_time(T0 + 1, T0 - 10) == T0 + 1


def test_under_sim_clock_a_saved_step_is_ignored() -> None:
    host = Host()
    saved = _jumped_run(host, 200 * DAY)
    sim = RetentionClock(3600, monotonic=None)
    sim.restore(saved)
    assert sim.removal_time(host.wall, host.wall - 30) == host.wall and not sim.stepped_ahead(host.wall)


def test_the_allowance_for_reports_stamped_ahead_follows_the_newest_report() -> None:
    """Review L1, fails before: the allowance only grew. +200 days and back (allowance 200 days), reports stored
    on +10 days and back: the newest report is 10 days ahead, yet a clock set back 100 days more passed the data
    check (200 days allowed) instead of clock_behind."""
    host = Host()
    rc = RetentionClock(3600, monotonic=lambda: host.mono)
    assert rc.removal_time(host.wall, host.wall - 60) == host.wall

    def step(wall_s: float, last: float) -> float | None:
        host.run(600)
        host.wall += wall_s
        return rc.removal_time(host.wall, last)

    ahead = host.wall + 600 + 200 * DAY - 30
    step(200 * DAY, ahead)
    assert step(-200 * DAY, ahead) is not None and rc.reason is None  # stamped ahead: allowed
    assert step(10 * DAY, ahead) is not None
    newest = host.wall - 30  # reports stored on the +10 days clock
    assert step(-10 * DAY, newest) is not None and rc.reason is None  # allowed: 10 days
    assert step(-100 * DAY, newest) is None and rc.reason == "clock_behind"
    # no report stored between two step backs: the larger allowance stays (those reports are still newest)
    host2 = Host()
    again = RetentionClock(3600, monotonic=lambda: host2.mono)
    assert again.removal_time(host2.wall, host2.wall - 60) == host2.wall
    far = host2.wall + 600 + 200 * DAY - 30
    for jump in (200 * DAY, -200 * DAY, 10 * DAY, -10 * DAY):
        host2.run(600)
        host2.wall += jump
        assert again.removal_time(host2.wall, far) is not None and again.reason is None, again.problem


def test_a_saved_large_removal_hold_becomes_a_clock_hold_when_a_remainder_is_left() -> None:
    """A large-removal hold is asked again at each pass and ends once the pass is no longer that large: the
    remainder of a clock set back part of the way must not end with it (nor leave ACK time sync trusting)."""
    host = Host()
    saved = json.loads(_jumped_run(host, 200 * DAY))
    last = host.wall - 30
    saved["hold"] = {"reason": "large_removal", "since": host.wall, "detail": "x", "agreed_s": 0.0}
    host.wall -= 190 * DAY
    rc = RetentionClock(3600, monotonic=lambda: 5.0)
    rc.restore(json.dumps(saved))
    assert rc.removal_time(host.wall, last) is None and rc.reason == "held"
    assert rc.hold is not None and rc.hold["reason"] == "clock_ahead" and rc.suspects_clock_ahead
