"""Guarantees 2 and 4 on a virtual streetlight (unchanged firmware on real MicroPython) feeding an
in-process gateway over its data pty, on virtual time.

2: a 10-minute link outage, a power loss in the middle of an outbox write and a reboot storm lose
   nothing and double nothing: every seq the firmware wrote to its outbox is stored exactly once.
4: a clock-rollback storm and a reboot storm around a release boundary never let the ε the gateway
   stored for one day (sum of ``e`` of the released reports) exceed the policy's eps_per_day_milli.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.resources import load_policy

from .vgateway import VirtualClockGateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DAY0 = 1767225600  # 2026-01-01 00:00 UTC


def _board(tmp_path: Path, start_s: int, seed: int):  # type: ignore[no-untyped-def]
    import hil.sim.board as board_mod
    return board_mod.VirtualBoard("streetlight-esp32", device_id="sl-rel", flash_dir=tmp_path / "flash", speed=None,
                                  seed=seed, start_ms=start_s * 1000, paced=False)


def _write_fault_fired(gw: VirtualClockGateway) -> bool:
    return any(e.get("kind") == "power_loss_write" for e in gw.board.events)


async def _until_the_write_fault(gw: VirtualClockGateway, *, close_s: int) -> None:
    """Step 1 s at a time until the armed write fault fires, at most until the window ending at
    ``close_s`` (unix s, the board's clock) must have been written: the firmware closes it at its
    first sample at or after ``close_s``, and samples every ``sleep.interval_s`` (a fixed step count
    had no margin: the write landed on its last step, and an ACK's time sync can set the board's
    clock a little behind the virtual clock)."""
    sample_s = int(gw.board.config["sleep"]["interval_s"])
    since_close = 0
    while not _write_fault_fired(gw) and since_close <= sample_s:
        await gw.run(1)
        st = await gw.board.state()
        if (st["now"] + st["clock_offset_ms"]) // 1000 >= close_s:
            since_close += 1


async def test_outage_power_loss_and_reboots_lose_and_double_nothing(tmp_path: Path) -> None:
    gw = VirtualClockGateway(_board(tmp_path, DAY0 + 5 * 3600 + 54 * 60, seed=3), tmp_path / "gw")
    try:
        await gw.start()
        await gw.board.stimulus("light", 5)  # night: the lamp is on, windows carry levels
        await gw.run(60)
        # 10-minute link outage across the 06:00 window, hour and 6-hourly release.
        await gw.board.fault("drop uart 600s")
        before = len(gw.generated())
        await gw.run(600)
        during = len(gw.generated()) - before
        assert during >= 2, "no report was generated during the outage: nothing tested"
        await gw.run(60)
        # Power loss in the middle of the next outbox write (06:15 window).
        await gw.board.fault("power_loss_write outbox")
        await _until_the_write_fault(gw, close_s=DAY0 + 6 * 3600 + 15 * 60)
        assert any(e.get("kind") == "power_loss_write" for e in gw.board.events), "the write fault never fired"
        await gw.run(2 * 60)  # the firmware marks itself stable after 60 s
        # Reboot storm: 3 resets 10 virtual s apart, then 4 more 70 s apart. (4 unclean boots in a row, each
        # within 60 s of the last, put the firmware in safe mode by design, where it sends nothing at all
        # until someone intervenes: see docs/reliability.md.)
        for gap in (10, 10, 70, 70, 70, 70, 70):
            await gw.board.fault("reset")
            await gw.run(gap)
        await gw.run(15 * 60)  # past the 06:30 window
        assert "safe mode" not in gw.board.console_text()
        await gw.drain()
        generated = gw.generated()
        rows = gw.rows()
    finally:
        await gw.stop()
    stored = [seq for seq, *_ in rows]
    print("\noutage: %d reports generated (%d during the 10-min outage), %d stored, boots %d; generated %s"
          % (len(generated), during, len(stored), gw.board.boots, sorted(generated)))
    assert len(stored) == len(set(stored)) == gw.metrics.value("civicedge_reports_stored_total")
    assert set(stored) <= generated
    assert set(stored) == generated, "generated %s stored %s" % (sorted(generated), stored)
    assert max(generated) > 32, "nothing generated after the power loss and the reboots: nothing tested there"


async def test_clock_rollback_and_reboot_storms_never_exceed_the_daily_epsilon(tmp_path: Path) -> None:
    policy = load_policy()
    mot = policy["kinds"]["streetlight"]["fields"]["mot"]
    per_day = int(mot["eps_per_day_milli"])
    # 05:58: the 6-hourly motion release falls at 06:00.
    gw = VirtualClockGateway(_board(tmp_path, DAY0 + 5 * 3600 + 58 * 60, seed=4), tmp_path / "gw")
    try:
        await gw.start()
        await gw.board.stimulus("light", 5)
        await gw.run(150)  # 06:00:30: the natural release
        for cycle in range(8):
            # Roll the RTC back across the release boundary; the next ACK's time sync rolls it forward
            # again: each crossing is a period change the app may try to release on. (A step back of
            # up to 5 min, civic.sense.window.STEP_BACK_S, is absorbed: the period goes on. 20 min keeps
            # every step larger than that while the storm moves the clock up to ~06:10, so the app
            # really moves back to the previous period each time.)
            await gw.board.fault("clock_skew -20m")
            await gw.run(40)
            if cycle % 2:
                await gw.board.fault("reset")  # reboot storm interleaved
                await gw.run(20)
        await gw.drain()
        rows = gw.rows()
        conn = sqlite3.connect(gw.db)
        try:  # re-releases of a period already released: ACKed, not stored, their spend kept (docs/gateway.md,
            # one release per period)
            not_stored = conn.execute("SELECT w, e FROM window_duplicates").fetchall()
            periods = conn.execute("SELECT type, w, l, COUNT(*) FROM reports WHERE type IN ('win', 'hour', 'day')"
                                   " AND e != '{}' GROUP BY type, w, l, e HAVING COUNT(*) > 1").fetchall()
        finally:
            conn.close()
    finally:
        await gw.stop()
    spent: dict[int, int] = defaultdict(int)
    released_periods: list[int] = []
    for _seq, _type, w, e in rows:
        eps = json.loads(e).get("mot", 0)
        if eps:
            released_periods.append(w)
            spent[w // 86400] += eps
    # what the board spent: the stored releases and those the gateway did not store (their recorded spend)
    re_released = [w for w, e in not_stored if json.loads(e).get("mot", 0)]
    for w, e in not_stored:
        spent[w // 86400] += json.loads(e).get("mot", 0)
    print("\nprivacy: motion releases stored for periods %s, %d re-released periods not stored; ε spent per day "
          "(milli) %s; policy %d" % (sorted(released_periods), len(re_released), dict(spent), per_day))
    assert released_periods, "no motion release stored at all (rejected by the gateway?): the scenario tested nothing"
    assert all(v <= per_day for v in spent.values()), "daily ε exceeded: %r > %d" % (dict(spent), per_day)
    # The rollbacks crossed the 06:00 boundary: the first one closed the 06:00 period early, a release of
    # its own beside the natural one of the 00:00 period. Every later crossing was a release attempt
    # for one of those two periods again, which the device's ledger refused (it records the end of the
    # last released period per field, with the grant): no re-release left the board at all, so the
    # gateway had none to set aside, and no period was stored twice.
    six = DAY0 + 6 * 3600
    assert sorted(released_periods) == [six - 21600, six], "periods released: %r" % sorted(released_periods)
    assert re_released == [], "the board re-released periods it had released: %r" % re_released
    assert periods == [], "periods stored more than once: %r" % periods


async def test_a_board_whose_clock_lost_its_time_gets_it_back_and_reports(tmp_path: Path) -> None:
    # A real ESP32 RTC without power starts in 2000 (every first boot; a streetlight after a mains
    # cut). Periodic reports need a set clock and only an ACK sets it: the firmware must ask (a boot
    # report) or it stays silent for good. Modelled as a clock 20,000 days back, then a reset.
    gw = VirtualClockGateway(_board(tmp_path, DAY0 + 20 * 3600, seed=1), tmp_path / "gw")
    try:
        await gw.start()
        await gw.board.stimulus("light", 5)
        await gw.run(60)
        await gw.drain()
        before = len(gw.rows())
        await gw.board.fault("clock_skew -20000d")
        await gw.board.fault("reset")
        await gw.run(3600)
        await gw.drain()
        rows = gw.rows()
        offset_days = (await gw.board.state())["clock_offset_ms"] / 86_400_000
    finally:
        await gw.stop()
    types = [t for _seq, t, _w, _e in rows[before:]]
    print("\nunset clock: %d rows after the reset, types %s, clock offset %.3f days" % (len(types), types, offset_days))
    assert types[:1] == ["boot"], types              # asked for the time first
    assert types.count("win") >= 3, types             # then reports its windows again
    assert abs(offset_days) < 0.01


async def test_a_link_that_keeps_back_one_frame_cannot_make_the_ack_drop_it(tmp_path: Path) -> None:
    # A man in the middle (BLE has no link authentication) cannot forge or alter frames, but it can
    # keep one back (a fire alarm) and relay the later ones. A cumulative ACK of those, after the
    # gateway's timed gap hold, would make the board delete the held-back frame from its outbox. The
    # firmware's h (protocol §2) says the board still holds it: the ACK waits as long as it takes.
    from gateway.protocol import parse_frame

    gw = VirtualClockGateway(_board(tmp_path, DAY0 + 20 * 3600 + 58 * 60, seed=5), tmp_path / "gw")
    try:
        await gw.start()
        await gw.board.stimulus("light", 5)
        await gw.run(180)  # the 21:00 window and hour go through
        await gw.drain()
        assert gw.generated(), "nothing reported before the attack"
        target = max(gw.generated()) + 1  # the next report the board frames
        gw.link_filter = lambda raw: parse_frame(raw).seq != target
        await gw.run(40 * 60)  # 40 virtual minutes: ~3 later windows relayed, many ACK rounds
        assert gw.watch is not None
        held_back = sorted(int(name[:8], 16) for name in gw.watch.pending())
        stored = {seq for seq, *_ in gw.rows()}
        later = {s for s in gw.generated() if s > target}
        gw.link_filter = None  # the attacker gives up (or the board is reached another way)
        await gw.drain()
        rows = gw.rows()
    finally:
        await gw.stop()
    print("\nheld back seq %d; later seqs %s stored meanwhile; the board still held %s"
          % (target, sorted(later & stored), held_back))
    assert later & stored, "no later report was relayed: nothing tested"
    assert target not in stored
    assert target in held_back, "the board dropped the held-back frame: an ACK covered it"
    assert gw.metrics.value("civicedge_ack_gap_waits_total") == 1
    assert [seq for seq, *_ in rows].count(target) == 1
