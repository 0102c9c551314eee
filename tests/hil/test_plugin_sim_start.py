"""``@pytest.mark.sim(start=...)``: a test chooses when its boards' virtual clock starts (a streetlight at
night, a bin over a DST change) instead of the wall clock now."""

from __future__ import annotations

import datetime as dt

import pytest

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

START = "2031-03-04T22:06:07+01:00"


def test_sim_start_sets_the_boards_clock(pytester: pytest.Pytester, sim_available: None) -> None:
    start_ms = int(dt.datetime.fromisoformat(START).timestamp() * 1000)
    pytester.makepyfile(f'''
import pytest

@pytest.mark.board("streetlight-esp32")
@pytest.mark.sim(speed=1, start="{START}")
def test_clock(hil_board):
    now = hil_board.control.state()["now"]
    # the host's clock and the firmware's own (MicroPython time.time(), seconds since 1970 on the port)
    assert {start_ms} <= now < {start_ms} + 120_000, now
    board_s = hil_board.dut.eval("__import__('time').time()")
    assert {start_ms // 1000} <= board_s < {start_ms // 1000} + 120, board_s
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
