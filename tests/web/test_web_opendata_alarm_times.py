"""The open data dates an alarm to its window, never to its minute (QA M3, journalist's audit).

A tipped bin is mostly a person, a fire often a cigarette: ``"status": "dropped", "observedAt":
"...T11:47:00Z"`` dated that person's act to the minute, finer than the 15-minute window values (a tilt
in that window) already published. The operators' ``/api`` keeps the minute.
"""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from .support import NOW, Fleet

ENTITIES = "/opendata/ngsi-ld/v1/entities"
TIP_AT = NOW - 13 * 60  # 11:47
LAMP_FAIL_AT = NOW - 8 * 60  # 11:52
WINDOW_START = "2026-11-21T11:45:00Z"  # the 15-minute window holding both
MINUTES = ("11:47", "11:52")


async def _raise_alarms(fleet: Fleet) -> None:
    """bin-01 tipped at 11:47; sl-03, which last sent a window ending at 06:00, reports a lamp failure at
    11:52 (so no value of it is later than its alarm, and its entity's Last-Modified is the alarm's)."""
    await fleet.report("bin-01", {"t": "alarm", "k": "bin", "w": TIP_AT, "l": 60, "m": {}, "a": ["tip"]},
                       link="ble:AA:BB:CC:00:00:00")
    await fleet.report("sl-03", {"t": "win", "k": "streetlight", "w": NOW - 6 * 3600 - 900, "l": 900,
                                 "m": {"lux": 10, "lvl": 50, "lamp": 0}})
    await fleet.report("sl-03", {"t": "alarm", "k": "streetlight", "w": LAMP_FAIL_AT, "l": 60, "m": {},
                                 "a": ["lamp_fail"]})


async def test_an_alarms_status_is_dated_to_the_start_of_its_window(fleet: Fleet, client: TestClient) -> None:
    """Before: observedAt 11:47:00Z (tip) and 11:52:00Z (lamp_fail), and Last-Modified 11:52."""
    await _raise_alarms(fleet)
    resp = await client.get(ENTITIES)
    assert resp.status == 200
    by_id = {e["id"]: e for e in await resp.json(content_type=None)}
    tipped = by_id["urn:ngsi-ld:WasteContainer:bin-01"]["status"]
    assert (tipped["value"], tipped["observedAt"]) == ("dropped", WINDOW_START)
    failed = by_id["urn:ngsi-ld:Streetlight:sl-03"]["status"]
    assert (failed["value"], failed["observedAt"]) == ("defectiveLamp", WINDOW_START)
    one = await client.get(ENTITIES + "/urn:ngsi-ld:Streetlight:sl-03")
    assert one.status == 200
    assert one.headers["Last-Modified"] == "Sat, 21 Nov 2026 11:45:00 GMT"


async def test_no_public_answer_shows_an_alarms_minute(fleet: Fleet, client: TestClient) -> None:
    """Neither a body nor a Last-Modified of the open data names 11:47 or 11:52; /api/alarms does."""
    await _raise_alarms(fleet)
    for path in (ENTITIES, ENTITIES + "?options=keyValues", ENTITIES + "/urn:ngsi-ld:WasteContainer:bin-01",
                 ENTITIES + "/urn:ngsi-ld:Streetlight:sl-03", "/opendata/devices.geojson", "/opendata",
                 "/opendata/catalog.jsonld", "/opendata/readings.csv?from=2026-11-21T00:00:00Z"):
        resp = await client.get(path)
        assert resp.status == 200, path
        text = await resp.text()
        shown = text + resp.headers.get("Last-Modified", "")
        assert not [m for m in MINUTES if m in shown], path
    api = await client.get("/api/alarms")
    times = {(a["device"], a["code"]): a["at"] for a in (await api.json())["alarms"]}
    assert times[("bin-01", "tip")] == TIP_AT and times[("sl-03", "lamp_fail")] == LAMP_FAIL_AT
