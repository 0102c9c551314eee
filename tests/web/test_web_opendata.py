"""Open data checked against the published FIWARE Smart Data Models.

The expectations below are written from the models' published JSON Schemas (see
docs/open-data.md for the exact sources):
  * dataModel.Streetlighting/Streetlight/schema.json: required id, type, location, status;
    status enum brokenLantern|columnIssue|defectiveLamp|ok; powerState enum bootingUp|low|off|on;
    illuminanceLevel number 0..1; powerConsumption number; dateLastLampChange,
    observationDateTime date-time.
  * dataModel.WasteManagement/WasteContainer/schema.json: required id, type, location;
    fillingLevel number 0..1; temperature number; status enum
    ok|lidOpen|dropped|moved|vandalized|burning|unknown; binLoggedTime date-time.
  * location: GeoJSON Point (RFC 7946), coordinates [longitude, latitude].
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client
from gateway.web import ngsi
from gateway.web.opendata import INGEST_LAG_S
from gateway.web.views import AlarmView, DeviceView

STREETLIGHT_REQUIRED = {"id", "type", "location", "status"}
STREETLIGHT_STATUS = {"brokenLantern", "columnIssue", "defectiveLamp", "ok"}
STREETLIGHT_POWER_STATE = {"bootingUp", "low", "off", "on"}
CONTAINER_REQUIRED = {"id", "type", "location"}
CONTAINER_STATUS = {"ok", "lidOpen", "dropped", "moved", "vandalized", "burning", "unknown"}
DATETIME_ATTRS = {"dateLastLampChange", "observationDateTime", "binLoggedTime", "dateLastSwitchingOn"}
NUMBER_ATTRS = {"illuminanceLevel", "powerConsumption", "fillingLevel", "temperature"}
STREETLIGHT_ATTRS = STREETLIGHT_REQUIRED | {"powerState", "illuminanceLevel", "powerConsumption",
                                            "dateLastLampChange", "observationDateTime", "areaServed", "@context"}
CONTAINER_ATTRS = CONTAINER_REQUIRED | {"status", "fillingLevel", "temperature", "binLoggedTime", "areaServed",
                                        "@context"}
URN = re.compile(r"^urn:ngsi-ld:(Streetlight|WasteContainer):[A-Za-z0-9._-]+$")


def is_datetime(value: Any) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def check_point(geom: Any) -> None:
    assert geom["type"] == "Point"
    lon, lat = geom["coordinates"]
    assert isinstance(lon, float) and isinstance(lat, float)
    assert -180 <= lon <= 180 and -90 <= lat <= 90


def check_key_values(entity: dict[str, Any]) -> None:
    """Validate one keyValues entity against the model's required attributes, types and enums."""
    assert URN.match(entity["id"])
    check_point(entity["location"])
    assert isinstance(entity["@context"], list) and entity["@context"][-1] == ngsi.NGSI_LD_CORE_CONTEXT
    if entity["type"] == "Streetlight":
        assert STREETLIGHT_REQUIRED <= set(entity) <= STREETLIGHT_ATTRS
        assert entity["status"] in STREETLIGHT_STATUS
        if "powerState" in entity:
            assert entity["powerState"] in STREETLIGHT_POWER_STATE
        assert ngsi.STREETLIGHT_CONTEXT in entity["@context"]
    else:
        assert entity["type"] == "WasteContainer"
        assert CONTAINER_REQUIRED <= set(entity) <= CONTAINER_ATTRS
        assert entity["status"] in CONTAINER_STATUS
        assert ngsi.WASTE_CONTEXT in entity["@context"]
    for name in NUMBER_ATTRS & set(entity):
        assert isinstance(entity[name], (int, float)) and not isinstance(entity[name], bool)
    for name in ("illuminanceLevel", "fillingLevel"):
        if name in entity:
            assert 0 <= entity[name] <= 1
    for name in DATETIME_ATTRS & set(entity):
        assert is_datetime(entity[name])


