"""hil_gateway's report wait says the likely cause: a deep-sleeping virtual board runs too fast, or a
clock too slow for a report window to have closed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.backends.errors import BackendError
from hil.boards import load_board
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.pytest_plugin.hints import (MAX_DEEP_SLEEP_SPEED, combined_hints, deep_sleep_hint, deep_sleep_hints,
                                     slow_clock_hint, slow_clock_hints)


def _board(tmp_path: Path, name: str, speed: float | None, backend: str = "sim") -> BoardHandle:
    definition = load_board(name)
    handle = BoardHandle(backend=backend, definition=definition, identity=make_identity(definition), workdir=tmp_path)
    handle.extras["sim_speed"] = speed
    return handle


def _gateway(tmp_path: Path, *boards: BoardHandle) -> GatewayProcess:
    # Not started: no store, so no report ever arrives (what the user saw, without the wait).
    return GatewayProcess(workdir=tmp_path / "gw", serial_ports=["/dev/null"], failure_hint=deep_sleep_hints(boards))


def test_bin_at_high_speed_fails_with_the_likely_cause(tmp_path: Path) -> None:
    bin_board = _board(tmp_path, "bin-esp32c3", 120)
    gateway = _gateway(tmp_path, bin_board)
    assert gateway.serial_ports == ["/dev/null"] and gateway.workdir == tmp_path / "gw"
    with pytest.raises(BackendError) as info:
        gateway.wait_for_reports(count=2, device_id=bin_board.device_id, timeout_s=0.2)
    message = str(info.value)
    assert "0 of 2 reports stored after 0.2 s" in message
    assert f"hint: {bin_board.device_id} (bin-esp32c3) deep-sleeps" in message
    assert "at speed 120 that is 0.25 s of wall time" in message
    assert f"@pytest.mark.sim(speed=...) <= {MAX_DEEP_SLEEP_SPEED:g}" in message
    assert info.value.details["hint"] == deep_sleep_hint([bin_board])
    assert info.value.details["count"] == 0


def test_the_error_counts_the_reports_its_wait_saw(tmp_path: Path) -> None:
    # A report stored while the hint is worked out does not change the count the error states.
    gateway = GatewayProcess(workdir=tmp_path / "gw")
    gateway.workdir.mkdir()
    with sqlite3.connect(gateway.db_path) as conn:
        conn.execute("CREATE TABLE reports (device TEXT, seq INTEGER)")

    def hint(device_id: str | None) -> str:
        with sqlite3.connect(gateway.db_path) as late:
            late.execute("INSERT INTO reports VALUES ('sl-1', 1)")
        return f"hint: about {device_id}"

    gateway.failure_hint = hint
    with pytest.raises(BackendError) as info:
        gateway.wait_for_reports(count=2, device_id="sl-1", timeout_s=0.1)
    assert str(info.value).startswith("0 of 2 reports stored") and str(info.value).endswith("hint: about sl-1")
    assert info.value.details["count"] == 0 and len(gateway.stored_reports("sl-1")) == 1


@pytest.mark.parametrize("name, speed, backend", [
    ("bin-esp32c3", 5, "sim"),             # slow enough: the awake window fits a BLE connect
    ("streetlight-esp32", 300, "sim"),     # never sleeps
    ("bin-esp32c3", None, "qemu"),         # real time elsewhere
])
def test_no_hint_where_deep_sleep_is_not_the_cause(tmp_path: Path, name: str, speed: float | None,
                                                   backend: str) -> None:
    board = _board(tmp_path, name, speed, backend)
    assert deep_sleep_hint([board]) is None
    with pytest.raises(BackendError) as info:
        _gateway(tmp_path, board).wait_for_reports(timeout_s=0.1)
    assert "hint:" not in str(info.value)


def test_as_fast_as_possible_counts_as_too_fast(tmp_path: Path) -> None:
    hint = deep_sleep_hint([_board(tmp_path, "streetlight-esp32", 0), _board(tmp_path, "bin-esp32c3", 0)])
    assert hint is not None and "speed 0 (as fast as possible)" in hint and "(bin-esp32c3)" in hint


def test_only_the_awaited_device_is_considered(tmp_path: Path) -> None:
    light, fast_bin = _board(tmp_path, "streetlight-esp32", 300), _board(tmp_path, "bin-esp32c3", 300)
    with pytest.raises(BackendError) as info:
        _gateway(tmp_path, light, fast_bin).wait_for_reports(device_id=light.device_id, timeout_s=0.1)
    assert "hint:" not in str(info.value)


def _running(tmp_path: Path, name: str, speed: float | None, backend: str = "sim", *, since_s: float) -> BoardHandle:
    board = _board(tmp_path, name, speed, backend)
    board.extras["reporting_since"] = time.monotonic() - since_s
    return board


def test_a_wait_at_speed_1_hints_that_no_window_closed_yet(tmp_path: Path) -> None:
    """Reports leave when a 15-minute window closes: at speed 1 a short wait can never see one."""
    light = _running(tmp_path, "streetlight-esp32", 1, since_s=5)
    gateway = GatewayProcess(workdir=tmp_path / "gw", failure_hint=slow_clock_hints([light]))
    with pytest.raises(BackendError) as info:
        gateway.wait_for_reports(device_id=light.device_id, timeout_s=0.1)
    hint = info.value.details["hint"]
    assert str(info.value).endswith(hint)
    assert hint.startswith(f"hint: {light.device_id} reports when a 15-minute window of its clock closes")
    assert "at speed 1 its clock ran ~5 s since it started reporting, less than one window" in hint
    assert "@pytest.mark.sim(speed=300) (a window every 3 s of wall time)" in hint


@pytest.mark.parametrize("backend", ["serial", "qemu"])
def test_a_real_time_board_hints_too(tmp_path: Path, backend: str) -> None:
    board = _running(tmp_path, "streetlight-esp32", None, backend, since_s=60)
    hint = slow_clock_hint([board])
    assert hint is not None and f"on the {backend} backend boards run in real time and it ran 60 s" in hint
    assert "timeout_s=960" in hint


@pytest.mark.parametrize("speed, since_s", [(300, 5), (1, 901), (0, 1), (None, 1)])
def test_no_slow_clock_hint_once_a_window_could_close(tmp_path: Path, speed: float | None, since_s: float) -> None:
    # 300x for 5 s is 25 virtual minutes; speed 0 jumps from timer to timer; a paused clock is the test's own choice.
    assert slow_clock_hint([_running(tmp_path, "streetlight-esp32", speed, since_s=since_s)]) is None
    assert slow_clock_hint([_board(tmp_path, "streetlight-esp32", 1)]) is None  # not brought up by the fixture


def test_the_fixture_hints_join_one_per_line(tmp_path: Path) -> None:
    fast_bin = _running(tmp_path, "bin-esp32c3", 120, since_s=1)  # deep sleep too fast, and 120 s < a window
    hint = combined_hints(deep_sleep_hints([fast_bin]), slow_clock_hints([fast_bin]))(fast_bin.device_id)
    assert hint is not None and hint.count("hint: ") == 2 and "deep-sleeps" in hint.splitlines()[0]
