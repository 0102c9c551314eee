"""``hil_board.control.advance(seconds)`` refuses a value that is not a finite number of seconds >= 0 itself, naming
it in seconds (was the simulator host's ``"ms" must be a number of ms >= 0, not -10000``)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hil.backends.sim_driver import SimControl, _LoopThread


class ClockBoard:
    """Stands in for a VirtualBoard: records the advances that reach it."""

    def __init__(self) -> None:
        self.advances: list[float] = []

    async def advance(self, seconds: float) -> int:
        self.advances.append(seconds)
        return 1_000 + int(seconds * 1000)


@pytest.fixture
def control() -> Any:
    loop = _LoopThread()
    try:
        yield SimControl(ClockBoard(), loop)
    finally:
        loop.close()


@pytest.mark.parametrize(("value", "shown"), [(-10, "-10"), (-0.5, "-0.5"), (math.nan, "nan"), (math.inf, "inf"),
                                              (-math.inf, "-inf")])
def test_a_negative_or_non_finite_advance_is_refused_in_seconds(control: SimControl, value: float, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        control.advance(value)
    message = str(info.value)
    assert f"not {shown}" in message and "seconds >= 0" in message, message
    assert "ms" not in message.replace("seconds", "")  # in the caller's unit, not the host's milliseconds
    assert control.board.advances == []  # nothing reached the simulator


@pytest.mark.parametrize("value", ["5", None, True, [1]])
def test_an_advance_that_is_not_a_number_is_refused(control: SimControl, value: Any) -> None:
    with pytest.raises(ValueError, match=r"advance\(seconds\): seconds must be a number of seconds >= 0, not "):
        control.advance(value)
    assert control.board.advances == []


@pytest.mark.parametrize("value", [0, 1.5, 600])
def test_a_valid_advance_reaches_the_board(control: SimControl, value: float) -> None:
    assert control.advance(value) == 1_000 + int(value * 1000)
    assert control.board.advances == [value]