def normalized_to_key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """Reduce a normalized entity to keyValues, checking the NGSI-LD attribute shapes on the way."""
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ("id", "type", "@context"):
            out[name] = attr
            continue
        assert isinstance(attr, dict) and "value" in attr, name
        if name == "location":
            assert attr["type"] == "GeoProperty"
            out[name] = attr["value"]
            continue
        assert attr["type"] == "Property", name
        if "observedAt" in attr:
            assert is_datetime(attr["observedAt"])
        value = attr["value"]
        if name in DATETIME_ATTRS:
            assert value["@type"] == "DateTime"
            value = value["@value"]
        out[name] = value
    return out


async def entities(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    resp = await client.get("/opendata/ngsi-ld/v1/entities" + query)
    assert resp.status == 200
    assert resp.content_type == "application/ld+json"
    data = await resp.json(content_type=None)
    assert isinstance(data, list)
    return data


async def test_key_values_entities_follow_the_models(client: TestClient) -> None:
    items = await entities(client, "?options=keyValues")
    for e in items:
        check_key_values(e)
    by_id = {e["id"]: e for e in items}
    # Never-seen (sl-03) and revoked (bin-03) devices are not published.
    assert sorted(by_id) == ["urn:ngsi-ld:Streetlight:sl-01", "urn:ngsi-ld:Streetlight:sl-02",
                             "urn:ngsi-ld:WasteContainer:bin-01", "urn:ngsi-ld:WasteContainer:bin-02"]
    sl1, sl2 = by_id["urn:ngsi-ld:Streetlight:sl-01"], by_id["urn:ngsi-ld:Streetlight:sl-02"]
    assert sl1["status"] == "ok" and sl2["status"] == "defectiveLamp"
    assert sl1["powerState"] == "low" and sl1["illuminanceLevel"] == 0.5
    assert sl1["location"]["coordinates"] == [4.8952, 52.3702]
    assert sl1["powerConsumption"] == 51.0  # wh of the 11:00 hour = 40 + 11
    b1, b2 = by_id["urn:ngsi-ld:WasteContainer:bin-01"], by_id["urn:ngsi-ld:WasteContainer:bin-02"]
    assert b1["status"] == "ok" and b2["status"] == "burning"
    assert b1["fillingLevel"] == 0.5 and b2["fillingLevel"] == 0.7
    assert b1["temperature"] == 12.0


async def test_normalized_entities_carry_the_same_values(client: TestClient) -> None:
    normalized = await entities(client)
    key_values = {e["id"]: e for e in await entities(client, "?options=keyValues")}
    assert len(normalized) == len(key_values)
    for e in normalized:
        reduced = normalized_to_key_values(e)
        check_key_values(reduced)
        assert reduced == key_values[e["id"]]


async def test_type_filter_and_single_entity(client: TestClient) -> None:
    lights = await entities(client, "?type=Streetlight&options=keyValues")
    assert {e["type"] for e in lights} == {"Streetlight"} and len(lights) == 2
    resp = await client.get("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-02?options=keyValues")
    assert resp.status == 200
    one = await resp.json(content_type=None)
    check_key_values(one)
    assert one["status"] == "burning"
    resp = await client.get("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-03")
    assert resp.status == 404  # revoked: not published


async def test_open_data_never_contains_keys_or_people_raw_data(client: TestClient, fleet: Fleet) -> None:
    keys = [fleet.registry.key(d).hex() for d in ("sl-01", "sl-02", "bin-01", "bin-02", "bin-03")]
    for path in ("/opendata/ngsi-ld/v1/entities", "/opendata/ngsi-ld/v1/entities?options=keyValues",
                 "/opendata/readings.csv", "/opendata/devices.geojson", "/opendata"):
        resp = await client.get(path)
        assert resp.status == 200
        text = await resp.text()
        for key in keys:
            assert key not in text and key.upper() not in text
        for secret_word in ("key_file", "seq", "digest", "AA:BB:CC"):  # no key paths, seqs or link addresses
            assert secret_word not in text, (path, secret_word)


async def test_csv_is_hourly_per_device_with_policy_units(fleet: Fleet) -> None:
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 11:00 hour complete
        await _hourly_per_device(client)


async def _hourly_per_device(client: TestClient) -> None:
    resp = await client.get(f"/opendata/readings.csv?from={NOW - 3600}&to={NOW}&field=lux,fill")
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert rows and set(rows[0]) == {"hour", "device", "kind", "zone", "field", "unit", "aggregate", "value", "values",
                                     "until"}
    assert {r["hour"] for r in rows if r["field"] == "lux"} == {"2026-11-21T11:00:00Z"}
    lux = {r["device"]: r for r in rows if r["field"] == "lux"}
    assert set(lux) == {"sl-01", "sl-02"}
    # Light levels are averaged over the hour's four windows.
    assert lux["sl-01"]["aggregate"] == "mean" and lux["sl-01"]["values"] == "4" and lux["sl-01"]["unit"] == "lx"
    # Noisy counts are summed: the morning's one 6-hour release per lamp, labelled with the hour it
    # starts, in the range where it ends (when it was released).
    resp = await client.get(f"/opendata/readings.csv?from={NOW - 6 * 3600}&to={NOW - 5 * 3600}&field=mot")
    assert list(csv.DictReader(io.StringIO(await resp.text()))) == []
    resp = await client.get(f"/opendata/readings.csv?from={NOW - 3600}&to={NOW}&field=mot")
    mot = {r["device"]: r for r in csv.DictReader(io.StringIO(await resp.text()))}
    assert set(mot) == {"sl-01", "sl-02"}
    assert mot["sl-01"]["aggregate"] == "sum" and mot["sl-01"]["values"] == "1" and mot["sl-01"]["unit"] == "count"
    assert mot["sl-01"]["value"] == "31" and mot["sl-01"]["until"] == "2026-11-21T12:00:00Z"
    assert mot["sl-01"]["hour"] == "2026-11-21T06:00:00Z"
    # A bin's fill is released only as the level at the end of each 6 hours (policy release_every_s): like
    # the pass counts, one value labelled with the hour its period starts, in the range where it ends.
    # QA LOW6: its row said aggregate=mean, labelled with the period's start, while the value is the
    # level at its end (`until`): `last`.
    fill = {r["device"]: r for r in rows if r["field"] == "fill"}
    assert fill["bin-01"]["aggregate"] == "last" and fill["bin-01"]["unit"] == "%"
    assert float(fill["bin-01"]["value"]) == 50.0 and fill["bin-01"]["values"] == "1"
    assert fill["bin-01"]["hour"] == "2026-11-21T06:00:00Z" and fill["bin-01"]["until"] == "2026-11-21T12:00:00Z"


async def test_a_csv_row_of_a_longer_release_says_where_it_ends(fleet: Fleet) -> None:
    """A 6-hour pass count is labelled with the hour it starts; ``until`` keeps it from reading as one
    hour, and it is found in the hour it ends (when it was released), not before."""
    start = NOW - 12 * 3600  # 2026-11-21T00:00:00Z, before the fixture's morning
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": start, "l": 21600, "m": {"mot": 207},
                                 "e": {"mot": 500}})
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 12:05: the CSV's mark
        await _longer_release_rows(client, start)


