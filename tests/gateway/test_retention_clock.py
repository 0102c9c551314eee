"""Retention never removes data by an implausible gateway clock.

QA finding: a host clock stepped 200 days forward made the next retention pass remove every field
value older than its retention by that clock, for good, logged at INFO only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import WINDOW_T0, report_frame, until, write_clock
from procs import PtyDevice

from gateway.ack_time import AckTime
from gateway.config import load_config
from gateway.retention_clock import AHEAD_MARGIN_S, RetentionClock
from gateway.service import Gateway
from gateway.storage import ReportQueries, ReportRecord, ReportStore

pytestmark = pytest.mark.timeout(90)

DAY = 86400


async def test_a_clock_jumping_200_days_ahead_removes_nothing(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The QA's repro with a simulated clock: reports stored, the clock moves on 200 days, retention
    (every second) skips, says why (WARNING, metric, /healthz) and keeps every value; a report stamped by
    the new clock does not confirm it (retention stays held); the operator's confirmation does. Meanwhile
    ACKs carry no time (QA on-call drill: the boards were synced 200 days ahead, and a board's clock comes
    back only 5 min an hour once the gateway's is put right); once confirmed they do again."""
    caplog.set_level(logging.INFO)
    dev = PtyDevice(KEYS)
    clock_file = tmp_path / "sim-clock.json"
    start = WINDOW_T0 + 10 * 900  # just after the reports' windows (helpers.body_for: w = WINDOW_T0 + 900 * seq)
    write_clock(clock_file, start)
    cfg = make_env(tmp_path, serial=(dev.path,),
                   extra='[sim_clock]\nfollow_file = "sim-clock.json"\n[retention]\ninterval_s = 1\n')
    gw = Gateway(load_config(cfg))
    await gw.start()
    q = ReportQueries(gw.config.storage.path)
    try:
        await until(lambda: gw.metrics.value("civicedge_link_state", {"link": "serial:%s" % dev.path}) == 1,
                     "the serial link did not come up")
        dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in (1, 2, 3)])
        await until(lambda: (dev.pump(0.05), dev.acks.get("bin-1", 0) >= 3)[1], "no ACK of seq 3")
        await asyncio.sleep(1.5)  # a pass at the right time removes nothing (temp: 90 days)
        assert all(r.m.get("temp") == 12 for r in q.reports(device="bin-1"))

        write_clock(clock_file, start + 200 * DAY)
        skipped = {"reason": "clock_ahead"}
        await until(lambda: gw.metrics.value("civicedge_retention_skipped_total", skipped) >= 2,
                     "retention was not skipped")
        assert gw.clock() >= start + 200 * DAY
        assert [r.m for r in q.reports(device="bin-1")] == [{"bat": 10 * s, "temp": 12} for s in (1, 2, 3)]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and r.getMessage().startswith("retention skipped")]
        assert len(warnings) == 1, warnings  # once, not at every pass
        assert "200.0 days ahead of the last stored report's reception time" in warnings[0]
        assert any("retention skipped" in reason for reason in gw._health())  # noqa: SLF001 - /healthz reasons
        assert gw.metrics.value("civicedge_retention_removed_total") == 0

        assert dev.ack_bodies and all(set(body) == {"t"} for _, _, body in dev.ack_bodies)  # time sync so far
        # A report received at the new time was stamped by that clock: it does not confirm it (MEDIUM-3).
        dev.send([report_frame("bin-1", 4, KEYS["bin-1"])])
        await until(lambda: (dev.pump(0.05), dev.acks.get("bin-1", 0) >= 4)[1], "no ACK of seq 4")
        assert [body for _, seq, body in dev.ack_bodies if seq == 4] == [{}]  # no time from a clock found ahead
        assert any(r.getMessage().startswith("ACK time sync withheld") for r in caplog.records)
        await until(lambda: gw.metrics.value("civicedge_retention_skipped_total", {"reason": "held"}) >= 2,
                     "retention was not held")
        assert all("temp" in r.m for r in q.reports(device="bin-1"))
        assert any(reason.startswith("retention held") for reason in gw._health())  # noqa: SLF001
        # The operator confirms the clock (civicedge gateway retention --confirm writes this file).
        (gw.config.data_dir / "retention-confirm").write_text("confirmed\n")
        await until(lambda: "temp" not in q.reports(device="bin-1")[0].m, "retention did not resume", 10)
        # The removal commits in the store thread before the pass returns and ends the hold (ran()): wait
        # for that, not only for the data (CI read the log in between once).
        await until(lambda: any(r.getMessage().startswith("retention resumes") for r in caplog.records),
                     "the hold was not ended after the confirmed pass", 10)
        assert not any("retention" in reason for reason in gw._health())  # noqa: SLF001
        dev.send([report_frame("bin-1", 5, KEYS["bin-1"])])  # the confirmed clock is synced to the boards again
        await until(lambda: (dev.pump(0.05), dev.acks.get("bin-1", 0) >= 5)[1], "no ACK of seq 5")
        assert [set(body) for _, seq, body in dev.ack_bodies if seq == 5] == [{"t"}]
        assert gw.metrics.value("civicedge_retention_removed_total") >= 6  # temp and bat of 1..3 (90 days each)
    finally:
        q.close()
        await gw.stop()
        dev.close()


