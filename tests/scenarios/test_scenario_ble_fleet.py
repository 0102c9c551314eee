"""Several streetlights over the virtual BLE radio lose no report at the default 60x: the generated
gateway config gives every board a slot (plus the one the gateway keeps for known boards) and an
authentication timeout that covers a report window at the run's speed; each board's first BLE link
delivers."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenarios import load_scenario
from hil.scenarios.runner import ble_slot_lines, run_scenario

TWO_BLE_LIGHTS = """
name = "two-ble-lights"
description = "two streetlights over the virtual BLE radio"
start = "2026-11-21T20:07:00Z"
duration = "40m"
speed = 60
[[boards]]
board = "streetlight-esp32"
ids = ["sl-ble-a", "sl-ble-b"]
link = "ble"
[boards.stimuli]
set = { light = 4, lamp_current = "auto" }
[expect]
no_loss = true
reports_min = 4
"""


def test_every_ble_board_gets_a_slot_besides_the_kept_one() -> None:
    lines = ble_slot_lines(2, speed=60, window_s=900)
    assert "max_connections = 3" in lines  # 2 boards + the slot kept for known addresses
    assert "max_connections = 2" in ble_slot_lines(1, speed=60, window_s=900)
    assert "max_connections = 64" in ble_slot_lines(200, speed=60, window_s=900)


def test_the_auth_timeout_covers_a_report_window_at_the_speed() -> None:
    def timeout(speed: float) -> float:
        return float(next(v for v in ble_slot_lines(2, speed=speed, window_s=900) if v.startswith("auth_timeout_s"))
                     .split("=")[1])
    assert timeout(60) >= 900 / 60 + 5
    assert timeout(10) >= 900 / 10  # 15 virtual min = 90 wall s at 10x
    assert timeout(3600) == 20.0  # never below the gateway's default
    assert timeout(0.5) == 600.0  # the gateway's upper bound


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_two_ble_streetlights_lose_nothing_at_60x(tmp_path: Path) -> None:
    path = tmp_path / "two-ble-lights.toml"
    path.write_text(TWO_BLE_LIGHTS)
    result = await run_scenario(load_scenario(path), workdir=tmp_path / "work", handle_signals=False)
    log = (result.workdir / "gateway.log").read_text(errors="replace")[-3000:]
    detail = "\n".join(f"{'ok ' if c.passed else 'BAD'} {c.name}: {c.message}" for c in result.checks)
    assert result.passed, f"{detail}\nerrors: {result.errors}\ngateway log:\n{log}"
    assert {d for d, _ in ((r[0], r[1]) for r in result.data.reports)} == {"sl-ble-a", "sl-ble-b"}
    # Each board's first link carries its reports (the firmware gives every link its own send
    # position, so the UART the streetlight also drives, which nobody reads, does not take the
    # frames from BLE): no link is dropped for want of a verified frame. (A reconnect after a
    # hiccup of a loaded machine would be legitimate, so connections are not counted.)
    full_log = (result.workdir / "gateway.log").read_text(errors="replace")
    for board in ("sl-ble-a", "sl-ble-b"):
        assert f"({board}), ATT MTU" in full_log, full_log[-3000:]
        assert f"({board}): no frame from it verified" not in full_log, full_log[-3000:]