async def _longer_release_rows(client: TestClient, start: int) -> None:
    resp = await client.get(f"/opendata/readings.csv?from={start}&to={start + 3600}&field=mot")
    assert list(csv.DictReader(io.StringIO(await resp.text()))) == []
    resp = await client.get(f"/opendata/readings.csv?from={start + 5 * 3600}&to={start + 6 * 3600}&field=mot")
    (row,) = list(csv.DictReader(io.StringIO(await resp.text())))
    assert row["device"] == "sl-01" and row["hour"] == "2026-11-21T00:00:00Z"
    assert row["until"] == "2026-11-21T06:00:00Z" and row["value"] == "207" and row["values"] == "1"


async def test_csv_zone_filter_and_bad_zone(client: TestClient, fleet: Fleet) -> None:
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as done:  # 12:05: the CSV's mark
        rows = list(csv.DictReader(io.StringIO(await (await done.get("/opendata/readings.csv?zone=north")).text())))
    assert rows and {r["zone"] for r in rows} == {"north"} and {r["device"] for r in rows} == {"bin-02"}


async def test_the_public_zone_error_names_only_zones_with_published_data(fleet: Fleet) -> None:
    """Review L2: a refused zone on the CSV listed every registered device's zone, so zone=x told anyone
    the zones of devices that never reported (nothing of theirs is published). /api may name them."""
    fleet.registry.add("sl-q9", kind="streetlight", zone="depot-secret", lat="52.37", lon="4.80")
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as c:  # 12:05: the fixture is in the CSV
        resp = await c.get("/opendata/readings.csv?zone=x")
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["param"] == "zone" and "centre" in error["message"] and "north" in error["message"]
        assert "depot-secret" not in error["message"]
        assert (await c.get("/opendata/readings.csv?zone=depot-secret")).status == 400
        operator = await c.get("/api/aggregates/hourly?zone=x")
        assert operator.status == 400 and "depot-secret" in (await operator.json())["error"]["message"]


