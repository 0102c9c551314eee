"""Open data as a publisher serves it: rows keyed by stored zone, whole hours only, releases found
where they end, strict parameters, licence/publisher metadata, caching and content negotiation.

Each test answers a finding of the open-data officer's QA pass (quoted in its docstring), over the
real aiohttp app and the real SQLite store of the fed fleet (tests/web/conftest.py)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.opendata import INGEST_LAG_S, OpenDataMeta

from .support import ADMIN_TOKEN, NOW, Fleet, admin_headers

H = 3600


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def csv_rows(client: TestClient, query: str = "") -> list[dict[str, str]]:
    resp = await client.get("/opendata/readings.csv" + query)
    assert resp.status == 200, await resp.text()
    return rows_of(await resp.text())


def app_client(fleet: Fleet, *, clock: Callable[[], float] = lambda: float(NOW),
               open_data: OpenDataMeta | None = None) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=clock, open_data=open_data)
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


@pytest.fixture
async def late_client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """The app with its clock 20 min 34 s past NOW's hour (a default range not on the hour)."""
    async with app_client(fleet, clock=lambda: float(NOW + 1234)) as c:
        yield c


@pytest.fixture
async def done_client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """The app at NOW + the ingest lag (12:05): the fixture's 11:00 hour is complete, 12:00 not begun."""
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as c:
        yield c


@pytest.fixture
async def next_hour_client(fleet: Fleet) -> AsyncIterator[TestClient]:
    """The app at 13:05: the 12:00 hour (NOW's) is complete, with its ingest lag."""
    async with app_client(fleet, clock=lambda: float(NOW + H + INGEST_LAG_S)) as c:
        yield c


async def bin_window(fleet: Fleet, device: str, w: int, bat: int) -> None:
    """A bin's 15-minute window with battery ``bat`` (a level; fill leaves only every 6 h, policy)."""
    await fleet.report(device, {"t": "win", "k": "bin", "w": w, "l": 900,
                                "m": {"temp": 12, "tilt": 0, "bat": bat}})


async def test_a_moved_device_keeps_each_reports_stored_zone_in_the_unfiltered_csv(
        client: TestClient, next_hour_client: TestClient, fleet: Fleet) -> None:
    """QA: after a move mid-hour the unfiltered CSV gave ONE row for the hour with all 4 values under
    the new zone, while zone=centre gave 1 and zone=-2-3 gave 3."""
    await bin_window(fleet, "bin-01", NOW, 10)
    resp = await client.post("/api/admin/devices/bin-01/move", json={"zone": "-2-3", "lat": "52.3705", "lon": "4.8960"},
                             headers=admin_headers())
    assert resp.status == 200, await resp.text()
    for i, bat in ((1, 20), (2, 30), (3, 40)):
        await bin_window(fleet, "bin-01", NOW + i * 900, bat)
    query = f"?from={NOW}&to={NOW + H}&field=bat"
    every = [r for r in await csv_rows(next_hour_client, query) if r["device"] == "bin-01"]
    centre = [r for r in await csv_rows(next_hour_client, query + "&zone=centre") if r["device"] == "bin-01"]
    moved = [r for r in await csv_rows(next_hour_client, query + "&zone=-2-3") if r["device"] == "bin-01"]
    assert [(r["values"], r["value"]) for r in centre] == [("1", "10.0")]
    assert [(r["zone"], r["values"], r["value"]) for r in moved] == [("'-2-3", "3", "30.0")]
    assert sorted(every, key=lambda r: r["zone"]) == sorted(centre + moved, key=lambda r: r["zone"])
    # The same split as the zone aggregates of the API.
    hourly = await (await client.get(f"/api/aggregates/hourly?from={NOW}&to={NOW + H}&field=bat")).json()
    counts = {a["zone"]: a["count"] for a in hourly["aggregates"]}
    assert counts["-2-3"] == 3 and counts["centre"] == 1 + 0  # bin-01's one centre window (sl-* report no bat)


