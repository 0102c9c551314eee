"""A kind the privacy policy gains is published like the others, with no code change (QA HIGH: a third
kind, ``air``, was silently left out of every open-data format while the catalogue advertised its
fields).

The gateway runs with a copy of firmware/policy.json that has an ``air`` kind (``pm25`` in µg/m³ and
a noisy people count ``ppl``), put where the gateway reads its policy file (``project_root``), so the
registry, the ingest's policy gate and the web app all see it; devices of all three kinds are fed
through the real ingest service into a real store."""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

import gateway.resources as resources
from gateway.metrics import GatewayMetrics
from gateway.pipeline.ingest import IngestService
from gateway.pipeline.verify import Verifier
from gateway.registry import Registry
from gateway.storage import ReportQueries, ReportStore
from gateway.web import ngsi
from gateway.web.app import create_app
from gateway.web.openapi import openapi_document
from gateway.web.retention import RetentionSettings
from gateway.web.views import DeviceView

from .support import ADMIN_TOKEN, NOW, RECEIVED_AT, Fleet

ENTITIES = "/opendata/ngsi-ld/v1/entities"
AIR = {
    "title": "Air quality sensor",
    "window_s": 900,
    "fields": {
        "pm25": {"label": "Fine particulate matter PM2.5 (window mean)", "unit": "µg/m³", "personal": False,
                 "valid_range": [0, 1000], "source": "optical particle counter", "release": "aggregate",
                 "report": "win", "quantum": 1, "retention_days": 365, "purpose": "air quality maps"},
        "ppl": {"label": "People passing (noisy count)", "unit": "count", "personal": True,
                "source": "PIR motion sensor", "release": "noisy_count", "report": "win", "release_every_s": 3600,
                "eps_per_release_milli": 500, "eps_per_day_milli": 2000, "k": 5, "refractory_s": 10,
                "retention_days": 365, "purpose": "relate exposure to footfall"},
    },
    "alarms": {},
    "config": [],
}
# The firmware's policy file as it is, read before any test swaps it.
BASE_POLICY: dict[str, Any] = json.loads(resources.policy_path().read_text(encoding="utf-8"))


def policy_with(**kinds: Any) -> dict[str, Any]:
    """The firmware's policy with ``kinds`` added."""
    policy = copy.deepcopy(BASE_POLICY)
    policy["kinds"].update(kinds)
    return policy


def use_policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, policy: dict[str, Any]) -> dict[str, Any]:
    """Make ``policy`` the gateway's policy file for one test (a checkout-like root in ``tmp_path``)."""
    root = tmp_path / "root"
    (root / "firmware").mkdir(parents=True)
    (root / "firmware" / "policy.json").write_text(json.dumps(policy, ensure_ascii=False), encoding="utf-8")
    shutil.copytree(resources.boards_dir(), root / "boards")
    resources.load_policy.cache_clear()
    monkeypatch.setattr(resources, "project_root", lambda: root)
    loaded = resources.load_policy()
    assert "air" in loaded["kinds"]
    return loaded


