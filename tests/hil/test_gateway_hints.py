"""hil_gateway's report wait says the likely cause when a deep-sleeping virtual board runs too fast."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hil.backends.board import BoardHandle, make_identity
from hil.backends.errors import BackendError
from hil.boards import load_board
from hil.pytest_plugin.gateway_process import GatewayProcess
from hil.pytest_plugin.hints import MAX_DEEP_SLEEP_SPEED, deep_sleep_hint, deep_sleep_hints


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