async def test_a_row_is_never_a_cut_hour(done_client: TestClient, late_client: TestClient,
                                        next_hour_client: TestClient, fleet: Fleet) -> None:
    """QA: from=…:30 gave a row labelled with the whole hour but holding 2 of its 4 values, and the
    default export (from = to - 24 h to the second) always had such a first row."""
    whole = {(r["device"], r["field"]): r for r in await csv_rows(done_client, f"?from={NOW - H}&to={NOW}")}
    cut = {(r["device"], r["field"]): r for r in await csv_rows(done_client, f"?from={NOW - H + 1800}&to={NOW}")}
    assert cut == whole and whole[("bin-01", "bat")]["values"] == "4"
    # The hour in progress is not shown until it has ended: to is rounded down as well.
    await bin_window(fleet, "bin-01", NOW, 90)
    await bin_window(fleet, "bin-01", NOW + 900, 90)
    assert not [r for r in await csv_rows(done_client, f"?from={NOW}&to={NOW + 1234}") if r["hour"] >= "2026-11-21T12"]
    # Once it has ended (and its ingest lag passed) it is there, with the values that arrived.
    assert [r for r in await csv_rows(next_hour_client, f"?from={NOW}&to={NOW + H}&field=bat")
            if r["device"] == "bin-01"][0]["values"] == "2"
    # The default range at 12:20:34 is 11:00..12:00 of yesterday to today, whole hours only.
    default = await csv_rows(late_client)
    assert default == await csv_rows(late_client, f"?from={NOW - 86400}&to={NOW}")
    for r in default:
        hour_rows = [x for x in default if x["hour"] == r["hour"] and x["device"] == r["device"]
                     and x["field"] == r["field"]]
        assert len(hour_rows) == 1
        assert r["hour"].endswith(":00:00Z") and r["until"].endswith(":00:00Z")
    lux = [r for r in default if r["device"] == "sl-01" and r["field"] == "lux"]
    assert lux and {r["values"] for r in lux} == {"4"}  # every hour whole, the first one too


async def test_a_to_after_now_never_gives_the_hour_in_progress(fleet: Fleet) -> None:
    """QA H1: at 23:52, to=tomorrow gave a 23:00 row with 3 of its 4 windows, although the docs promise
    the hour in progress appears only once it has ended. A 'to' later than the default is taken as it."""
    for i in range(3):
        await bin_window(fleet, "bin-01", NOW + i * 900, 10 * (i + 1))
    async with app_client(fleet, clock=lambda: float(NOW + 52 * 60)) as c:
        future = await csv_rows(c, f"?from={NOW - H}&to={NOW + 12 * H}")
        within = await csv_rows(c, f"?from={NOW - H}&to={NOW + 3000}")
        default = await csv_rows(c, f"?from={NOW - H}")
    assert future and not [r for r in future if r["hour"] == "2026-11-21T12:00:00Z"]
    assert future == within == default
    # Once the hour has ended and its ingest lag passed, the same request gives the whole row.
    await bin_window(fleet, "bin-01", NOW + 2700, 40)
    async with app_client(fleet, clock=lambda: float(NOW + H + INGEST_LAG_S)) as c:
        later = await csv_rows(c, f"?from={NOW - H}&to={NOW + 12 * H}&field=bat")
    assert [(r["hour"], r["values"], r["value"]) for r in later if r["device"] == "bin-01"] == [
        ("2026-11-21T11:00:00Z", "4", "80.0"), ("2026-11-21T12:00:00Z", "4", "25.0")]


async def test_an_alarms_value_is_not_one_more_sample_of_the_hourly_mean(done_client: TestClient) -> None:
    """QA M1: a 60-s fire-alarm temperature was averaged with the hour's four 15-minute windows (5
    values) in the CSV and /api/aggregates/hourly. The fixture's bin-02 sends 13 °C every window and
    a fire alarm at 11:40 with 71 °C: the 11:00 mean is 13 of 4 values; the alarm stays in /api/readings."""
    rows = await csv_rows(done_client, f"?from={NOW - H}&to={NOW}&field=temp&zone=north")
    assert [(r["device"], r["hour"], r["values"], r["value"]) for r in rows] == [
        ("bin-02", "2026-11-21T11:00:00Z", "4", "13.0")]
    query = f"?from={NOW - H}&to={NOW}&field=temp"
    hourly = await (await done_client.get("/api/aggregates/hourly" + query + "&zone=north")).json()
    assert [(a["count"], a["mean"], a["max"]) for a in hourly["aggregates"]] == [(4, 13.0, 13)]
    readings = await (await done_client.get("/api/readings" + query + "&device=bin-02")).json()
    assert sorted(r["value"] for r in readings["readings"]) == [13, 13, 13, 13, 71]