@pytest.fixture
async def air_fleet(tmp_path: Path) -> AsyncIterator[tuple[Fleet, dict[str, Any]]]:
    """A gateway whose policy has the ``air`` kind, with a streetlight, a bin and two air sensors that
    reported the hour before NOW (aq-02 only a withheld people count and one pm25 value)."""
    # Its own patch, undone before the shipped file is loaded again at the end (the monkeypatch fixture's
    # is undone after this fixture's teardown, too late for that).
    monkeypatch = pytest.MonkeyPatch()
    policy = use_policy(monkeypatch, tmp_path, policy_with(air=AIR))
    try:
        registry = Registry(tmp_path / "registry")
        for dev, kind, zone, lat, lon in (("sl-01", "streetlight", "centre", "52.3702", "4.8952"),
                                          ("bin-01", "bin", "centre", "52.3705", "4.8960"),
                                          ("aq-01", "air", "park", "52.3600", "4.8800"),
                                          ("aq-02", "air", "harbour", "52.3900", "4.9100")):
            registry.add(dev, kind=kind, zone=zone, lat=lat, lon=lon)
        store = ReportStore(tmp_path / "reports.sqlite", gateway_id="gw-test")
        metrics = GatewayMetrics("gw-test")
        ingest = IngestService(store=store, verifier=Verifier(registry, policy), metrics=metrics, batch_ms=5,
                               clock=lambda: float(RECEIVED_AT))
        await ingest.start()
        fl = Fleet(registry=registry, store=store, ingest=ingest, queries=ReportQueries(tmp_path / "reports.sqlite"),
                   metrics=metrics, retention=RetentionSettings(policy, path=tmp_path / "retention.json"))
        try:
            start = NOW - 3600
            for i in range(4):
                w = start + 900 * i
                fl.feed("sl-01", {"t": "win", "k": "streetlight", "w": w, "l": 900, "m": {"lux": 10, "lvl": 50, "lamp": 0}})
                fl.feed("bin-01", {"t": "win", "k": "bin", "w": w, "l": 900, "m": {"temp": 12, "tilt": 0, "bat": 80}})
                fl.feed("aq-01", {"t": "win", "k": "air", "w": w, "l": 900, "m": {"pm25": 10 + i}})
            fl.feed("aq-01", {"t": "win", "k": "air", "w": start, "l": 3600, "m": {"ppl": 17}, "e": {"ppl": 500}})
            fl.feed("aq-02", {"t": "win", "k": "air", "w": start, "l": 900, "m": {"pm25": 40}})
            fl.feed("aq-02", {"t": "win", "k": "air", "w": start, "l": 3600, "m": {}, "e": {"ppl": 500}})
            await fl.settle(stored=15)
            yield fl, policy
        finally:
            await ingest.stop()
            ingest.close()
            fl.queries.close()
            store.close()
            registry.close()
    finally:
        monkeypatch.undo()
        resources.load_policy.cache_clear()
        resources.load_policy()  # the shipped file is again what was loaded, for the tests after this one


def app_client(fl: Fleet, policy: dict[str, Any], now: int) -> TestClient:
    app = create_app(store=fl.queries, registry=fl.registry, policy=policy, metrics_registry=fl.metrics.registry,
                     admin_token=ADMIN_TOKEN, retention=fl.retention, clock=lambda: float(now))
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