def test_a_clock_stepping_ahead_while_reports_arrive_is_not_followed(caplog: pytest.LogCaptureFixture) -> None:
    """The data check alone is defeated by reports stamped by the jumped clock; the step itself (wall
    clock against the time elapsed) is not followed, until a step back undoes it."""
    mono = [1000.0]
    clock = RetentionClock(3600, monotonic=lambda: mono[0])
    now = 1_790_000_000.0
    assert clock.removal_time(now, now - 60) == now
    mono[0] += 3600
    now += 3600 + 200 * DAY  # an hour passed; the clock says 200 days and an hour
    assert clock.removal_time(now, now - 30) == pytest.approx(now - 200 * DAY)  # a report stamped by it
    assert clock.problem is None and clock.offset == pytest.approx(200 * DAY)
    assert any("stepped forward by 200.0 days" in r.getMessage() for r in caplog.records)
    mono[0] += 3600
    now += 3600
    assert clock.removal_time(now, now - 30) == pytest.approx(now - 200 * DAY)  # still not followed
    mono[0] += 3600
    now += 3600 - 200 * DAY  # corrected
    assert clock.removal_time(now, None) == pytest.approx(now) and clock.offset == 0


def test_an_ntp_correction_of_a_clock_behind_the_data_is_followed() -> None:
    """A gateway without a real-time clock boots 60 days behind (its image's date): passes are skipped
    as clock_behind; NTP then steps the clock to the right time. That step is a correction, not a jump:
    before, it went into the offset and retention lagged 60 days until a restart (review)."""
    mono = [1000.0]
    clock = RetentionClock(3600, monotonic=lambda: mono[0])
    last = 1_790_000_000.0  # the last report stored before the gateway was switched off an hour ago
    now = last + 3600 - 60 * DAY
    assert clock.removal_time(now, last) is None and clock.reason == "clock_behind"
    mono[0] += 120
    now += 120 + 60 * DAY  # NTP synchronised
    assert clock.removal_time(now, last) == pytest.approx(now) and clock.offset == 0 and clock.problem is None


def test_a_gateway_whose_devices_fall_silent_keeps_removing() -> None:
    """Devices removed from a pilot, or a link down for good: no report arrives for weeks. Time measured
    by the monotonic clock since a pass that ran is real, so retention keeps running (before, every pass
    was skipped as clock_ahead once the last report was a day old, and stored values outlived their
    retention)."""
    mono = [1000.0]
    clock = RetentionClock(3600, monotonic=lambda: mono[0])
    last = now = 1_790_000_000.0
    assert clock.removal_time(now, last) == now
    for _ in range(30):  # a month, one pass a day, no report
        mono[0] += DAY
        now += DAY
        assert clock.removal_time(now, last) == pytest.approx(now), clock.problem
    mono[0] += 3600
    now += 3600 + 200 * DAY  # and a jump still is not followed
    assert clock.removal_time(now, last) == pytest.approx(now - 200 * DAY)


