"""The open-data catalogue (/opendata and /opendata/catalog.jsonld) as a portal harvests it: what
CKAN/DCAT expect of a dataset (description, publisher and contact, keywords, coverage in space and
time, update frequency, modification), absolute URLs, and a data dictionary of the CSV's fields.

Each test answers a finding of the open-data officer's QA pass (quoted in its docstring), over the
real aiohttp app and the real SQLite store of the fed fleet (tests/web/conftest.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.export import CSV_STATUS_COLUMNS
from gateway.web.opendata import OpenDataMeta

from .support import ADMIN_TOKEN, DEVICES, NOW, Fleet, admin_headers
from .test_web_opendata_temporal import old_report

CITY = OpenDataMeta(licence="CC-BY-4.0", publisher="City of Example, Open Data Office",
                    title="Example street sensors", description="Streetlights and bins of Example.",
                    contact="opendata@city.example", keywords=("lighting", "waste"),
                    base_url="https://data.city.example/sensors")
PUBLISHED = ("sl-01", "sl-02", "bin-01", "bin-02")  # sl-03 never reported, bin-03 is revoked


def app_client(fleet: Fleet, meta: OpenDataMeta | None = None, *, now: int = NOW) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(now), open_data=meta)
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


async def get_json(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json(content_type=None)


async def test_the_index_describes_the_dataset_as_the_city_configured_it(fleet: Fleet) -> None:
    """QA: title hard-coded; no description, contact point, keywords, spatial or temporal coverage,
    update frequency or modified date; formats were relative URLs."""
    async with app_client(fleet, CITY) as client:
        index = await get_json(client, "/opendata")
    assert index["title"] == "Example street sensors" and index["description"] == "Streetlights and bins of Example."
    assert index["publisher"] == "City of Example, Open Data Office"
    assert index["contactPoint"] == {"name": "City of Example, Open Data Office", "email": "opendata@city.example"}
    assert index["keywords"] == ["lighting", "waste"]
    # Absolute URLs on the public address, path prefix included.
    assert index["formats"]["csv"] == "https://data.city.example/sensors/opendata/readings.csv"
    assert index["catalog"] == "https://data.city.example/sensors/opendata/catalog.jsonld"
    assert index["transparency"] == "https://data.city.example/sensors/transparency"
    # The bounding box of the published devices, [west, south, east, north].
    where = {d[0]: (float(d[4]), float(d[3])) for d in DEVICES if d[0] in PUBLISHED}
    lons, lats = [p[0] for p in where.values()], [p[1] for p in where.values()]
    assert index["spatial"] == {"bbox": [min(lons), min(lats), max(lons), max(lats)]}
    # From the day of the oldest published report (the fixture's daily lid count of yesterday), younger
    # than the longest retention (test_web_opendata_temporal.py has the other cases).
    assert index["temporal"]["start"] == _iso(NOW - NOW % 86400 - 86400) and index["temporal"]["end"] is None
    assert index["accrualPeriodicity"] == "http://publications.europa.eu/resource/authority/frequency/15MIN"
    assert "15 min" in index["updateFrequency"]
    assert index["modified"] == "2026-11-21T12:00:00Z"  # the newest period end the published devices show


async def test_without_configuration_the_catalogue_has_sensible_defaults(client: TestClient) -> None:
    index = await get_json(client, "/opendata")
    policy = load_policy()
    assert index["title"] == "City sensor data: streetlight and waste bin devices"  # the policy's kinds
    assert index["keywords"][:2] == ["streetlight", "waste bin"] and index["contactPoint"] is None
    assert policy["statement"] in index["description"]
    assert index["formats"]["geojson"] == f"http://127.0.0.1:{client.port}/opendata/devices.geojson"


async def test_a_retention_shortened_by_the_city_moves_the_temporal_coverage(fleet: Fleet, client: TestClient) -> None:
    # Reports of 1000 and 733 days ago: within the longest retention (wh, 1825 days) the start is the
    # oldest one's day. With wh shortened to 30 days the longest is 730 (lamp, fill): the 733-day-old
    # report's values are removed, the report kept, and the start is the retention's day.
    day = 86400
    fleet.store.insert_batch([old_report(NOW - 1000 * day, seq=80_001), old_report(NOW - 733 * day, seq=80_002)])
    before = (await get_json(client, "/opendata"))["temporal"]["start"]
    assert before == _iso(NOW - NOW % day - 1000 * day)
    resp = await client.put("/api/admin/retention", headers=admin_headers(),
                            json={"kind": "streetlight", "field": "wh", "days": 30})
    assert resp.status == 200, await resp.text()
    index = await get_json(client, "/opendata")
    assert index["temporal"]["start"] == _iso(NOW - NOW % day - 730 * day)
    (wh,) = [f for f in index["dataDictionary"]["fields"] if (f["kind"], f["field"]) == ("streetlight", "wh")]
    assert wh["retentionDays"] == 30


async def test_the_data_dictionary_explains_every_csv_field(client: TestClient) -> None:
    """QA: no data dictionary for the CSV fields (lux, lamp, tilt, bat, lid, mot, fill, lvl, temp...:
    meaning, unit, period, noise, retention; e.g. that lamp/tilt "state" with mean is a share)."""
    dictionary = (await get_json(client, "/opendata"))["dataDictionary"]
    assert list(dictionary["csvColumns"]) == list(CSV_STATUS_COLUMNS)
    policy = load_policy()
    by_key = {(f["kind"], f["field"]): f for f in dictionary["fields"]}
    assert set(by_key) == {(k, f) for k, spec in policy["kinds"].items() for f in spec["fields"]}
    for (kind, name), entry in by_key.items():
        spec = policy["kinds"][kind]["fields"][name]
        assert (entry["label"], entry["unit"], entry["retentionDays"]) == (spec["label"], spec["unit"],
                                                                            spec["retention_days"])
        assert entry["value"] and entry["purpose"] == spec["purpose"]
        assert entry["periodSeconds"] == spec.get("release_every_s", {"hour": 3600, "day": 86400}.get(
            spec["report"], policy["kinds"][kind]["window_s"]))
    lamp, tilt = by_key[("streetlight", "lamp")], by_key[("bin", "tilt")]
    for state in (lamp, tilt):
        assert state["aggregate"] == "mean" and "the share of the row's released values" in state["value"]
    mot = by_key[("streetlight", "mot")]
    assert mot["aggregate"] == "sum" and mot["period"] == "6 h" and mot["aboutPeople"] is True
    assert mot["noise"] == {"mechanism": "discrete Laplace, added on the device", "epsilonPerRelease": "0.5",
                            "epsilonPerDayMax": "2", "k": 5}
    assert by_key[("bin", "lid")]["noise"]["epsilonPerDayMax"] == "0.5"  # one release a day
    fill = by_key[("bin", "fill")]
    assert fill["noise"] is None and fill["quantum"] == 10 and fill["aggregate"] == "last"
    assert "the level at the end of the row's period (until)" in fill["value"]
    # Review L5: an older store's fill rows (15-minute windows, before 2026-12-05) say mean.
    assert "says aggregate mean" in fill["value"] and "before 2026-12-05" in fill["value"]
    codes = {name: by_key[key]["unitCode"] for name, key in (("lux", ("streetlight", "lux")),
                                                             ("bat", ("bin", "bat")), ("wh", ("streetlight", "wh")),
                                                             ("temp", ("bin", "temp")), ("lamp", ("streetlight", "lamp")))}
    assert codes == {"lux": "LUX", "bat": "P1", "wh": "WHR", "temp": "CEL", "lamp": None}


async def test_the_dictionary_says_what_the_csv_does(fleet: Fleet) -> None:
    """The aggregate and unit the dictionary gives are the ones the CSV rows carry."""
    async with app_client(fleet, now=NOW + 3600) as client:  # the hour ending at NOW is complete
        dictionary = (await get_json(client, "/opendata"))["dataDictionary"]
        resp = await client.get(f"/opendata/readings.csv?from={NOW - 86400}&to={NOW}")
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    by_key = {(f["kind"], f["field"]): f for f in dictionary["fields"]}
    seen = {(r["kind"], r["field"]) for r in rows}
    assert len(seen) >= 9, sorted(seen)  # every field the fixture fed
    for r in rows:
        entry = by_key[(r["kind"], r["field"])]
        assert (r["aggregate"], r["unit"]) == (entry["aggregate"], entry["unit"]), r


async def test_the_catalogue_is_served_as_dcat_ap_json_ld(fleet: Fleet) -> None:
    """QA: a DCAT-AP form of the index for portals' harvesters."""
    async with app_client(fleet, CITY) as client:
        resp = await client.get("/opendata/catalog.jsonld")
        assert resp.status == 200 and resp.content_type == "application/ld+json"
        assert resp.headers["Link"] == '<https://spdx.org/licenses/CC-BY-4.0.html>; rel="license"'
        doc = await resp.json(content_type=None)
        index = await get_json(client, "/opendata")
    assert doc["@type"] == "dcat:Catalog" and doc["@id"] == index["catalog"]
    assert {"dcat", "dct", "foaf", "vcard", "xsd"} <= set(doc["@context"])
    # DCAT-AP's mandatory properties: catalogue title, description, publisher; dataset title and
    # description; distribution access URL.
    assert (doc["dct:title"], doc["dct:description"]) == (index["title"], index["description"])
    assert doc["dct:publisher"] == {"@type": "foaf:Agent", "foaf:name": "City of Example, Open Data Office"}
    (dataset,) = doc["dcat:dataset"]
    assert dataset["@type"] == "dcat:Dataset" and dataset["dct:title"] == index["title"]
    assert dataset["dcat:keyword"] == ["lighting", "waste"]
    assert dataset["dcat:contactPoint"]["vcard:hasEmail"] == {"@id": "mailto:opendata@city.example"}
    assert dataset["dct:accrualPeriodicity"] == {"@id": index["accrualPeriodicity"]}
    assert dataset["dct:modified"] == {"@value": index["modified"], "@type": "xsd:dateTime"}
    assert dataset["dct:temporal"]["dcat:startDate"]["@value"] == index["temporal"]["start"]
    w, s, e, n = index["spatial"]["bbox"]
    assert dataset["dct:spatial"]["dcat:bbox"] == {"@value": f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))",
                                                   "@type": "gsp:wktLiteral"}
    urls = {d["dcat:accessURL"]["@id"]: d for d in dataset["dcat:distribution"]}
    assert set(urls) == set(index["formats"].values())
    for dist in urls.values():
        assert dist["dct:license"] == {"@id": "https://spdx.org/licenses/CC-BY-4.0.html"}
        assert dist["dcat:mediaType"]["@id"].startswith("https://www.iana.org/assignments/media-types/")
    csv_dist = urls[index["formats"]["csv"]]
    assert csv_dist["dcat:mediaType"]["@id"].endswith("/text/csv")
    assert csv_dist["dcat:downloadURL"] == {"@id": index["formats"]["csv"]}