async def get(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, (path, await resp.text())
    text = await resp.text()
    return text if resp.content_type == "text/csv" else json.loads(text)


async def test_a_new_kind_is_in_every_open_data_format(air_fleet: tuple[Fleet, dict[str, Any]]) -> None:
    fl, policy = air_fleet
    async with app_client(fl, policy, NOW) as client:
        # NGSI-LD, keyValues: its own type, the values as released, no Smart Data Model context.
        kv = {e["id"]: e for e in await get(client, ENTITIES + "?options=keyValues")}
        air = kv["urn:ngsi-ld:Air:aq-01"]
        assert air["type"] == "Air" and air["areaServed"] == "park"
        assert air["pm25"] == 13 and air["ppl"] == 17
        assert air["location"] == {"type": "Point", "coordinates": [4.88, 52.36]}
        assert air["observationDateTime"] == "2026-11-21T12:00:00Z"
        assert air["@context"] == [ngsi.NGSI_LD_CORE_CONTEXT]
        # A withheld count is no value: aq-02 has pm25 only.
        assert "ppl" not in kv["urn:ngsi-ld:Air:aq-02"] and kv["urn:ngsi-ld:Air:aq-02"]["pm25"] == 40
        assert {"urn:ngsi-ld:Streetlight:sl-01", "urn:ngsi-ld:WasteContainer:bin-01"} <= set(kv)

        # Normalized: µg/m³ has its UN/CEFACT code (GQ), a count C62; each its own observedAt.
        one = await get(client, ENTITIES + "/urn:ngsi-ld:Air:aq-01")
        assert one["pm25"] == {"type": "Property", "value": 13, "observedAt": "2026-11-21T12:00:00Z",
                               "unitCode": "GQ"}
        assert one["ppl"] == {"type": "Property", "value": 17, "observedAt": "2026-11-21T12:00:00Z",
                              "unitCode": "C62"}

        # The type filter knows it, alone or in a list.
        only = await get(client, ENTITIES + "?type=Air&options=keyValues")
        assert sorted(e["id"] for e in only) == ["urn:ngsi-ld:Air:aq-01", "urn:ngsi-ld:Air:aq-02"]
        both = await get(client, ENTITIES + "?type=Air,Streetlight")
        assert {e["type"] for e in both} == {"Air", "Streetlight"}

        # GeoJSON: the same keyValues attributes.
        geo = await get(client, "/opendata/devices.geojson")
        props = {f["id"]: f["properties"] for f in geo["features"]}
        assert props["aq-01"]["kind"] == "air" and props["aq-01"]["pm25"] == 13 and props["aq-01"]["ppl"] == 17
        assert props["aq-01"]["entityId"] == "urn:ngsi-ld:Air:aq-01"
        assert {"sl-01", "bin-01", "aq-02"} <= set(props)

    # The CSV once its hh:05 mark has passed: the air rows, pm25 averaged, ppl summed; its zones.
    async with app_client(fl, policy, NOW + 600) as client:
        rows = list(csv.DictReader(io.StringIO(await get(client, "/opendata/readings.csv"))))
        air_rows = {(r["device"], r["field"]): r for r in rows if r["kind"] == "air"}
        assert air_rows[("aq-01", "pm25")]["value"] == "11.5" and air_rows[("aq-01", "pm25")]["unit"] == "µg/m³"
        assert air_rows[("aq-01", "pm25")]["aggregate"] == "mean"
        assert air_rows[("aq-01", "ppl")]["value"] == "17" and air_rows[("aq-01", "ppl")]["aggregate"] == "sum"
        assert air_rows[("aq-02", "pm25")]["value"] == "40.0"
        assert {r["kind"] for r in rows} == {"streetlight", "bin", "air"}
        park = list(csv.DictReader(io.StringIO(await get(client, "/opendata/readings.csv?zone=park"))))
        assert park and {r["device"] for r in park} == {"aq-01"}
        withheld = list(csv.DictReader(io.StringIO(
            await get(client, "/opendata/readings.csv?zone=harbour&field=ppl&withheld=include"))))
        assert [(r["device"], r["status"]) for r in withheld] == [("aq-02", "withheld")]


async def test_the_catalogue_and_openapi_advertise_what_is_published(air_fleet: tuple[Fleet, dict[str, Any]]) -> None:
    fl, policy = air_fleet
    async with app_client(fl, policy, NOW) as client:
        index = await get(client, "/opendata")
        assert index["formats"]["ngsi-ld"].endswith("/opendata/ngsi-ld/v1/entities?type=Streetlight,WasteContainer,"
                                                     "Air&options=keyValues")
        # The advertised URL answers, with the air entities in it.
        url = index["formats"]["ngsi-ld"].split("://", 1)[1].split("/", 1)[1]
        assert "urn:ngsi-ld:Air:aq-01" in {e["id"] for e in await get(client, "/" + url)}
        assert index["parameters"]["ngsi-ld"]["type"].startswith("Streetlight, WasteContainer, Air, or")
        assert index["mapping"]["Air"] == {
            "pm25": "pm25 (the latest value as released, in µg/m³)",
            "ppl": "ppl (the latest noisy count as released, in count)",
            "observationDateTime": "end of the latest released period"}
        assert "Air" not in index["models"] and set(index["models"]) == {"Streetlight", "WasteContainer"}
        fields = {(f["kind"], f["field"]): f for f in index["dataDictionary"]["fields"]}
        assert fields[("air", "pm25")]["unitCode"] == "GQ" and fields[("air", "ppl")]["unitCode"] == "C62"
        assert index["dataDictionary"]["csvColumns"]["kind"] == "device kind (streetlight, bin, air)"
        dcat = await get(client, "/opendata/catalog.jsonld")
        titles = [d["dct:title"] for d in dcat["dcat:dataset"][0]["dcat:distribution"]]
        assert any("Air: no Smart Data Model" in t for t in titles)
        # The default title, description and keywords name every kind by its policy title (they named
        # streetlights and bins only, whatever the policy published).
        title = "City sensor data: streetlight, waste bin and air quality sensor devices"
        assert index["title"] == dcat["dct:title"] == dcat["dcat:dataset"][0]["dct:title"] == title
        assert index["description"].startswith("What the city's streetlight, waste bin and air quality sensor devices released")
        assert index["keywords"][:3] == ["streetlight", "waste bin", "air quality sensor"]

        served = await get(client, "/openapi.json")
    for doc in (openapi_document(policy), served):  # served: of the policy the app was built with
        get_devices = doc["paths"]["/api/devices"]["get"]["parameters"][0]
        assert get_devices["schema"]["enum"] == ["streetlight", "bin", "air"]
        assert doc["components"]["schemas"]["Device"]["properties"]["kind"]["enum"] == ["streetlight", "bin", "air"]
        type_param = doc["paths"][ENTITIES]["get"]["parameters"][0]
        assert type_param["schema"]["items"]["enum"] == ["Streetlight", "WasteContainer", "Air"]


async def test_the_existing_kinds_are_published_as_before(air_fleet: tuple[Fleet, dict[str, Any]]) -> None:
    """The streetlight's and the bin's entities are the same whether or not the policy has another kind."""
    fl, policy = air_fleet
    base = copy.deepcopy(BASE_POLICY)
    async with app_client(fl, policy, NOW) as with_air, app_client(fl, base, NOW) as without:
        for path in (ENTITIES + "?type=Streetlight,WasteContainer", ENTITIES + "?type=WasteContainer&options=keyValues",
                     ENTITIES + "/urn:ngsi-ld:Streetlight:sl-01"):
            a, b = await with_air.get(path), await without.get(path)
            assert a.status == b.status == 200
            assert await a.read() == await b.read(), path
        geo_a = {f["id"]: f for f in (await get(with_air, "/opendata/devices.geojson"))["features"]}
        geo_b = {f["id"]: f for f in (await get(without, "/opendata/devices.geojson"))["features"]}
        assert set(geo_b) == {"sl-01", "bin-01"} and all(geo_a[d] == geo_b[d] for d in geo_b)


def test_a_unit_without_a_code_is_published_as_text_or_with_the_policys_code() -> None:
    odd = copy.deepcopy(AIR)
    odd["fields"]["aqi"] = {**AIR["fields"]["pm25"], "unit": "AQI", "label": "Air quality index"}
    odd["fields"]["no2"] = {**AIR["fields"]["pm25"], "unit": "ppb", "unit_code": "61", "label": "NO2"}
    policy = policy_with(air=odd)
    dev = DeviceView(id="aq-09", kind="air", zone="park", lat=52.0, lon=4.0,
                          latest={"aqi": 42, "no2": 7}, latest_at={"aqi": NOW, "no2": NOW})
    e = ngsi.device_entity(dev, key_values=False, policy=policy)
    assert e["aqi"]["unitText"] == {"type": "Property", "value": "AQI"} and "unitCode" not in e["aqi"]
    assert e["no2"]["unitCode"] == "61" and "unitText" not in e["no2"]
    # The micro sign and the Greek mu are one unit.
    assert ngsi.unit_code("\u00b5g/m\u00b3") == ngsi.unit_code("\u03bcg/m\u00b3") == "GQ"


def test_what_cannot_be_published_is_one_warning_per_kind_and_not_advertised(
        caplog: pytest.LogCaptureFixture) -> None:
    clash = copy.deepcopy(AIR)
    clash["fields"]["location"] = clash["fields"].pop("ppl")  # NGSI-LD reserves the name
    policy = policy_with(waste_container=AIR, **{"air_quality": clash, "9lives": AIR})
    with caplog.at_level(logging.WARNING, logger="gateway.web.ngsi"):
        p = ngsi.warn_unpublished(policy)
        ngsi.warn_unpublished(policy)  # once per process, not per answer
    assert p.entity_types() == ["Streetlight", "WasteContainer", "AirQuality"]
    assert p.fields["air_quality"] == ("pm25",)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned
    assert any("'waste_container'" in m and "WasteContainer would be that of kind 'bin'" in m for m in warned)
    assert any("'9lives'" in m and "no NGSI-LD entity type" in m for m in warned)
    assert any("'air_quality'" in m and "location" in m for m in warned)
    assert "location" not in ngsi.describe_mapping(policy)["AirQuality"]
    doc = openapi_document(policy)
    assert doc["paths"][ENTITIES]["get"]["parameters"][0]["schema"]["items"]["enum"] == [
        "Streetlight", "WasteContainer", "AirQuality"]


def test_a_kind_open_data_cannot_carry_is_warned_when_the_app_is_built(
        air_fleet: tuple[Fleet, dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
    """At start, not only with the first open-data answer (which may come much later)."""
    fl, _ = air_fleet
    policy = policy_with(**{"7seas": AIR})  # a name no entity type can be made of; unique to this test
    with caplog.at_level(logging.WARNING, logger="gateway.web.ngsi"):
        create_app(store=fl.queries, registry=fl.registry, policy=policy, metrics_registry=fl.metrics.registry,
                   admin_token=ADMIN_TOKEN, retention=fl.retention, clock=lambda: float(NOW))
    assert any("'7seas'" in r.getMessage() and "no NGSI-LD entity type" in r.getMessage() for r in caplog.records)