async def test_geojson_feature_collection(client: TestClient) -> None:
    resp = await client.get("/opendata/devices.geojson")
    assert resp.status == 200 and resp.content_type == "application/geo+json"
    doc = await resp.json(content_type=None)
    assert doc["type"] == "FeatureCollection"
    assert len(doc["features"]) == 4
    for f in doc["features"]:
        assert f["type"] == "Feature"
        check_point(f["geometry"])
        props = f["properties"]
        assert props["kind"] in ("streetlight", "bin")
        status_enum = STREETLIGHT_STATUS if props["type"] == "Streetlight" else CONTAINER_STATUS
        assert props["status"] in status_enum


def _dev(**kw: Any) -> DeviceView:
    base: dict[str, Any] = {"id": "x-1", "kind": "streetlight", "zone": "z", "lat": 1.5, "lon": 2.5,
                            "last_seen": NOW, "latest": {"lvl": 0}, "latest_at": {"lvl": NOW}}
    base.update(kw)
    return DeviceView(**base)


@pytest.mark.parametrize(
    ("latest", "alarms", "expected"),
    [
        ({"lvl": 0, "lamp": 0}, (), ("ok", "off")),
        ({"lvl": 100, "lamp": 0}, (), ("ok", "on")),
        ({"lvl": 30, "lamp": 1}, (), ("defectiveLamp", "low")),
        ({"lvl": 30}, (AlarmView("x-1", "lamp_fail", NOW),), ("defectiveLamp", "low")),
    ],
)
def test_streetlight_status_and_power_state_mapping(latest: dict[str, int], alarms: tuple[AlarmView, ...],
                                                    expected: tuple[str, str]) -> None:
    e = ngsi.device_entity(_dev(latest=latest, alarms=alarms), key_values=True)
    check_key_values(e)
    assert (e["status"], e["powerState"]) == expected


def test_lamp_change_date_is_published_when_known() -> None:
    e = ngsi.device_entity(_dev(lamp_changed_at=NOW - 7200), key_values=True)
    check_key_values(e)
    assert e["dateLastLampChange"] == "2026-11-21T10:00:00Z"


@pytest.mark.parametrize(
    ("latest", "codes", "status"),
    [
        ({"fill": 100, "tilt": 0}, (), "ok"),
        ({"fill": 30, "tilt": 1}, (), "dropped"),
        ({"fill": 30, "tilt": 0}, ("tip",), "dropped"),
        ({"fill": 30, "tilt": 0}, ("fire", "tip"), "burning"),
        ({"bat": 50}, (), "unknown"),
    ],
)
def test_container_status_mapping(latest: dict[str, int], codes: tuple[str, ...], status: str) -> None:
    dev = _dev(kind="bin", latest=latest, latest_at={k: NOW for k in latest},
               alarms=tuple(AlarmView("x-1", c, NOW) for c in codes))
    e = ngsi.device_entity(dev, key_values=True)
    check_key_values(e)
    assert e["status"] == status
    if "fill" in latest:
        assert e["fillingLevel"] == latest["fill"] / 100


async def test_repaired_lamp_closes_its_alarm_and_dates_the_lamp_change(fleet: Fleet) -> None:
    clock = [float(NOW)]
    async with app_client(fleet, clock=lambda: clock[0]) as client:
        await _repaired_lamp(client, fleet, clock)


