"""Audit: a board sent one report with ``w`` years in the future and then reported right again; the future
value stayed the device's newest (``latest_at`` in /api/devices, ``observedAt`` in the NGSI-LD entities) for
years, and no metric said so: ``civicedge_devices_dated_ahead`` counts by the last stored report (a board
clock ahead now; its alert clears once the board is right). ``civicedge_devices_values_ahead`` counts the
devices whose newest shown values are dated ahead.

The real gateway store and ingest of the fed fleet (tests/web/support.py Fleet), the real web app.
"""

from __future__ import annotations

from .support import NOW, Fleet
from .test_web_metrics_fleet import _scrape_and_devices
from .test_web_opendata_publishing import app_client

YEARS_AHEAD = NOW + 3 * 365 * 86400 - (NOW + 3 * 365 * 86400) % 900  # a window three years on


def _ahead(families: dict[str, list[tuple[dict[str, str], float]]],
           name: str = "civicedge_devices_values_ahead") -> dict[str, float]:
    return {labels["kind"]: value for labels, value in families[name]}


async def test_a_value_dated_years_ahead_is_counted_while_open_data_shows_it(fleet: Fleet) -> None:
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": YEARS_AHEAD, "l": 900,
                                 "m": {"lux": 20, "lvl": 50, "lamp": 0}})
    right_w = NOW - NOW % 900 - 900
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": right_w, "l": 900,
                                 "m": {"lux": 30, "lvl": 40, "lamp": 0}})  # right again: an earlier period

    families, devices, _ = await _scrape_and_devices(fleet, NOW)
    [sl01] = [d for d in devices if d["id"] == "sl-01"]
    assert sl01["last_end"] == right_w + 900  # the last report is right: before, the gauge said 0
    # newest by period, so the future values stay: what an operator sees is latest_at years after last_seen
    assert sl01["latest_at"]["lux"] == sl01["latest_at"]["lvl"] == YEARS_AHEAD + 900 > sl01["last_seen"] + 86400
    assert _ahead(families)["streetlight"] == 1.0
    assert _ahead(families)["bin"] == 0.0
    assert _ahead(families, "civicedge_devices_dated_ahead")["streetlight"] == 0.0  # its clock is right now

    # The open data shows it with that time (published at the next quarter hour).
    async with app_client(fleet, clock=lambda: float(NOW + 1800)) as c:
        resp = await c.get("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01")
        assert resp.status == 200
        body = await resp.json()
        assert body["illuminanceLevel"]["observedAt"].startswith("2029-")  # lvl 50 of the future window

    # Once its time has come (the gateway's clock past it), it is no longer counted.
    families, _, _ = await _scrape_and_devices(fleet, YEARS_AHEAD + 900)
    assert _ahead(families)["streetlight"] == 0.0
