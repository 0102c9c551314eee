"""The gateway gives its BLE link its own monotonic clock: the simulated one under [sim_clock], so a BLE
pause ends when the simulation moves the clock past it (docs/ble.md §8, Which clock)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.config import load_config
from gateway.service import Gateway
from gateway.transports.ble_link import BleTransport


def _gateway(tmp_path: Path, extra: str) -> Gateway:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "data"\n[http]\nenabled = false\n[ble]\nenabled = true\n' + extra)
    return Gateway(load_config(path))


def _ble(gw: Gateway) -> BleTransport:
    [ble] = [t for t in gw.transports if isinstance(t, BleTransport)]
    return ble


def test_under_sim_clock_ble_pauses_follow_the_simulated_clock(tmp_path: Path) -> None:
    """Test fails before: the transport was built without the clock and timed its pauses in real time."""
    virtual_at = 1_790_000_000.0
    (tmp_path / "clock.json").write_text(json.dumps({"virtual_at": virtual_at, "wall_at": time.time(), "speed": 600}))
    gw = _gateway(tmp_path, '[sim_clock]\nfollow_file = "clock.json"\n')
    pause_clock = _ble(gw)._monotonic  # noqa: SLF001 - the clock its SlotPolicy pauses are timed by
    first, real = pause_clock(), time.monotonic()
    time.sleep(0.2)
    moved = pause_clock() - first
    # at 600x, 0.2 real seconds are about 120 simulated ones: a pause of 30 s is over in 0.05 s of real time
    assert moved >= 60 * (time.monotonic() - real) and moved >= 60
    assert abs(pause_clock() - gw.clock()) < 5


def test_without_sim_clock_ble_pauses_are_real_time(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, "")
    assert _ble(gw)._monotonic is time.monotonic  # noqa: SLF001