async def _repaired_lamp(client: TestClient, fleet: Fleet, clock: list[float]) -> None:
    # sl-02 raised lamp_fail at 11:00 and reported lamp = 1 since; the crew replaces the lamp.
    before = await (await client.get("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-02")).json(
        content_type=None)
    assert before["status"]["value"] == "defectiveLamp" and "dateLastLampChange" not in before
    await fleet.report("sl-02", {"t": "win", "k": "streetlight", "w": NOW, "l": 900,
                                 "m": {"lux": 0, "lvl": 100, "lamp": 0}})
    clock[0] = float(NOW + 900)  # the next quarter-hour mark publishes it
    resp = await client.get("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-02?options=keyValues")
    entity = await resp.json(content_type=None)
    check_key_values(entity)
    assert entity["status"] == "ok" and entity["powerState"] == "on"
    assert entity["dateLastLampChange"] == "2026-11-21T12:00:00Z"
    alarms = await (await client.get("/api/alarms")).json()
    assert [a["code"] for a in alarms["alarms"]] == ["fire"]


def test_the_aggregate_column_says_how_the_value_was_made() -> None:
    """QA LOW6: a 6-hourly fill row was labelled `mean` although its value is the level at the period's
    end. Fill rows of 15-minute windows stored before 2026-12-05 are means, and stay `mean`."""
    from gateway.resources import load_policy
    from gateway.web.export import device_hour_rows
    from gateway.web.views import DeviceHourAggregate

    hour = NOW - 6 * 3600
    groups = [DeviceHourAggregate(hour, "bin-01", "bin", "centre", "fill", 1, 50, hour + 21600),
              DeviceHourAggregate(hour, "bin-02", "bin", "centre", "fill", 4, 130, hour + 3600),
              DeviceHourAggregate(hour, "bin-01", "bin", "centre", "bat", 4, 320, hour + 3600),
              DeviceHourAggregate(hour, "sl-01", "streetlight", "centre", "mot", 1, 31, hour + 21600)]
    rows = device_hour_rows(groups, load_policy())
    assert [(r["device"], r["field"], r["aggregate"], r["value"]) for r in rows] == [
        ("bin-01", "fill", "last", 50.0), ("bin-02", "fill", "mean", 32.5), ("bin-01", "bat", "mean", 80.0),
        ("sl-01", "mot", "sum", 31)]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised() -> None:
    from gateway.web.export import rows_to_csv

    row = {"hour": "2026-11-21T11:00:00Z", "device": "-2+3", "kind": "bin", "zone": "=HYPERLINK(\"x\")",
           "field": "fill", "unit": "%", "aggregate": "mean", "value": -5, "values": 1,
           "until": "2026-11-21T12:00:00Z"}
    parsed = next(csv.DictReader(io.StringIO(rows_to_csv([row]))))
    assert parsed["device"] == "'-2+3" and parsed["zone"].startswith("'=")
    assert parsed["value"] == "-5"  # numbers stay numbers


async def test_csv_range_is_bounded(client: TestClient) -> None:
    resp = await client.get(f"/opendata/readings.csv?from={NOW - 40 * 86400}&to={NOW}")
    assert resp.status == 400 and "31 days" in (await resp.json())["error"]["message"]


async def test_open_data_may_be_read_from_any_site_and_the_api_may_not(client: TestClient) -> None:
    """CORS: a map or notebook on another site reads the open data; the API stays same-origin."""
    origin = {"Origin": "https://maps.example"}
    for path in ("/opendata/devices.geojson", "/opendata/ngsi-ld/v1/entities", "/opendata"):
        resp = await client.get(path, headers=origin)
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*", path
    resp = await client.options("/opendata/devices.geojson",
                                headers={**origin, "Access-Control-Request-Method": "GET"})
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    resp = await client.get("/api/devices", headers=origin)
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options("/api/admin/devices", headers={**origin, "Access-Control-Request-Method": "GET"})
    assert resp.status == 405 and "Access-Control-Allow-Origin" not in resp.headers