def test_a_clock_behind_or_far_ahead_of_the_data_skips() -> None:
    clock = RetentionClock(3600, monotonic=None)  # [sim_clock]: no elapsed-time check
    t = 1_790_000_000.0
    assert clock.removal_time(t, None) == t  # nothing stored: nothing to check (and nothing to remove)
    assert clock.removal_time(t - 3600, t) is None and clock.reason == "clock_behind"
    assert "behind the last stored report" in (clock.problem or "")
    assert clock.removal_time(t + 3600 + AHEAD_MARGIN_S - 1, t) == t + 3600 + AHEAD_MARGIN_S - 1
    assert clock.problem is None
    assert clock.removal_time(t + 3600 + AHEAD_MARGIN_S + 1, t) is None and clock.reason == "clock_ahead"


def _rec(seq: int, w: int) -> ReportRecord:
    return ReportRecord(device="b%d" % (seq % 3), seq=seq, kind="bin", zone="north", type="win", w=w, l=900,
                        m={"fill": 40, "temp": 12}, e={}, a=[], fw="1.0", received_at=w + 5.0, link="serial:x",
                        digest="%064x" % seq)


def test_a_large_removal_is_a_warning_a_small_one_is_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    t = 1_790_000_000 - 1_790_000_000 % 900
    store = ReportStore(tmp_path / "r.sqlite", gateway_id="gw")
    try:
        old = [_rec(s, t - 100 * DAY + 900 * s) for s in range(1, 3)]  # 2 of 40: 5 %
        store.insert_batch(old + [_rec(s, t + 900 * s) for s in range(3, 41)])
        assert store.last_received_at() == t + 900 * 40 + 5.0
        assert store.apply_retention({("bin", "temp"): 90, ("bin", "fill"): 730}, now=t + 40 * 900) == 2
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(r.getMessage() == "retention removed 2 reading(s)" for r in caplog.records)
        # a retention shortened to 1 day (or a clock 2 days on) removes every fill value: a WARNING
        assert store.apply_retention({("bin", "fill"): 1}, now=t + 40 * 900 + 2 * DAY) == 40
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "bin.fill" in warned[0] and "40 of 40" in warned[0], warned
    finally:
        store.close()


@pytest.mark.parametrize(("rows_only", "said"), [
    (False, "nothing is removed"),
    (True, "the report rows wait, field values past their retention are still removed"),
])
def test_a_held_pass_says_what_waits(rows_only: bool, said: str, caplog: pytest.LogCaptureFixture) -> None:
    """A hold of the report rows alone (934327f) let the field values go, but the ERROR said 'nothing is
    removed' and spoke of 'a field'."""
    clock = RetentionClock(3600)
    with caplog.at_level(logging.ERROR, logger="gateway.retention_clock"):
        clock.held(1_800_000_000.0, ["600 of 1000 bin report row(s)"], rows_only=rows_only)
    (record,) = caplog.records
    assert said in record.getMessage()
    assert ("of a kind's report rows" in record.getMessage()) is rows_only
    assert clock.reason == "held"


def test_a_rows_only_hold_counts_as_a_pass_that_ran_for_the_clock_check_after_a_restart() -> None:
    """The fleet fell silent (last report at ``last``); the first passes hold the report rows only and remove
    the field values by the clock. The gateway stops after 20 h and starts again 10 h later. Fails before:
    only a pass that ran whole was remembered as time the clock was trusted at, so the restart found the
    clock 30 h ahead of the last report (more than the interval + 1 day), held retention as clock_ahead,
    and the values past their retention stayed until an operator confirmed."""
    last = 1_800_000_000.0
    mono = [0.0]
    clock = RetentionClock(3600, monotonic=lambda: mono[0])
    rows = ["600 of 1000 bin report row(s) (report retention 730 day(s): before ...)"]
    for hour in range(1, 21):
        mono[0] = hour * 3600.0
        now = last + hour * 3600
        assert clock.removal_time(now, last) == now  # the values are removed by it ...
        clock.held(now, rows, rows_only=True)  # ... and the rows held (the store's large-row count)
    saved = clock.state()
    again = RetentionClock(3600, monotonic=lambda: 5.0)  # a new run: its monotonic clock starts afresh
    again.restore(saved)
    now = last + 30 * 3600
    assert again.removal_time(now, last) == now, again.problem
    assert again.reason is None and again.hold is not None and again.hold["reason"] == "large_removal"
    # a field's hold removes nothing: it is not a pass that ran
    field = RetentionClock(3600, monotonic=lambda: mono[0])
    field.restore(None)
    assert field.removal_time(last + 3600, last) == last + 3600
    field.held(last + 3600, ["600 of 1000 bin.temp value(s)"])
    assert '"ran_at": null' in field.state()