async def test_a_revoked_devices_rows_stay_in_the_csv(done_client: TestClient, fleet: Fleet) -> None:
    """QA M2: revoking a device removed its whole history from the CSV, so published zone totals
    changed after the fact; `provision --force --id NEW --revoke-old` erased the old id's history.
    What the store holds of a revoked device was received before its revocation (its frames are
    refused from then on): it stays, and the export is unchanged (same ETag, 304)."""
    query = f"?from={NOW - 6 * H}&to={NOW}"
    before = await done_client.get("/opendata/readings.csv" + query)
    rows = rows_of(await before.text())
    assert [r for r in rows if r["device"] == "sl-02"]
    # The board is provisioned again under a new id (`provision --force --id sl-12 --revoke-old`): the old
    # id is revoked.
    resp = await done_client.post("/api/admin/devices/sl-02/revoke", headers=admin_headers())
    assert resp.status == 200, await resp.text()
    after = await done_client.get("/opendata/readings.csv" + query)
    assert rows_of(await after.text()) == rows
    assert after.headers["ETag"] == before.headers["ETag"]
    again = await done_client.get("/opendata/readings.csv" + query, headers={"If-None-Match": before.headers["ETag"]})
    assert again.status == 304
    # Its frames are refused from now on: nothing is added to its rows.
    fleet.feed("sl-02", {"t": "win", "k": "streetlight", "w": NOW - 900, "l": 900, "m": {"lux": 1, "lvl": 1, "lamp": 0}})
    await fleet.settle(stored=fleet.queries.count_reports(), rejected=1)
    assert rows_of(await (await done_client.get("/opendata/readings.csv" + query)).text()) == rows


async def test_the_csv_file_is_named_after_the_range_it_holds(done_client: TestClient) -> None:
    """QA LOW8: every export was downloaded as civicedge-readings.csv. The name says the range the
    export holds (a 'to' later than the default one is the default one), in UTC hours; no BOM."""
    resp = await done_client.get(f"/opendata/readings.csv?from={NOW - 24 * H}&to={NOW}")
    assert resp.headers["Content-Disposition"] == (
        'inline; filename="civicedge-readings-2026-11-20T12-2026-11-21T12.csv"')
    assert not (await resp.read()).startswith(b"\xef\xbb\xbf")
    resp = await done_client.get(f"/opendata/readings.csv?from={NOW - 2 * H + 1800}&to={NOW + 7 * H}")
    assert resp.headers["Content-Disposition"] == (
        'inline; filename="civicedge-readings-2026-11-21T10-2026-11-21T12.csv"')
    default = await done_client.head("/opendata/readings.csv")
    assert default.headers["Content-Disposition"] == resp.headers["Content-Disposition"].replace("21T10", "20T12")


async def test_withheld_counts_are_rows_only_when_asked_for(done_client: TestClient, fleet: Fleet) -> None:
    """QA M3: a consumer could not tell a withheld count (noise drawn, the noisy count below k: the
    report's e names the field, its m does not) from no data. withheld=include gives such a release a
    row with an empty value and a trailing status column; the default export keeps its ten columns."""
    night = NOW - 12 * H  # 00:00-06:00: sl-01's pass count withheld, sl-02's released
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": night, "l": 6 * H, "m": {}, "e": {"mot": 500}})
    await fleet.report("sl-02", {"t": "win", "k": "streetlight", "w": night, "l": 6 * H, "m": {"mot": 6},
                                 "e": {"mot": 500}})
    query = f"?from={NOW - 7 * H}&to={NOW - 6 * H}&field=mot"
    plain = await done_client.get("/opendata/readings.csv" + query)
    text = await plain.text()
    assert text.startswith("hour,device,kind,zone,field,unit,aggregate,value,values,until\r\n")
    assert [(r["device"], r["value"]) for r in rows_of(text)] == [("sl-02", "6")]
    full = await done_client.get("/opendata/readings.csv" + query + "&withheld=include")
    text = await full.text()
    assert text.startswith("hour,device,kind,zone,field,unit,aggregate,value,values,until,status\r\n")
    assert [(r["device"], r["hour"], r["until"], r["value"], r["values"], r["status"]) for r in rows_of(text)] == [
        ("sl-01", "2026-11-21T00:00:00Z", "2026-11-21T06:00:00Z", "", "0", "withheld"),
        ("sl-02", "2026-11-21T00:00:00Z", "2026-11-21T06:00:00Z", "6", "1", "released")]
    assert full.headers["ETag"] != plain.headers["ETag"]
    resp = await done_client.get("/opendata/readings.csv" + query + "&withheld=yes")
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "withheld"


