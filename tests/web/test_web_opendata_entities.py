"""What the open-data entities claim about a device: its liveness as the operator views see it, the
units of its numbers and when each value was observed.

Each test answers a finding of the open-data officer's QA pass (quoted in its docstring), over the
real aiohttp app and the real SQLite store of the fed fleet (tests/web/conftest.py)."""

from __future__ import annotations

import csv
import io
from typing import Any, Callable

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.opendata import INGEST_LAG_S
from gateway.web.liveness import STALE_WINDOWS, window_of
from gateway.web.publication import ENTITY_MARK_S, entity_mark

from .support import ADMIN_TOKEN, NOW, RECEIVED_AT, Fleet, admin_headers
from .test_web_opendata import check_key_values, normalized_to_key_values

ENTITIES = "/opendata/ngsi-ld/v1/entities"


def app_client(fleet: Fleet, clock: Callable[[], float]) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=clock)
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


async def get_json(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json(content_type=None)


async def test_a_silent_device_is_not_published_as_working(fleet: Fleet) -> None:
    """QA: silent devices stay status ok / powerState on in open data while /api/devices says stale."""
    # Every fixture report was received at RECEIVED_AT; the first publication mark past the operator
    # views' limit (the open data judges silence at its marks: docs/open-data.md):
    silent_at = entity_mark(RECEIVED_AT + STALE_WINDOWS * window_of(load_policy(), "bin")) + ENTITY_MARK_S
    async with app_client(fleet, lambda: float(silent_at)) as client:
        devices = {d["id"]: d["status"] for d in (await get_json(client, "/api/devices"))["devices"]}
        assert devices["sl-01"] == devices["bin-01"] == "stale"
        assert devices["sl-02"] == devices["bin-02"] == "alarm"  # an open alarm outranks silence
        by_id = {e["id"]: e for e in await get_json(client, ENTITIES + "?options=keyValues")}
        for e in by_id.values():
            check_key_values(e)
        sl1, bin1 = by_id["urn:ngsi-ld:Streetlight:sl-01"], by_id["urn:ngsi-ld:WasteContainer:bin-01"]
        assert bin1["status"] == "unknown"
        # Nobody knows how a silent lamp is set now; what it measured stays, with its time.
        assert "powerState" not in sl1 and "illuminanceLevel" not in sl1
        assert sl1["status"] == "ok" and sl1["powerConsumption"] == 51.0
        assert sl1["observationDateTime"] == "2026-11-21T12:00:00Z"
        # The open alarms still speak for the silent devices that raised them.
        assert by_id["urn:ngsi-ld:WasteContainer:bin-02"]["status"] == "burning"
        assert by_id["urn:ngsi-ld:Streetlight:sl-02"]["status"] == "defectiveLamp"
        # One entity, the normalized form and GeoJSON say the same.
        one = await get_json(client, ENTITIES + "/urn:ngsi-ld:WasteContainer:bin-01")
        assert normalized_to_key_values(one)["status"] == "unknown"
        geo = await get_json(client, "/opendata/devices.geojson")
        props = {f["id"]: f["properties"] for f in geo["features"]}
        assert props["bin-01"]["status"] == "unknown" and "powerState" not in props["sl-01"]


async def test_open_data_and_the_device_list_call_the_same_devices_silent(fleet: Fleet) -> None:
    """The limit is the one /api/devices uses: a second before it, nothing is stale anywhere. The open
    data applies it at its publication marks (QA LOW7: turning silent to the second, 45 minutes after
    the last report, would date that report's arrival), so it follows at the next quarter hour."""
    limit = RECEIVED_AT + STALE_WINDOWS * window_of(load_policy(), "bin")
    mark = entity_mark(limit) + ENTITY_MARK_S
    for at, stale, published in ((limit, False, False), (limit + 1, True, False), (mark - 1, True, False),
                                 (mark, True, True)):
        async with app_client(fleet, lambda at=at: float(at)) as client:
            devices = {d["id"]: d["status"] for d in (await get_json(client, "/api/devices"))["devices"]}
            by_id = {e["id"]: e for e in await get_json(client, ENTITIES + "?options=keyValues")}
            assert (devices["bin-01"] == "stale") is stale, at
            assert (by_id["urn:ngsi-ld:WasteContainer:bin-01"]["status"] == "unknown") is published, at
            assert ("powerState" not in by_id["urn:ngsi-ld:Streetlight:sl-01"]) is published, at



# UN/CEFACT Recommendation 20 common codes, as NGSI-LD's unitCode takes them: watt, degree Celsius and
# "one" (a share 0..1: illuminanceLevel and fillingLevel are published as fractions, not as percent).
EXPECTED_UNIT_CODES = {"powerConsumption": "WTT", "temperature": "CEL", "illuminanceLevel": "C62",
                       "fillingLevel": "C62"}


async def test_normalized_numbers_carry_their_unit_code(client: TestClient) -> None:
    """QA: NGSI-LD carries no units."""
    seen: set[str] = set()
    for e in await get_json(client, ENTITIES):
        for name, attr in e.items():
            if not isinstance(attr, dict) or attr.get("type") != "Property":
                continue
            if isinstance(attr["value"], (int, float)) and not isinstance(attr["value"], bool):
                assert attr["unitCode"] == EXPECTED_UNIT_CODES[name], (e["id"], name)
                seen.add(name)
            else:
                assert "unitCode" not in attr, (e["id"], name)
    assert seen == set(EXPECTED_UNIT_CODES)


async def test_each_property_is_dated_by_what_it_was_observed_from(client: TestClient) -> None:
    """QA: one observationDateTime for all; each property needs its own observedAt, from its own period."""
    by_id = {e["id"]: e for e in await get_json(client, ENTITIES)}
    sl1, bin2 = by_id["urn:ngsi-ld:Streetlight:sl-01"], by_id["urn:ngsi-ld:WasteContainer:bin-02"]
    # The hourly energy of 11:00-12:00, the last window's level, the 6-hour fill ending at 12:00.
    assert sl1["powerConsumption"]["observedAt"] == "2026-11-21T12:00:00Z"
    assert sl1["illuminanceLevel"]["observedAt"] == sl1["powerState"]["observedAt"] == "2026-11-21T12:00:00Z"
    assert bin2["fillingLevel"]["observedAt"] == "2026-11-21T12:00:00Z"
    # bin-02 burns: its status comes from the fire alarm raised at 11:40, not from its 12:00 tilt value;
    # published as the start of its 15-minute window, not the minute (test_web_opendata_alarm_times.py).
    assert bin2["status"]["value"] == "burning" and bin2["status"]["observedAt"] == "2026-11-21T11:30:00Z"
    # Date-time values are themselves the time: they carry no observedAt.
    assert "observedAt" not in sl1["observationDateTime"] and "observedAt" not in bin2["binLoggedTime"]


async def test_a_revocation_says_what_becomes_of_the_public_data_and_does_it(client: TestClient) -> None:
    """QA (open-data officer): revoking a device drops it from the public listings without a word about
    it in the revoke answer."""
    assert "urn:ngsi-ld:Streetlight:sl-01" in {e["id"] for e in await get_json(client, ENTITIES)}
    resp = await client.post("/api/admin/devices/sl-01/revoke", headers=admin_headers())
    answer = await resp.json()
    assert resp.status == 200 and answer["revoked"] is True
    for words in ("leaves the open-data listings", "NGSI-LD", "devices.geojson", "/opendata/readings.csv",
                  "until their retention ends"):
        assert words in answer["open_data"], answer
    # What it says of the listings holds from the next request on.
    assert "urn:ngsi-ld:Streetlight:sl-01" not in {e["id"] for e in await get_json(client, ENTITIES)}
    geo = await get_json(client, "/opendata/devices.geojson")
    assert "sl-01" not in {f["id"] for f in geo["features"]}


async def _csv_rows_of(client: TestClient, device: str) -> list[dict[str, str]]:
    resp = await client.get(f"/opendata/readings.csv?from={NOW - 6 * 3600}&to={NOW}")
    assert resp.status == 200, await resp.text()
    return [r for r in csv.DictReader(io.StringIO(await resp.text())) if r["device"] == device]


async def test_a_retirement_says_what_becomes_of_the_public_data_and_does_it(fleet: Fleet) -> None:
    """A retired board left this gateway (moved to another one, whose entity speaks for it now, or taken off
    the street): before, its entity stayed listed, claiming a current state nobody observes, and the retire
    answer said nothing of the public data. Its past rows stay in the CSV; reinstating brings it back."""
    async with app_client(fleet, lambda: float(NOW + INGEST_LAG_S)) as client:  # the 11:00 hour in the CSV
        urn = "urn:ngsi-ld:Streetlight:sl-01"
        assert urn in {e["id"] for e in await get_json(client, ENTITIES)}
        rows = await _csv_rows_of(client, "sl-01")
        assert rows
        resp = await client.post("/api/admin/devices/sl-01/retire", headers=admin_headers())
        answer = await resp.json()
        assert resp.status == 200 and answer["retired"] is True
        for words in ("leaves the open-data listings", "NGSI-LD", "devices.geojson", "/opendata/readings.csv",
                      "until their retention ends", "reinstating it brings its entity back"):
            assert words in answer["open_data"], answer
        # What it says holds from the next request on: out of the listings, its rows kept.
        assert urn not in {e["id"] for e in await get_json(client, ENTITIES)}
        assert (await client.get(ENTITIES + "/" + urn)).status == 404
        geo = await get_json(client, "/opendata/devices.geojson")
        assert "sl-01" not in {f["properties"]["device"] for f in geo["features"]}
        assert await _csv_rows_of(client, "sl-01") == rows

        resp = await client.post("/api/admin/devices/sl-01/reinstate", headers=admin_headers())
        answer = await resp.json()
        assert resp.status == 200 and answer["retired"] is False
        assert "is back in the open-data listings" in answer["open_data"], answer
        assert urn in {e["id"] for e in await get_json(client, ENTITIES)}
        geo = await get_json(client, "/opendata/devices.geojson")
        assert "sl-01" in {f["properties"]["device"] for f in geo["features"]}
