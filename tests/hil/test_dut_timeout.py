"""Dut.exec past its timeout on a virtual board: DeviceTimeoutError (not a protocol error), then Ctrl-C
and the raw REPL again when the board can answer."""

from __future__ import annotations

from typing import Any

import pytest

import hil.dut.dut as dut_module
from hil.dut import DeviceTimeoutError, Dut

pytestmark = pytest.mark.timeout(150)


def test_code_overrunning_its_timeout_raises_timeout_and_the_board_answers_again(
        blank_virtual_board: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dut_module, "RECOVER_S", 20.0)  # a loaded machine runs the loop slowly
    with Dut(blank_virtual_board.console_path) as dut:
        with pytest.raises(DeviceTimeoutError) as info:
            dut.exec("for i in range(8000000):\n    pass", timeout_s=0.3)
        assert info.value.operation == "exec" and info.value.recovered is True
        assert "after Ctrl-C the board answers again" in str(info.value)
        assert dut.eval("6 * 7", timeout_s=10) == 42


def test_code_that_never_returns_raises_timeout_not_protocol_error(blank_virtual_board: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dut_module, "RECOVER_S", 0.5)
    with Dut(blank_virtual_board.console_path) as dut:
        with pytest.raises(DeviceTimeoutError) as info:
            dut.exec("import time\nwhile True:\n time.sleep(1)", timeout_s=2)
    # The simulator runs code synchronously: a loop that never returns blocks the virtual board.
    assert info.value.recovered is False
    assert "did not answer Ctrl-C either" in str(info.value)