async def test_releases_are_found_where_they_end(done_client: TestClient, late_client: TestClient) -> None:
    """QA: the daily lid count (released at 00:00, filed under the day's first hour) never appeared
    in the default CSV, and the 6-hourly mot was back-dated: polling "the last hour" missed both."""
    index = await (await done_client.get("/opendata")).json()
    # (At 12:20:34 the default range ends at 12:00; at 12:00:00 itself it ends at 11:00, see INGEST_LAG_S.)
    default = await csv_rows(late_client, index["formats"]["csv"].split("/opendata/readings.csv", 1)[1])
    lid = [r for r in default if r["field"] == "lid"]
    assert [(r["device"], r["hour"], r["until"], r["value"]) for r in lid] == [
        ("bin-01", "2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", "23")]
    last_hour = await csv_rows(done_client, f"?from={NOW - H}&to={NOW}&field=mot")
    assert {(r["device"], r["hour"], r["until"]) for r in last_hour} == {
        ("sl-01", "2026-11-21T06:00:00Z", "2026-11-21T12:00:00Z"),
        ("sl-02", "2026-11-21T06:00:00Z", "2026-11-21T12:00:00Z")}
    # A poller reading hour after hour gets every row of the day exactly once.
    polled = [r for h in range(24)
              for r in await csv_rows(done_client, f"?from={NOW - (24 - h) * H}&to={NOW - (23 - h) * H}")]
    key = lambda r: (r["hour"], r["device"], r["zone"], r["field"])  # noqa: E731
    assert sorted(polled, key=key) == sorted(default, key=key) and len(polled) == len({key(r) for r in polled})


@pytest.mark.parametrize("value", ["fill,", ",fill", "fill,,temp", "fill, ,temp", ","])
async def test_an_empty_field_item_is_refused_as_an_empty_type_is(client: TestClient, value: str) -> None:
    """QA: field=fill, and field=,fill were accepted (empty item dropped); type=Streetlight, is 400."""
    resp = await client.get("/opendata/readings.csv", params={"field": value})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["code"], error["param"]) == ("bad_parameter", "field")
    assert (await client.get("/opendata/readings.csv", params={"field": "fill, temp"})).status == 200


async def test_http_consistency(client: TestClient) -> None:
    """QA: OPTIONS on a missing open-data path was 204; a time with a leading space was accepted; a
    default from before 2000 was 200 (now clamped to 2000, docs/api.md); the range message said "unix seconds expected" for ISO input;
    Allow was "GET, HEAD, OPTIONS" on open data but "GET,HEAD" elsewhere."""
    resp = await client.options("/opendata/nothing", headers={"Origin": "https://maps.example",
                                                              "Access-Control-Request-Method": "GET"})
    assert resp.status == 404 and (await client.get("/opendata/nothing")).status == 404
    for query in (f"from=+{NOW - H}", f"from=%20{NOW - H}", f"to={NOW}%20", "to=%202026-11-21T12:00:00Z"):
        resp = await client.get("/opendata/readings.csv?" + query)
        assert resp.status == 400, query
        assert (await resp.json())["error"]["param"] in ("from", "to")
    # The default 'from' before 2000 is clamped to 2000-01-01T00:00Z since (as on /api): an empty export.
    resp = await client.get("/opendata/readings.csv?to=2000-01-01T00:00:00Z")
    assert resp.status == 200 and (await resp.text()).count("\n") == 1
    assert (await client.get("/opendata/readings.csv?from=1999-12-31T00:00:00Z&to=2000-01-01T00:00:00Z")).status == 400
    resp = await client.get("/opendata/readings.csv?from=1999-12-31T00:00:00Z")
    message = (await resp.json())["error"]["message"]
    assert resp.status == 400 and "unix seconds expected" not in message and "ISO 8601" in message
    allow = (await client.post("/api/devices")).headers["Allow"]
    assert allow == "GET, HEAD"
    assert (await client.post("/opendata")).headers["Allow"] == "GET, HEAD, OPTIONS"


