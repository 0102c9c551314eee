"""[sim_clock] follow_file: the gateway's clock follows a file the simulation rewrites (the demo's boards
on a loaded machine run slower than --speed; a fixed clock ran hours ahead of them)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.config.model import SimClockConfig
from gateway.config.sim_clock import (CHECK_EVERY_S, FOLLOW_EXTRAPOLATE_WALL_S, HOLD_WALL_S, STEP_BACK_MIN_S, SimClock,
                                     step_back_bound)
from gateway.errors import ConfigError


def _config(tmp_path: Path, sim_clock: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\ndata_dir = "data"\n[http]\nenabled = false\n[sim_clock]\n{sim_clock}\n')
    return path


def _write(path: Path, content: Any) -> None:
    """As the demo writes it: a temporary file, then os.replace."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content if isinstance(content, str) else json.dumps(content))
    os.replace(tmp, path)


class _Time:
    """A settable wall clock (the clock under test reads time through the functions it is given)."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 0.0

    def step(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_follow_file_is_read_at_load_relative_to_the_config(tmp_path: Path) -> None:
    _write(tmp_path / "clock.json", {"virtual_at": 5000.0, "wall_at": 10.0, "speed": 60})
    cfg = load_config(_config(tmp_path, 'follow_file = "clock.json"'))
    assert cfg.sim_clock == SimClockConfig(speed=60.0, virtual_at=5000.0, wall_at=10.0,
                                           follow_file=tmp_path / "clock.json")


@pytest.mark.parametrize(
    ("content", "reason", "message"),
    [
        (None, "bad_path", "cannot read"),
        ("{\"virtual_at\": 1,", "bad_value", "is not valid JSON"),
        ([1, 2, 3], "bad_value", "must hold a JSON object with virtual_at, wall_at, speed, not list"),
        ({"virtual_at": 1.0, "wall_at": 2.0}, "bad_value", "lacks 'speed'"),
        ({"virtual_at": 1.0, "wall_at": 2.0, "speed": 1, "sped": 2}, "bad_value", "unknown key(s) 'sped'"),
        ({"virtual_at": "noon", "wall_at": 2.0, "speed": 1}, "bad_value", "virtual_at must be a finite number"),
        ({"virtual_at": 1.0, "wall_at": True, "speed": 1}, "bad_value", "wall_at must be a finite number"),
        ({"virtual_at": 1.0, "wall_at": 2.0, "speed": -1}, "bad_value", "speed = -1.0 is outside 0..1e+06"),
        # Too large for a float: math.isfinite raised OverflowError (a traceback from --check).
        ({"virtual_at": 10 ** 400, "wall_at": 2.0, "speed": 1}, "bad_value",
         "virtual_at must be a finite number, not an integer of 401 digits"),
        # Python's json reads these JavaScript literals.
        ('{"virtual_at": NaN, "wall_at": 2.0, "speed": 1}', "bad_value", "virtual_at must be a finite number, not nan"),
        ('{"virtual_at": 1.0, "wall_at": Infinity, "speed": 1}', "bad_value",
         "wall_at must be a finite number, not inf"),
        ('{"virtual_at": 1.0, "wall_at": 2.0, "speed": -Infinity}', "bad_value",
         "speed must be a finite number, not -inf"),
        # Milliseconds, not seconds: a clock in the year 55000 froze the gateway there.
        ({"virtual_at": 1.7e12, "wall_at": 2.0, "speed": 1}, "bad_value",
         "virtual_at = 1700000000000.0 is outside 0..253402300799 (unix time in seconds"),
        ({"virtual_at": 1.0, "wall_at": -5, "speed": 1}, "bad_value", "wall_at = -5.0 is outside 0..253402300799"),
    ],
)
def test_a_follow_file_that_cannot_be_used_is_a_specific_config_error(
        tmp_path: Path, content: Any, reason: str, message: str) -> None:
    if content is not None:
        _write(tmp_path / "clock.json", content)
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, 'follow_file = "clock.json"'))
    assert info.value.reason == reason and info.value.key == "sim_clock.follow_file"
    assert message in str(info.value) and str(tmp_path / "clock.json") in str(info.value)


def test_follow_file_and_fixed_values_together_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "clock.json", {"virtual_at": 5000.0, "wall_at": 10.0, "speed": 60})
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, 'follow_file = "clock.json"\nspeed = 60'))
    assert info.value.reason == "bad_value" and info.value.key == "sim_clock.speed"
    assert "leave out speed" in str(info.value)


def test_the_clock_follows_the_file_extrapolates_and_never_steps_back(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    _write(path, {"virtual_at": 1000.0, "wall_at": 100.0, "speed": 60})
    t = _Time(100.0)
    clock = SimClock(SimClockConfig(speed=60.0, virtual_at=1000.0, wall_at=100.0, follow_file=path),
                     wall=lambda: t.wall, monotonic=lambda: t.mono)
    assert clock() == 1000.0
    t.step(0.3)
    assert clock() == pytest.approx(1018.0)
    # The boards run at 30x, not 60x: they are at 1009 at wall 100.3.
    _write(path, {"virtual_at": 1009.0, "wall_at": 100.3, "speed": 30})
    t.wall += CHECK_EVERY_S / 2  # not looked at yet: the file is read at most every CHECK_EVERY_S
    assert clock() == pytest.approx(1018.0 + 60 * CHECK_EVERY_S / 2)
    last = clock()
    t.step(CHECK_EVERY_S)  # read now: 1009 + 0.3 * 30 = 1018 is behind what was said: held, not stepped back
    assert clock() == last
    t.step(2)  # the boards pass the held time; from there on the clock extrapolates at their pace
    _write(path, {"virtual_at": 1009.0 + (t.wall - 100.3) * 30, "wall_at": t.wall, "speed": 30})
    t.step(CHECK_EVERY_S)
    assert clock() == pytest.approx(1009.0 + (t.wall - 100.3) * 30)
    before = clock()
    t.step(0.25)
    assert clock() - before == pytest.approx(7.5)


def _following(path: Path, t: _Time, content: dict[str, float]) -> SimClock:
    _write(path, content)
    return SimClock(SimClockConfig(speed=content["speed"], virtual_at=content["virtual_at"],
                                   wall_at=content["wall_at"], follow_file=path),
                    wall=lambda: t.wall, monotonic=lambda: t.mono)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("bad", ['{"virtual_at": 1e999, "wall_at": 1, "speed": 1}',  # json: inf
                                 '{"virtual_at": %s, "wall_at": 1, "speed": 1}' % (10 ** 400),
                                 '{"virtual_at": 1700000000000, "wall_at": 100, "speed": 10}'])
def test_a_bad_value_mid_run_keeps_the_last_clock(tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str) -> None:
    """A huge integer raised OverflowError out of clock() to the gateway's caller; ms for s froze the clock."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 1000.0, "wall_at": 100.0, "speed": 10})
    clock()
    _write(path, bad)
    with caplog.at_level(logging.WARNING, logger="gateway.config.sim_clock"):
        for _ in range(3):  # the last good clock, extrapolated up to the cap: then it waits for a good file
            t.step(1)
            assert clock() == pytest.approx(1000.0 + FOLLOW_EXTRAPOLATE_WALL_S * 10)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "keeping the last clock" in warnings[0], warnings