def test_ack_time_goes_to_boards_that_agree_or_have_no_clock_while_the_gateway_clock_is_suspect(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Withheld only from a board whose clock disagrees: after a gateway was off for days its clock is ahead
    of the stored reports too (clock_ahead), and boards that lost power meanwhile report nothing until an ACK
    sets their clock (their boot report is dated before 2024); they must not stay silent until the operator
    confirms retention. Nor do boards whose reports agree with the gateway's clock lose the sync."""
    caplog.set_level(logging.INFO)
    gw = Gateway(load_config(make_env(tmp_path)))
    try:
        now = gw.clock()

        def rec(w: int, l: int = 900, t: str = "win") -> ReportRecord:
            return ReportRecord(device="bin-1", seq=1, kind="bin", zone="north", type=t, w=w, l=l, m={}, e={}, a=[],
                                fw="0.1", received_at=now, link="serial:x", digest="0" * 64)

        recent, old, unset = rec(int(now) - 900), rec(int(now) - 200 * DAY), rec(946684800, 60, "boot")
        assert all(gw.ack_time(r) for r in (recent, old, unset))  # noqa: SLF001 - clock trusted
        assert gw.retention_clock.removal_time(now, now - 200 * DAY) is None  # the data check: clock_ahead
        assert gw.retention_clock.suspects_clock_ahead
        assert gw.ack_time(recent) and gw.ack_time(unset)  # noqa: SLF001
        assert not gw.ack_time(old) and not gw.ack_time(old)  # noqa: SLF001
        withheld = [r for r in caplog.records if r.getMessage().startswith("ACK time sync withheld")]
        assert len(withheld) == 1 and "bin-1's report ended 200.0 days before it" in withheld[0].getMessage()
        gw.retention_clock.confirm(now)  # the operator confirms the clock
        assert gw.retention_clock.removal_time(now, now - 200 * DAY) == now
        assert gw.ack_time(old)  # noqa: SLF001
        assert any(r.getMessage().startswith("ACK time sync resumed") for r in caplog.records)
    finally:
        gw.store.close()
        gw.registry.close()


def test_a_forward_jump_while_running_is_seen_at_once_not_at_the_next_pass(tmp_path: Path) -> None:
    """Reviewer: a jump while the gateway runs is followed as an offset at the next pass (up to an hour
    later), never as clock_ahead; by then every board was synced to it. stepped_ahead() sees it at once."""
    mono = [1000.0]
    clock = RetentionClock(3600, monotonic=lambda: mono[0])
    t = 1_790_000_000.0
    assert clock.removal_time(t, t - 60) == t  # a pass: the baseline
    mono[0] += 10
    assert not clock.stepped_ahead(t + 10)
    assert clock.stepped_ahead(t + 10 + 200 * DAY)  # 200 days in 10 s of elapsed time
    clock.removal_time(t + 10 + 200 * DAY, t - 60)  # the next pass takes it as an offset
    assert clock.offset > 0 and clock.stepped_ahead(t + 20 + 200 * DAY)
    behind = RetentionClock(3600, monotonic=lambda: mono[0])
    assert behind.removal_time(t, t + 3600) is None and behind.reason == "clock_behind"
    assert not behind.stepped_ahead(t + 2 * DAY)  # behind the data: a forward step is a correction
    assert not RetentionClock(3600, monotonic=None).stepped_ahead(t)  # [sim_clock]: nothing to compare


def test_no_ack_time_to_a_disagreeing_board_once_the_clock_jumped_while_running(tmp_path: Path) -> None:
    gw = Gateway(load_config(make_env(tmp_path)))
    try:
        now = gw.clock()
        old = ReportRecord(device="bin-1", seq=1, kind="bin", zone="north", type="win", w=int(now) - 200 * DAY,
                           l=900, m={}, e={}, a=[], fw="0.1", received_at=now, link="serial:x", digest="0" * 64)
        assert gw.ack_time(old)  # noqa: SLF001 - nothing suspect: a board behind is put right
        gw.retention_clock.offset = 200 * DAY  # a pass saw the wall clock jump forward while running
        assert not gw.ack_time(old)  # noqa: SLF001
    finally:
        gw.store.close()
        gw.registry.close()


@pytest.mark.parametrize("jump_h", [2, 14])
def test_a_jump_of_hours_while_running_is_not_sent_to_the_boards_and_a_confirm_ends_it(jump_h: int) -> None:
    """Reviewer: a forward jump of less than a day (local time set as UTC) passed the day-long agreement
    test, so every board was set hours ahead; and a confirmed clock stayed suspect until a restart."""
    mono = [1000.0]
    wall = [1_790_000_000.0]
    rc = RetentionClock(3600, monotonic=lambda: mono[0])
    ack = AckTime(rc, lambda: wall[0])

    def rec(end: float) -> ReportRecord:
        w = int(end) - 900
        return ReportRecord(device="sl-1", seq=1, kind="streetlight", zone="north", type="win", w=w, l=900, m={},
                            e={}, a=[], fw="0.1", received_at=wall[0], link="serial:x", digest="0" * 64)

    assert rc.removal_time(wall[0], wall[0] - 60) == wall[0]  # a pass: the baseline
    on_time = rec(wall[0] - 5)
    assert ack(on_time)
    mono[0] += 60
    wall[0] += 60 + jump_h * 3600  # the jump
    assert not ack(rec(wall[0] - jump_h * 3600 - 5))  # a board on real time: withheld at once
    assert ack(rec(wall[0] - 5))  # a board already on the jumped clock: harmless
    assert ack(rec(946684800))  # a board whose clock was never set
    rc.removal_time(wall[0], wall[0] - jump_h * 3600)  # the next pass: the jump becomes the offset
    assert rc.offset > 0 and not ack(rec(wall[0] - jump_h * 3600 - 5))
    rc.confirm(wall[0])  # the operator vouches for the clock; taken at the next pass
    mono[0] += 60
    wall[0] += 60
    assert rc.removal_time(wall[0], wall[0] - 60) == wall[0]  # the confirmed clock: the offset ends at once
    assert rc.offset == 0 and json.loads(rc.state())["step"] is None
    assert ack(rec(wall[0] - jump_h * 3600 - 5))  # ACK time is trusted again


def test_a_confirm_does_not_cover_a_later_jump_after_a_step_back() -> None:
    """Reviewer: +2 h, confirmed, -2 h (offset 0), +2 h again: the old confirm covered the new jump, and
    every board was synced 2 h ahead."""
    mono = [1000.0]
    wall = [1_790_000_000.0]
    rc = RetentionClock(3600, monotonic=lambda: mono[0])

    def step(wall_s: float) -> None:
        mono[0] += 60
        wall[0] += 60 + wall_s
        rc.removal_time(wall[0], wall[0] - 60)

    step(0)
    step(2 * 3600)
    assert rc.stepped_ahead(wall[0])
    rc.confirm(wall[0])
    step(0)
    assert not rc.stepped_ahead(wall[0])  # vouched for
    step(-2 * 3600)  # stepped back: the offset (and what was vouched for) is undone
    assert rc.offset == 0 and not rc.stepped_ahead(wall[0])
    step(2 * 3600)  # a new jump
    assert rc.stepped_ahead(wall[0])