async def test_licence_and_publisher_are_published_not_invented(client: TestClient, fleet: Fleet) -> None:
    """QA: no licence or publisher anywhere in the open data."""
    index = await (await client.get("/opendata")).json()
    assert (index["license"], index["publisher"], index["licenseUrl"]) == ("not set", "not set", None)
    geo = await (await client.get("/opendata/devices.geojson")).json(content_type=None)
    assert geo["license"] == "not set" and "Link" not in (await client.get("/opendata/readings.csv")).headers
    meta = OpenDataMeta(licence="CC-BY-4.0", publisher="City of Example, Open Data Office")
    async with app_client(fleet, open_data=meta) as c:
        index = await (await c.get("/opendata")).json()
        assert index["license"] == "CC-BY-4.0" and index["publisher"] == "City of Example, Open Data Office"
        assert index["licenseUrl"] == "https://spdx.org/licenses/CC-BY-4.0.html"
        geo = await (await c.get("/opendata/devices.geojson")).json(content_type=None)
        assert geo["type"] == "FeatureCollection" and geo["license"] == "CC-BY-4.0"
        assert geo["publisher"] == "City of Example, Open Data Office"
        for path in ("/opendata/readings.csv", "/opendata/ngsi-ld/v1/entities", "/opendata/devices.geojson"):
            resp = await c.get(path)
            link = resp.headers["Link"]
            assert link == '<https://spdx.org/licenses/CC-BY-4.0.html>; rel="license"', path
            # QA LOW4: the CSV's 304 had no Link (the JSON answers' 304s have it, openapi.json lists it).
            again = await c.get(path, headers={"If-None-Match": resp.headers["ETag"]})
            assert again.status == 304 and again.headers["Link"] == link, path


async def test_open_data_answers_carry_validators_and_conditional_requests_get_304(fleet: Fleet) -> None:
    """QA: no Cache-Control, Last-Modified or ETag; no 304."""
    clock = [float(NOW + H + INGEST_LAG_S)]  # 13:05: the 12:00 hour is complete
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        await _validators_and_304(c, fleet, clock)


async def _validators_and_304(next_hour_client: TestClient, fleet: Fleet, clock: list[float]) -> None:
    paths = ("/opendata", "/opendata/ngsi-ld/v1/entities", "/opendata/devices.geojson",
             f"/opendata/readings.csv?from={NOW - H}&to={NOW + H}",
             "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01")
    tags: dict[str, str] = {}
    for path in paths:
        resp = await next_hour_client.get(path)
        assert resp.status == 200 and resp.headers["Cache-Control"] == "public, max-age=60", path
        tags[path] = resp.headers["ETag"]
        if path != "/opendata":
            # the newest period end the body shows (CSV: the hh:05 mark that published the newest report,
            # received at 11:59:55)
            modified = "Sat, 21 Nov 2026 12:05:00 GMT" if "csv" in path else "Sat, 21 Nov 2026 12:00:00 GMT"
            assert resp.headers["Last-Modified"] == modified, path
        again = await next_hour_client.get(path, headers={"If-None-Match": tags[path]})
        assert again.status == 304 and again.headers["ETag"] == tags[path] and not await again.read(), path
        other = await next_hour_client.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status == 200
    # a new report: what it changes is no longer 304 (temperature is in the entities and the GeoJSON) once
    # it is published: at the next mark of each (at 14:05 the entities show what came before 14:00, the CSV
    # what came before 14:05)
    await fleet.report("bin-01", {"t": "win", "k": "bin", "w": NOW, "l": 900, "m": {"temp": 30, "tilt": 0, "bat": 90}})
    clock[0] += H
    for path in paths[1:4]:
        resp = await next_hour_client.get(path, headers={"If-None-Match": tags[path]})
        assert resp.status == 200 and resp.headers["ETag"] != tags[path], path