def test_a_clock_that_was_wrong_steps_back_once_corrected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bad write (a day ahead), then corrected: the clock used to hold the wrong time until a restart
    (and ACK time sync pushed it to every board)."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 1000.0, "wall_at": 100.0, "speed": 10})
    clock()
    _write(path, {"virtual_at": 1010.0 + 86400, "wall_at": 101.0, "speed": 10})
    t.step(1)
    assert clock() == pytest.approx(1010.0 + 86400)
    with caplog.at_level(logging.WARNING, logger="gateway.config.sim_clock"):
        for _ in range(5):  # corrected: the writer's updates each wall second
            t.step(1)
            _write(path, {"virtual_at": 1000.0 + (t.wall - 100.0) * 10, "wall_at": t.wall, "speed": 10})
            assert clock() == pytest.approx(1000.0 + (t.wall - 100.0) * 10)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "stepping back" in warnings[0] and "86390 virtual s behind" in warnings[0], warnings


def test_a_lag_within_the_bound_is_held_and_beyond_it_stepped_back(tmp_path: Path) -> None:
    """The bound is (CHECK_EVERY_S + HOLD_WALL_S) wall seconds of the clock at its speed, at least 60 s."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 10_000.0, "wall_at": 100.0, "speed": 100})
    assert step_back_bound(100) == pytest.approx((CHECK_EVERY_S + HOLD_WALL_S) * 100) == pytest.approx(520.0)
    assert step_back_bound(1) == STEP_BACK_MIN_S == 60.0
    assert clock() == 10_000.0
    t.step(1)  # the boards are at 9 500, 500 s behind what was said: held
    _write(path, {"virtual_at": 9_500.0, "wall_at": 101.0, "speed": 100})
    assert clock() == 10_000.0
    t.step(1)  # at 9 470 now, 530 s behind: more than 520, stepped back
    _write(path, {"virtual_at": 9_470.0, "wall_at": 102.0, "speed": 100})
    assert clock() == pytest.approx(9_470.0)


def test_a_hold_within_the_bound_lasts_over_many_reads_when_the_pace_drops(tmp_path: Path) -> None:
    """The bound takes the pace the clock ran at before the hold: it took the new, lower pace from the
    second read on, so a lag the bound allows (boards stalled on a loaded machine) was stepped back."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 10_000.0, "wall_at": 100.0, "speed": 100})
    t.step(3)
    _write(path, {"virtual_at": 10_300.0, "wall_at": 103.0, "speed": 100})
    assert clock() == pytest.approx(10_300.0)
    _write(path, {"virtual_at": 10_000.0, "wall_at": 103.0, "speed": 10})  # ~300 s behind, now at 10x
    t.step(CHECK_EVERY_S)
    held = clock()  # the file is read: held where the clock was
    assert held == pytest.approx(10_300.0)
    for _ in range(20):  # many reads, across several looks at the file
        t.step(0.1)
        assert clock() == held
    t.step(40)  # the boards at 10x pass the held time
    _write(path, {"virtual_at": 10_000.0 + (t.wall - 103.0) * 10, "wall_at": t.wall, "speed": 10})
    assert clock() > held


