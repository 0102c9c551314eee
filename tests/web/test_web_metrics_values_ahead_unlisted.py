"""Review L4 (rev-fresh): civicedge_devices_values_ahead counted revoked and retired devices, whose entities open
data does not list (so no future time of theirs is shown), as if open data showed their values; the open alarms
gauge already left them out. Counted now: devices open data lists only, as the help text says."""

from __future__ import annotations

from .support import NOW, Fleet
from .test_web_metrics_fleet import _scrape_and_devices


async def test_values_ahead_leaves_out_revoked_and_retired_devices(fleet: Fleet) -> None:
    ahead_w = NOW + 200 * 86400 - (NOW + 200 * 86400) % 900
    for dev in ("sl-01", "sl-02"):
        await fleet.report(dev, {"t": "win", "k": "streetlight", "w": ahead_w, "l": 900,
                                 "m": {"lux": 20, "lvl": 50, "lamp": 0}})
    families, _, _ = await _scrape_and_devices(fleet, NOW)
    shown = {labels["kind"]: value for labels, value in families["civicedge_devices_values_ahead"]}
    assert shown["streetlight"] == 2.0
    fleet.registry.revoke("sl-01")
    fleet.registry.retire("sl-02")
    families, devices, _ = await _scrape_and_devices(fleet, NOW)
    [sl01] = [d for d in devices if d["id"] == "sl-01"]
    assert sl01["latest_at"]["lux"] == ahead_w + 900  # still stored, still ahead
    shown = {labels["kind"]: value for labels, value in families["civicedge_devices_values_ahead"]}
    # Before the fix: 2.0 (neither is listed by open data: /opendata/entities leaves revoked/retired out).
    assert shown["streetlight"] == 0.0