def _iso(ts: int) -> str:
    from gateway.web.ngsi import iso_utc

    return iso_utc(ts)


async def test_the_gateway_publishes_the_catalogue_of_its_config(tmp_path: Path) -> None:
    """[opendata] of gateway.toml reaches the served catalogue (the gateway service mounts the app)."""
    import os

    import aiohttp

    from gateway.service import Gateway

    from .support import pty_gateway_config

    master, slave = os.openpty()
    try:
        config = pty_gateway_config(tmp_path, "gw-cat", slave, opendata={
            "licence": "odbl-1.0", "title": "Example sensors", "contact": "https://city.example/contact",
            "keywords": ["lighting"], "base_url": "https://data.city.example"})
        gw = Gateway(config)
        await gw.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{gw.http_port}/opendata") as r:
                    index = await r.json()
        finally:
            await gw.stop()
    finally:
        os.close(master)
        os.close(slave)
    assert (index["title"], index["license"], index["keywords"]) == ("Example sensors", "ODbL-1.0", ["lighting"])
    assert index["contactPoint"] == {"name": "Example sensors", "url": "https://city.example/contact"}
    assert index["formats"]["csv"] == "https://data.city.example/opendata/readings.csv"


async def test_a_licence_ref_is_published_without_a_dead_spdx_link(fleet: Fleet) -> None:
    """Review M3: LicenseRef-city-1.0 was linked as https://spdx.org/licenses/LicenseRef-city-1.0.html,
    a page that does not exist; its link is [opendata] licence_url, and none without it."""
    paths = ("/opendata", "/opendata/catalog.jsonld", "/opendata/devices.geojson",
             f"/opendata/readings.csv?from={NOW - 3600}&to={NOW}")
    async with app_client(fleet, OpenDataMeta(licence="LicenseRef-city-1.0")) as client:
        for path in paths:
            resp = await client.get(path)
            assert resp.status == 200 and "Link" not in resp.headers, path
        index = await get_json(client, "/opendata")
        doc = await get_json(client, "/opendata/catalog.jsonld")
    assert (index["license"], index["licenseUrl"]) == ("LicenseRef-city-1.0", None)
    assert "dct:license" not in doc and "spdx.org" not in str(doc)
    linked = OpenDataMeta(licence="LicenseRef-city-1.0", licence_text_url="https://city.example/licence.html")
    async with app_client(fleet, linked) as client:
        for path in paths:
            resp = await client.get(path)
            assert resp.headers["Link"] == '<https://city.example/licence.html>; rel="license"', path
        index = await get_json(client, "/opendata")
    assert index["licenseUrl"] == "https://city.example/licence.html"


async def test_devices_without_a_location_do_not_stretch_the_bbox(fleet: Fleet) -> None:
    """Review L9: without a registry every device is listed at 0,0, which pulled the catalogue's
    bbox to 0,0 (a box from the Gulf of Guinea to the city)."""
    app = create_app(store=fleet.queries, registry=None, policy=load_policy(), metrics_registry=fleet.metrics.registry,
                     admin_token=None, retention=fleet.retention, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        index = await get_json(client, "/opendata")
        doc = await get_json(client, "/opendata/catalog.jsonld")
    assert index["spatial"] is None and "dct:spatial" not in doc["dcat:dataset"][0]
    from gateway.web.catalogue import Catalogue
    from gateway.web.views import DeviceView

    devices = [DeviceView(id="a", kind="bin", zone="z", lat=52.37, lon=4.89),
               DeviceView(id="b", kind="bin", zone="z", lat=0.0, lon=0.0),
               DeviceView(id="c", kind="bin", zone="z", lat=52.38, lon=4.90)]
    cat = Catalogue(meta=OpenDataMeta(), base="", policy={}, transparency={"kinds": []}, devices=devices,
                    modified=None, now=NOW)
    assert cat.bbox() == [4.89, 52.37, 4.90, 52.38]