def test_a_change_is_seen_even_with_the_same_inode_size_and_mtime(tmp_path: Path) -> None:
    """Changes were detected by (inode, mtime, size): an in-place rewrite of the same length within one
    mtime tick (or a reused inode after a replace) was never read."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 1000.0, "wall_at": 100.0, "speed": 10})
    clock()
    before = os.stat(path)
    path.write_text(json.dumps({"virtual_at": 2000.0, "wall_at": 100.0, "speed": 10}))  # same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    t.step(1)
    assert clock() == pytest.approx(2000.0 + FOLLOW_EXTRAPOLATE_WALL_S * 10)


def test_one_warning_until_the_file_is_good_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It warned once per change of the file: a writer rewriting a broken file flooded the log."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 1000.0, "wall_at": 100.0, "speed": 10})
    clock()
    with caplog.at_level(logging.INFO, logger="gateway.config.sim_clock"):
        for bad in ("{broken", '{"virtual_at": "x", "wall_at": 1, "speed": 1}', None, "[]", "{broken again"):
            if bad is None:
                path.unlink()
            else:
                _write(path, bad)
            t.step(1)
            clock()
        assert len(_warnings(caplog)) == 1, _warnings(caplog)
        _write(path, {"virtual_at": 5000.0, "wall_at": t.wall, "speed": 10})
        t.step(CHECK_EVERY_S)
        assert clock() == pytest.approx(5000.0 + CHECK_EVERY_S * 10)
        assert any("usable again" in r.getMessage() for r in caplog.records)
        _write(path, "{broken")  # broken again after a good file: said again
        t.step(1)
        clock()
    assert len(_warnings(caplog)) == 2, _warnings(caplog)


def test_a_missing_or_broken_file_keeps_the_last_clock_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clock.json"
    _write(path, {"virtual_at": 1000.0, "wall_at": 100.0, "speed": 10})
    t = _Time(100.0)
    clock = SimClock(SimClockConfig(speed=10.0, virtual_at=1000.0, wall_at=100.0, follow_file=path),
                     wall=lambda: t.wall, monotonic=lambda: t.mono)
    clock()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="gateway.config.sim_clock"):
        for _ in range(10):  # extrapolated up to the cap, then waiting for the file
            t.step(1)
            assert clock() == pytest.approx(1000.0 + FOLLOW_EXTRAPOLATE_WALL_S * 10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeping the last clock" in warnings[0] and str(path) in warnings[0]
    caplog.clear()
    _write(path, {"virtual_at": 5000.0, "wall_at": t.wall, "speed": 10})  # back: followed again
    t.step(CHECK_EVERY_S)
    assert clock() == pytest.approx(5000.0 + CHECK_EVERY_S * 10)
    _write(path, "{not json")  # a broken write: warned once, the last clock kept
    with caplog.at_level(logging.WARNING, logger="gateway.config.sim_clock"):
        for _ in range(5):
            t.step(1)
            clock()
    assert clock() == pytest.approx(5000.0 + FOLLOW_EXTRAPOLATE_WALL_S * 10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "is not valid JSON" in warnings[0], warnings


def test_a_fixed_sim_clock_is_unchanged(tmp_path: Path) -> None:
    t = _Time(11.0)
    clock = SimClock(SimClockConfig(speed=60.0, virtual_at=1000.0, wall_at=10.0), wall=lambda: t.wall)
    assert clock() == 1060.0
    t.step(0.5)
    assert clock() == 1090.0


def test_the_clock_extrapolates_past_the_files_last_update_by_at_most_the_cap(tmp_path: Path) -> None:
    """Demo QA at 1000x: a clock file written at the requested speed (the boards ran ~300x) and not
    updated for a few wall seconds put the gateway 20-40 virtual minutes ahead of the boards; its hold
    and ACK time sync then set the boards back by more than the firmware's 5 minutes, and they reported
    their windows again. Past FOLLOW_EXTRAPOLATE_WALL_S after the file's wall_at the clock waits."""
    path = tmp_path / "clock.json"
    t = _Time(100.0)
    clock = _following(path, t, {"virtual_at": 10_000.0, "wall_at": 100.0, "speed": 1000})
    t.step(FOLLOW_EXTRAPOLATE_WALL_S / 2)  # within the cap: extrapolated
    assert clock() == pytest.approx(10_000.0 + 1000 * FOLLOW_EXTRAPOLATE_WALL_S / 2)
    cap = 10_000.0 + 1000 * FOLLOW_EXTRAPOLATE_WALL_S
    for _ in range(10):  # the writer stalls: the clock stops at the cap, it does not run on
        t.step(1)
        assert clock() == pytest.approx(cap)
    # The writer is back: the boards ran at 300x; the clock is behind them and follows at once.
    _write(path, {"virtual_at": 10_000.0 + 300 * 10.5, "wall_at": t.wall, "speed": 300})
    t.step(CHECK_EVERY_S)
    assert clock() == pytest.approx(10_000.0 + 300 * 10.5 + 300 * CHECK_EVERY_S)


def test_the_cap_holds_from_the_first_read_at_load_and_not_for_a_fixed_clock(tmp_path: Path) -> None:
    """The gateway's first clock is the file as read at load: it must not run ahead while the gateway boots."""
    path = tmp_path / "clock.json"
    _write(path, {"virtual_at": 10_000.0, "wall_at": 100.0, "speed": 1000})
    cfg = load_config(_config(tmp_path, 'follow_file = "clock.json"'))
    assert cfg.sim_clock is not None
    t = _Time(130.0)  # 30 wall s of boot: 30 000 virtual s at the file's speed
    clock = SimClock(cfg.sim_clock, wall=lambda: t.wall, monotonic=lambda: t.mono)
    assert clock() == pytest.approx(10_000.0 + 1000 * FOLLOW_EXTRAPOLATE_WALL_S)
    fixed = SimClock(SimClockConfig(speed=1000.0, virtual_at=10_000.0, wall_at=100.0), wall=lambda: t.wall)
    assert fixed() == pytest.approx(40_000.0)  # a fixed [sim_clock] has no file to wait for
