"""Dut.exec past its timeout on a virtual board: DeviceTimeoutError (not a protocol error), then Ctrl-C
and the raw REPL again when the board can answer.

The simulator runs code synchronously on a virtual clock (``time.ticks_ms()`` does not move while
code runs), so code that takes a given wall time is a busy loop sized on the machine running the test.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import hil.dut.dut as dut_module
from hil.dut import DeviceTimeoutError, Dut

pytestmark = pytest.mark.timeout(150)


def _busy_loop(dut: Dut, seconds: float) -> str:
    """Code that keeps this machine's virtual board busy for about ``seconds`` of wall time."""
    n = 1_000_000
    started = time.monotonic()
    dut.exec(f"for i in range({n}):\n    pass", timeout_s=60)
    per_iteration = max(1e-9, time.monotonic() - started) / n
    return f"for i in range({int(seconds / per_iteration)}):\n    pass"


def test_code_overrunning_its_timeout_raises_timeout_and_the_board_answers_again(
        blank_virtual_board: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dut_module, "RECOVER_S", 20.0)  # a loaded machine runs the loop slowly
    with Dut(blank_virtual_board.console_path) as dut:
        code = _busy_loop(dut, 2.5)
        with pytest.raises(DeviceTimeoutError) as info:
            dut.exec(code, timeout_s=1)
        assert info.value.operation == "exec" and info.value.recovered is True
        assert "after Ctrl-C the board answers again" in str(info.value)
        assert dut.eval("6 * 7", timeout_s=10) == 42


def test_an_acknowledgement_after_the_deadline_is_a_timeout(blank_virtual_board: Any) -> None:
    # The simulator says "OK" only once the code ran: code finishing in 0.6 s overran timeout_s=0.2.
    with Dut(blank_virtual_board.console_path) as dut:
        code = _busy_loop(dut, 0.6)
        with pytest.raises(DeviceTimeoutError) as info:
            dut.exec(code, timeout_s=0.2)
        assert info.value.recovered is True
        assert dut.eval("6 * 7", timeout_s=10) == 42


def test_code_that_never_returns_raises_timeout_not_protocol_error(blank_virtual_board: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dut_module, "RECOVER_S", 0.5)
    with Dut(blank_virtual_board.console_path) as dut:
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError) as info:
            dut.exec("import time\nwhile True:\n time.sleep(1)", timeout_s=3)
        elapsed = time.monotonic() - started
    # The simulator runs code synchronously: a loop that never returns blocks the virtual board.
    assert info.value.recovered is False
    assert "did not answer Ctrl-C either" in str(info.value)
    # The recovery gets RECOVER_S, not another timeout_s waiting on a read still set to the exec's time.
    assert elapsed < 3 + 0.5 + 1.5, elapsed


def test_after_a_failed_recovery_the_next_exec_skips_the_late_banners(blank_virtual_board: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery gives up while the code still runs; its Ctrl-A stays queued on the board, so when the
    # code ends the board prints one raw REPL banner for it and one for the next exec's Ctrl-A.
    monkeypatch.setattr(dut_module, "RECOVER_S", 0.5)
    with Dut(blank_virtual_board.console_path) as dut:
        code = _busy_loop(dut, 5.0)
        with pytest.raises(DeviceTimeoutError) as info:
            dut.exec(code, timeout_s=1)
        assert info.value.recovered is False
        assert dut.eval("6 * 7", timeout_s=30) == 42
        assert dut.eval("7 * 8", timeout_s=10) == 56
