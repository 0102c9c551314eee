"""``Dut(on_stop=...)``: the code run at each raw REPL entry, in one write (sim) or as an exec after it.

Against a real MicroPython (the wasm port behind a pty, ``repl_peer``): a late answer after an entry
timeout is not taken for the next command's, a hook that fails is run once more (and a rerun that
times out does not recurse), a bare board reports that it held no watchdog, and a one-write entry
that would overflow a real board's console buffer is refused.
"""

from __future__ import annotations

import time

import pytest

from hil.dut import Dut
from hil.dut.dut import ONE_WRITE_MAX, _one_write_payload
from hil.dut.errors import DeviceConnectError, DeviceTimeoutError
from hil.dut.watchdog import HOLD_WATCHDOG_MAX_MS, hold_watchdog_code

pytestmark = pytest.mark.timeout(120)

MODES = [pytest.param(True, id="one-write"), pytest.param(False, id="exec-after-entry")]

# Counts its runs in a device global; fails on odd runs.
_FLAKY_HOOK = """\
try:
    _hook_n += 1
except NameError:
    _hook_n = 1
print('run', _hook_n)
if _hook_n % 2:
    raise ValueError('odd run')
"""


@pytest.mark.parametrize("on_stop", ["print('hook')", None])
@pytest.mark.parametrize("one_write", MODES)
def test_late_answer_after_an_entry_timeout_is_skipped(repl_peer, on_stop: str | None, one_write: bool) -> None:
    # The reviewer's repro: a firmware slow to stop answers the whole entry after its timeout; the
    # one-write entry then returned the stale hook output ('hook\n') as the next exec's result.
    with Dut(repl_peer.path) as plain:
        plain.exec("x = 1")
        plain._serial.write(b"\r\x02")  # friendly REPL
        time.sleep(0.3)
        plain._serial.write(b"import time; time.sleep(1.5)\r")  # a firmware slow to stop
        time.sleep(0.1)
        plain._transport.close()
    dut = Dut(repl_peer.path, on_stop=on_stop, on_stop_one_write=one_write)
    try:
        with pytest.raises(DeviceTimeoutError):
            dut.exec("print(41)", timeout_s=0.5)
        time.sleep(2.5)
        assert [dut.exec(f"print({n})") for n in (42, 43, 44)] == ["42\n", "43\n", "44\n"]
        assert dut.on_stop_result == ("hook\n" if on_stop else None)
    finally:
        dut.close()


@pytest.mark.parametrize("one_write", MODES)
def test_bare_board_holds_no_watchdog(repl_peer, one_write: bool) -> None:
    # No firmware ran (no civic.hal.hardware.WATCHDOG): the hold says so and changes nothing.
    with Dut(repl_peer.path, on_stop=hold_watchdog_code(600_000), on_stop_one_write=one_write) as dut:
        assert dut.eval("6*7") == 42
        assert dut.on_stop_result == "False\n"
        assert dut.eval("'_w' in globals()") is False  # the hold cleans up after itself


def test_hold_code_is_the_field_tools_literal(repl_peer) -> None:
    # hil.field's hold_watchdog parses the last printed line with literal_eval.
    with Dut(repl_peer.path) as dut:
        assert dut.eval_code(hold_watchdog_code(HOLD_WATCHDOG_MAX_MS + 5)) is False


def test_one_write_hook_that_fails_runs_once_more(repl_peer, caplog: pytest.LogCaptureFixture) -> None:
    with Dut(repl_peer.path, on_stop=_FLAKY_HOOK, on_stop_one_write=True) as dut:
        assert dut.exec("print('after')") == "after\n"
        assert dut.on_stop_result == "run 2\n"  # the first run raised; its rerun's output
        assert dut.eval("_hook_n") == 2
        assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("one_write", MODES)
def test_hook_that_keeps_failing_is_logged_not_raised(repl_peer, one_write: bool,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with Dut(repl_peer.path, on_stop="print('x')\nraise OSError('no hold')", on_stop_one_write=one_write) as dut:
        assert dut.eval("1+1") == 2
        assert dut.on_stop_result == "x\n"
    assert any("no hold" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_rerun_that_times_out_does_not_recurse(repl_peer) -> None:
    # Odd runs fail at once (-> rerun); even runs overrun the time left. Before, the rerun's timeout
    # recovery entered the raw REPL with the hook again, and so on without end. The budget leaves a loaded
    # machine seconds for the first run (0.6 s did not always: the time ran out in it, and the hook ran once).
    hook = _FLAKY_HOOK + "import time\ntime.sleep(4.0)\n"
    dut = Dut(repl_peer.path, on_stop=hook, on_stop_one_write=True)
    try:
        start = time.monotonic()
        with pytest.raises(DeviceTimeoutError):
            dut.exec("print('never')", timeout_s=2.0)
        assert time.monotonic() - start < 20
        time.sleep(4.5)  # the interrupted sleep, if the port finishes it first
        dut.on_stop = None
        dut._resync = True  # skip whatever the recovery left queued
        assert dut.eval("_hook_n") == 2  # the hook ran twice, not once per recovery
    finally:
        dut.close()


def test_one_write_payload_must_fit_a_console_buffer() -> None:
    with pytest.raises(ValueError, match=f"under {ONE_WRITE_MAX} bytes"):
        Dut("/nonexistent-tty", on_stop="x = 1\n" * 40, on_stop_one_write=True)
    with pytest.raises(DeviceConnectError):  # long code is fine when sent as an exec: the URL fails next
        Dut("/nonexistent-tty", on_stop="x = 1\n" * 40)


def test_hold_code_fits_one_write_at_the_longest_timeout() -> None:
    assert len(_one_write_payload(hold_watchdog_code(HOLD_WATCHDOG_MAX_MS * 10))) < ONE_WRITE_MAX
    assert str(HOLD_WATCHDOG_MAX_MS) in hold_watchdog_code(10**12)
    assert "timeout=1)" in hold_watchdog_code(-5)
