"""``latest`` of ``/api/devices``: each released field's newest value, per field, for both kinds.

A streetlight releases its PIR count every 6 h in a "win" report of its own (``l`` = 21600,
firmware/policy.json ``release_every_s``) whose period starts hours before the newest 15-minute
window; a field absent from a report was not released (protocol §2), which says nothing about
its earlier values. The snapshot follows the store incrementally, so the same values must come
out of a refresh that reads only the new reports as out of one that reads the whole store.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.storage import queries
from gateway.web.app import create_app
from gateway.web.snapshot import FleetState

from .support import ADMIN_TOKEN, NOW, Fleet

SIX_H = 21600
WIN = 900


def app_over(fleet: Fleet, clock: Callable[[], float]) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=clock)
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


async def latest_of(client: TestClient, device: str) -> dict[str, Any]:
    resp = await client.get(f"/api/devices/{device}")
    assert resp.status == 200, await resp.text()
    latest: dict[str, Any] = (await resp.json())["latest"]
    return latest


async def feed_six_hours_of_sl03(fleet: Fleet) -> None:
    """sl-03 (silent in the fixture) as the firmware reports: windows, hourly energy, then at 12:00
    the 06:00-12:00 PIR count in its own "win" report."""
    for w in range(NOW - 3600, NOW, WIN):
        await fleet.report("sl-03", {"t": "win", "k": "streetlight", "w": w, "l": WIN,
                                     "m": {"lux": (w - NOW) // 90 + 50, "lvl": 40, "lamp": 0}})
    await fleet.report("sl-03", {"t": "hour", "k": "streetlight", "w": NOW - 3600, "l": 3600, "m": {"wh": 31}})
    await fleet.report("sl-03", {"t": "win", "k": "streetlight", "w": NOW - SIX_H, "l": SIX_H,
                                 "m": {"mot": 42}, "e": {"mot": 500}})


async def test_the_six_hourly_motion_count_shows_next_to_the_window_fields(client: TestClient, fleet: Fleet) -> None:
    await feed_six_hours_of_sl03(fleet)
    assert await latest_of(client, "sl-03") == {"lux": 40, "lvl": 40, "lamp": 0, "wh": 31, "mot": 42}
    state = FleetState(fleet.queries).refresh(NOW).devices["sl-03"]
    assert state.latest_at == {"lux": NOW, "lvl": NOW, "lamp": NOW, "wh": NOW, "mot": NOW}  # period ends


async def test_a_field_missing_from_the_newest_report_keeps_its_newest_released_value(
    client: TestClient, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For both kinds, and the same whether the snapshot read the store whole (by either query)
    or followed it."""
    await latest_of(client, "sl-03")  # the snapshot is loaded: what follows is read incrementally
    await fleet.report("sl-03", {"t": "win", "k": "streetlight", "w": NOW - 2 * SIX_H, "l": SIX_H,
                                 "m": {"mot": 17}, "e": {"mot": 500}})
    await feed_six_hours_of_sl03(fleet)
    # The next 6-hour count was suppressed below k (ε spent, no value): 42 stays the latest released.
    await fleet.report("sl-03", {"t": "win", "k": "streetlight", "w": NOW, "l": SIX_H, "m": {},
                                 "e": {"mot": 500}})
    # A window without lux (not released): lvl and lamp move on, lux keeps its value.
    await fleet.report("sl-03", {"t": "win", "k": "streetlight", "w": NOW, "l": WIN, "m": {"lvl": 30, "lamp": 0}})
    # bin-01: a window without temp, and a late re-send of an older day's lid count.
    await fleet.report("bin-01", {"t": "win", "k": "bin", "w": NOW, "l": WIN, "m": {"tilt": 0, "bat": 70}},
                       link="ble:AA:BB:CC:00:00:00")
    await fleet.report("bin-01", {"t": "day", "k": "bin", "w": NOW - NOW % 86400 - 2 * 86400, "l": 86400,
                                  "m": {"lid": 5}, "e": {"lid": 500}}, link="ble:AA:BB:CC:00:00:00")
    # bin-02: a second report of the same period start (a higher seq; an aggregate, no e: stored, as after
    # a clock step back) replaces the first's values.
    await fleet.report("bin-02", {"t": "win", "k": "bin", "w": NOW - WIN, "l": WIN, "m": {"bat": 90}},
                       link="ble:AA:BB:CC:00:00:01")

    expected = {
        "sl-03": {"lux": 40, "lvl": 30, "lamp": 0, "wh": 31, "mot": 42},
        # fill: the 12:00 release of the 06:00-12:00 level (support.feed_morning)
        "bin-01": {"fill": 50, "bat": 70, "temp": 12, "tilt": 0, "lid": 23},
        "bin-02": {"fill": 70, "temp": 13, "tilt": 0, "bat": 90},
    }
    for device, values in expected.items():
        assert await latest_of(client, device) == values, device
    for walk_from in (0, 10 ** 9):  # read from scratch, by the walk and by the flat read: the same
        monkeypatch.setattr(queries, "_RELEASED_WALK_FROM", walk_from)
        whole = FleetState(fleet.queries).refresh(NOW).devices
        assert {d: dict(whole[d].latest) for d in expected} == expected
        assert whole["sl-03"].latest_at["lux"] == NOW and whole["sl-03"].latest_at["lvl"] == NOW + WIN
        assert whole["bin-01"].latest_at["temp"] == NOW and whole["bin-01"].latest_at["lid"] == NOW - NOW % 86400


async def test_a_released_value_removed_by_retention_leaves_the_snapshot(fleet: Fleet) -> None:
    clock = [float(NOW)]
    async with app_over(fleet, clock=lambda: clock[0]) as client:
        await feed_six_hours_of_sl03(fleet)
        assert (await latest_of(client, "sl-03"))["mot"] == 42
        await fleet.ingest.run_in_store(fleet.store.apply_retention, {("streetlight", "mot"): 1}, NOW + 10 * 86400)
        clock[0] += 61
        latest = await latest_of(client, "sl-03")
        assert "mot" not in latest and latest["lux"] == 40