def _doc_mapping() -> dict[str, dict[str, str]]:
    """The "from" column of each model's attribute table in docs/open-data.md, backticks removed."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "open-data.md").read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    for model in ("Streetlight", "WasteContainer"):
        section = text.split(f"\n### {model}\n", 1)[1].split("\n#", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
        out[model] = {c[0].strip("`"): c[-1].replace("`", "") for c in cells}
    return out


async def test_served_mapping_says_what_the_docs_say(client: TestClient) -> None:
    """QA: the index said "...else ok" (no unknown), "mean lamp level" (not the scheduled one) and
    left out the 7 days of the lamp change; the docs and the index now share one text."""
    index = await (await client.get("/opendata")).json()
    assert index["mapping"] == _doc_mapping()
    assert "unknown" in index["mapping"]["WasteContainer"]["status"]
    assert "scheduled" in index["mapping"]["Streetlight"]["powerState"]
    assert "7 days" in index["mapping"]["Streetlight"]["dateLastLampChange"]


async def test_a_comma_list_of_types_selects_entities_of_any_of_them(client: TestClient) -> None:
    """QA: NGSI-LD's `type=Streetlight,WasteContainer` was refused with 400."""
    both = await entities(client, "?type=Streetlight,WasteContainer&options=keyValues")
    every = await entities(client, "?options=keyValues")
    assert sorted(e["id"] for e in both) == sorted(e["id"] for e in every) and len(both) == 4
    bins = await entities(client, "?type=WasteContainer,WasteContainer")
    assert {e["type"] for e in bins} == {"WasteContainer"} and len(bins) == 2
    # QA: ASCII spaces around an item are ignored, as in `field=fill, temp` (was 400).
    spaced = await entities(client, "?type=Streetlight,%20WasteContainer%20&options=keyValues")
    assert sorted(e["id"] for e in spaced) == sorted(e["id"] for e in every)
    for bad in ("Streetlight,Bogus", "Streetlight,", ",", "Streetlight, ", " ", "Streetlight|WasteContainer",
                "streetlight", "Streetlight,\u3000WasteContainer"):
        resp = await client.get("/opendata/ngsi-ld/v1/entities", params={"type": bad})
        assert resp.status == 400, bad
        error = (await resp.json())["error"]
        assert (error["code"], error["param"]) == ("bad_parameter", "type"), bad


async def test_the_index_advertises_urls_that_work(client: TestClient) -> None:
    """Every URL the index advertises is a request the gateway answers, not a pattern it refuses.

    QA: the CSV was advertised as ``/opendata/readings.csv?from=&to=&field=&zone=``, answered 400 (empty
    ``to``)."""
    index = await (await client.get("/opendata")).json()
    assert set(index["formats"]) == {"ngsi-ld", "csv", "geojson", "privacy-budget"}
    for name, url in index["formats"].items():
        # Absolute (QA: relative URLs are unusable once the index is saved or harvested elsewhere), on the
        # address the request came to when no [opendata] base_url is set.
        assert url.startswith(f"http://127.0.0.1:{client.port}/opendata/"), url
        resp = await client.get(url.removeprefix(f"http://127.0.0.1:{client.port}"))
        assert resp.status == 200, (name, url, await resp.text())
    assert set(index["parameters"]["ngsi-ld"]) == {"type", "options"}
    assert set(index["parameters"]["csv"]) == {"from", "to", "field", "zone", "withheld"}


async def test_a_preflight_and_a_405_list_the_same_methods(client: TestClient) -> None:
    """QA: OPTIONS on /opendata listed GET, HEAD, OPTIONS, a 405 there said Allow: GET,HEAD."""

    def methods(value: str) -> set[str]:
        return {m.strip() for m in value.split(",")}

    for path in ("/opendata", "/opendata/ngsi-ld/v1/entities", "/opendata/readings.csv", "/opendata/devices.geojson"):
        pre = await client.options(path, headers={"Origin": "https://maps.example",
                                                  "Access-Control-Request-Method": "GET"})
        assert pre.status == 204
        refused = await client.post(path)
        assert refused.status == 405 and (await refused.json())["error"]["code"] == "method_not_allowed"
        allowed = methods(refused.headers["Allow"])
        assert allowed == methods(pre.headers["Access-Control-Allow-Methods"]) == methods(pre.headers["Allow"]), path
        assert allowed == {"GET", "HEAD", "OPTIONS"}
    # Elsewhere OPTIONS is not answered, and a 405 does not offer it.
    refused = await client.post("/api/devices")
    assert refused.status == 405 and methods(refused.headers["Allow"]) == {"GET", "HEAD"}