@pytest.mark.parametrize(("path", "accept", "status", "media"), [
    ("/opendata/ngsi-ld/v1/entities", "text/csv", 406, None),
    ("/opendata/ngsi-ld/v1/entities", "application/xml, text/html;q=0.9", 406, None),
    ("/opendata/ngsi-ld/v1/entities", "application/ld+json;q=0, */*", 200, "application/json"),
    ("/opendata/ngsi-ld/v1/entities", "*/*", 200, "application/ld+json"),
    ("/opendata/ngsi-ld/v1/entities", "application/json", 200, "application/json"),
    ("/opendata/ngsi-ld/v1/entities", "application/ld+json", 200, "application/ld+json"),
    ("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01", "text/csv", 406, None),
    ("/opendata/devices.geojson", "application/json", 200, "application/json"),
    ("/opendata/devices.geojson", "application/geo+json", 200, "application/geo+json"),
    ("/opendata/devices.geojson", "text/csv", 406, None),
    ("/opendata/readings.csv", "text/*", 200, "text/csv"),
    ("/opendata/readings.csv", "application/json", 406, None),
    # A browser gets the page for people (it got the JSON); a client ranking JSON as high, the JSON.
    ("/opendata", "text/html,application/xhtml+xml,*/*;q=0.8", 200, "text/html"),
    ("/opendata", "application/json, text/html", 200, "application/json"),
    ("/opendata", "text/csv", 406, None),
    # q=0 is "not acceptable", a higher q wins, equal q keeps the server's order (RFC 9110 12.4.2)
    ("/opendata/readings.csv", "text/csv;q=0, application/json", 406, None),
    ("/opendata/readings.csv", "text/csv; Q=0.0, text/*", 406, None),
    ("/opendata", "application/json;q=0", 406, None),
    ("/opendata", "application/json;q=0, text/html;q=0.1", 200, "text/html"),
    ("/opendata/ngsi-ld/v1/entities", "application/json;q=0.5, application/ld+json;q=0.4", 200, "application/json"),
    ("/opendata/ngsi-ld/v1/entities", "application/json, application/ld+json", 200, "application/ld+json"),
    ("/opendata/devices.geojson", "application/geo+json;q=0, application/json;q=0.001", 200, "application/json"),
    # a comma inside a quoted parameter value separates nothing (it made "b\";q=0" a range of its own)
    ("/opendata/ngsi-ld/v1/entities", 'application/json;v="a,b";q=0, application/ld+json;q=0', 406, None),
    ("/opendata/readings.csv", 'text/csv;v="x;q=1";q=0', 406, None),
])
async def test_accept_is_honoured(client: TestClient, path: str, accept: str, status: int, media: str | None) -> None:
    """QA: NGSI-LD ignored Accept (Accept: text/csv still got 200 application/ld+json)."""
    resp = await client.get(path, headers={"Accept": accept})
    assert resp.status == status, await resp.text()
    if media is None:
        assert (await resp.json())["error"]["code"] == "not_acceptable"
    else:
        assert resp.content_type == media


def _doc_urls() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "open-data.md").read_text(encoding="utf-8")
    table = text.split("\n## ", 1)[0]
    return re.findall(r"e\.g\. `(/opendata[^`]*)`", table)


def test_the_docs_literal_examples_name_the_demo_fleet() -> None:
    """QA: the "literal" entity example urn:ngsi-ld:Streetlight:sl-01 answered 404 on the demo (its
    devices are sl-001...), and the CSV example from=2026-01-01 gave only a header. The examples are
    checked against the demo's naming here and answered over a fleet in the next test."""
    from hil.demo import runner

    source = Path(runner.__file__).read_text(encoding="utf-8")
    urls = _doc_urls()
    assert len(urls) == 4
    entity = next(u for u in urls if "/entities/" in u)
    device = entity.rsplit(":", 1)[1]
    assert device == "sl-001" and 'f"sl-{i + 1:03d}"' in source  # the demo's first streetlight
    for url in urls:
        assert "from=" not in url and "to=" not in url  # a fixed date would age out of the demo's data
        assert "zone=" not in url or "zone=centre" in url and '"centre"' in source


async def test_the_docs_examples_answer(fleet: Fleet) -> None:
    """The examples of docs/open-data.md answer 200 with content over a fleet named like the demo's."""
    fleet.registry.add("sl-001", kind="streetlight", zone="centre", lat="52.3702", lon="4.8952")
    await fleet.report("sl-001", {"t": "win", "k": "streetlight", "w": NOW - 900, "l": 900,
                                  "m": {"lux": 0, "lvl": 40, "lamp": 0}})
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as c:  # 12:05: the CSV's mark
        for url in _doc_urls():
            resp = await c.get(url)
            assert resp.status == 200, (url, await resp.text())
            body = await resp.text()
            if url.startswith("/opendata/readings.csv"):
                assert len(rows_of(body)) > 0, url


def test_the_opendata_config_section_sets_licence_and_publisher(tmp_path: Path) -> None:
    """``[opendata]`` of the gateway config: licence and publisher, "not set" by default."""
    from gateway.config.loader import parse_config
    from gateway.errors import ConfigError

    def load(**sections: Any) -> Any:
        return parse_config({"gateway": {"id": "gw", "data_dir": str(tmp_path / "data")}, **sections}, source=None)

    plain = load()
    assert (plain.open_data_licence, plain.open_data_publisher) == ("not set", "not set")
    cfg = load(opendata={"licence": "CC-BY-4.0", "publisher": "City of Example"})
    assert (cfg.open_data_licence, cfg.open_data_publisher) == ("CC-BY-4.0", "City of Example")
    with pytest.raises(ConfigError):
        load(opendata={"license": "CC-BY-4.0"})  # a misspelt key is refused, not ignored
