"""Read API against a real registry and SQLite store fed through the verification pipeline."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.web.opendata import INGEST_LAG_S

from .support import NOW, Fleet
from .test_web_opendata_publishing import app_client


async def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_devices_lists_registry_with_status_last_seen_and_link(client: TestClient) -> None:
    data = await get_json(client, "/api/devices")
    by_id = {d["id"]: d for d in data["devices"]}
    assert sorted(by_id) == ["bin-01", "bin-02", "bin-03", "sl-01", "sl-02", "sl-03"]
    assert by_id["sl-01"]["status"] == "ok"
    assert by_id["sl-02"]["status"] == "alarm"  # lamp_fail alarm, lamp = 1 in its latest window
    assert by_id["bin-02"]["status"] == "alarm"  # fire
    assert by_id["sl-03"]["status"] == "never" and by_id["sl-03"]["last_seen"] is None
    assert by_id["bin-03"]["status"] == "revoked"
    assert by_id["bin-01"]["link"].startswith("ble:")
    assert by_id["sl-01"]["link"].startswith("serial:")
    assert by_id["sl-01"]["last_seen_iso"] == "2026-11-21T11:59:55Z"  # the fixture receives at NOW - 5 s
    # Latest released values: window fields, the hourly energy and the daily lid count.
    assert set(by_id["sl-01"]["latest"]) == {"mot", "lux", "lvl", "lamp", "wh"}
    assert by_id["bin-01"]["latest"]["lid"] == 23
    # ... each with the end of its period: a value kept from an older report shows its age
    assert set(by_id["sl-01"]["latest_at"]) == set(by_id["sl-01"]["latest"])
    assert all(isinstance(t, int) and t % 900 == 0 for t in by_id["sl-01"]["latest_at"].values())
    assert by_id["bin-01"]["latest_at"]["lid"] % 86400 == 0
    assert (by_id["sl-01"]["lat"], by_id["sl-01"]["lon"]) == (52.3702, 4.8952)


async def test_a_device_names_the_firmware_its_last_report_named(fleet: Fleet, client: TestClient) -> None:
    """Upgrade drill: after reflashing boards city IT could not see which release a board runs (reports
    carry ``fw``, the API did not show it)."""
    before = await get_json(client, "/api/devices/sl-01")
    assert before["fw"] is None  # the fixture's reports name none
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": NOW - 900, "l": 900,
                                 "m": {"lux": 10, "lvl": 50, "lamp": 0}, "fw": "0.2.0"})
    assert (await get_json(client, "/api/devices/sl-01"))["fw"] == "0.2.0"
    listed = {d["id"]: d for d in (await get_json(client, "/api/devices"))["devices"]}
    assert listed["sl-01"]["fw"] == "0.2.0" and listed["sl-03"]["fw"] is None  # sl-03 never reported


async def test_devices_filters(client: TestClient) -> None:
    bins = await get_json(client, "/api/devices?kind=bin")
    assert {d["kind"] for d in bins["devices"]} == {"bin"} and bins["count"] == 3
    north = await get_json(client, "/api/devices?zone=north")
    assert {d["id"] for d in north["devices"]} == {"sl-03", "bin-02", "bin-03"}


async def test_one_device_and_unknown_device(client: TestClient) -> None:
    dev = await get_json(client, "/api/devices/bin-02")
    assert dev["alarms"][0]["code"] == "fire"
    err = await get_json(client, "/api/devices/nope", 404)
    assert err["error"]["code"] == "unknown_device"


async def test_readings_time_range_and_field_filter(client: TestClient) -> None:
    t0, t1 = NOW - 3600, NOW - 1800
    data = await get_json(client, f"/api/readings?from={t0}&to={t1}&field=mot,lux")
    rows = data["readings"]
    # Two windows (t0, t0+900) x two streetlights; mot starts at 06:00 (its 6-hour release), outside.
    assert len(rows) == 4
    assert all(t0 <= r["start"] < t1 for r in rows)
    assert {r["field"] for r in rows} == {"lux"}
    morning = await get_json(client, f"/api/readings?from={NOW - 6 * 3600}&to={t1}&field=mot")
    assert [(r["device"], r["start"], r["value"]) for r in morning["readings"]] == [
        ("sl-01", NOW - 6 * 3600, 31), ("sl-02", NOW - 6 * 3600, 32)]
    assert [r["start"] for r in rows] == sorted(r["start"] for r in rows)


async def test_readings_iso_times_device_filter_and_limit(client: TestClient) -> None:
    data = await get_json(client, "/api/readings?from=2026-11-21T06:00:00Z&to=2026-11-21T12:00:00Z"
                                  "&device=bin-01&field=temp&limit=5")
    assert data["count"] == 5 and data["truncated"] is True
    assert {r["device"] for r in data["readings"]} == {"bin-01"}
    assert data["readings"][0]["start"] == NOW - 6 * 3600
    # fill: one value, the level at the end of the 6-hour period (policy release_every_s)
    fill = await get_json(client, "/api/readings?from=2026-11-21T06:00:00Z&to=2026-11-21T12:00:00Z"
                                  "&device=bin-01&field=fill")
    assert [(r["start"], r["value"]) for r in fill["readings"]] == [(NOW - 6 * 3600, 50)]


async def test_readings_pages_follow_next_to_the_end_without_repeats_or_gaps(client: TestClient) -> None:
    # At the morning's first start 18 readings share one start (4 devices x 4 fields (a streetlight's
    # 4th: its 6-hour mot count, a bin's its 6-hour fill level), 2 hourly energies).
    t0 = NOW - 6 * 3600
    base = f"/api/readings?from={t0}&to={t0 + 1}"
    whole = await get_json(client, base + "&limit=100")
    assert whole["count"] == 18 and whole["truncated"] is False and whole["next"] is None
    got: list[dict[str, Any]] = []
    after, sizes = None, []
    while True:
        page = await get_json(client, base + "&limit=4" + (f"&after={after}" if after else ""))
        got += page["readings"]
        sizes.append(page["count"])
        if not page["truncated"]:
            assert page["next"] is None
            break
        assert isinstance(page["next"], str)
        after = page["next"]
    assert sizes == [4, 4, 4, 4, 2] and got == whole["readings"]
    # The order is start, device, report, field.
    assert [(r["device"], r["field"]) for r in got][:4] == [("bin-01", "bat"), ("bin-01", "temp"),
                                                            ("bin-01", "tilt"), ("bin-01", "fill")]


async def test_readings_next_page_keeps_the_filters(client: TestClient) -> None:
    query = f"/api/readings?from={NOW - 6 * 3600}&to={NOW}&device=sl-01&field=lux,wh&limit=7"
    first = await get_json(client, query)
    second = await get_json(client, query + "&after=" + first["next"])
    rows = first["readings"] + second["readings"]
    assert {r["device"] for r in rows} == {"sl-01"} and {r["field"] for r in rows} == {"lux", "wh"}
    assert [r["start"] for r in rows] == sorted(r["start"] for r in rows)
    assert len({(r["start"], r["field"]) for r in rows}) == len(rows) == 14


async def test_hourly_aggregates_per_zone(client: TestClient) -> None:
    data = await get_json(client, f"/api/aggregates/hourly?from={NOW - 3600}&to={NOW}&field=lux&zone=centre")
    [agg] = data["aggregates"]
    assert agg["zone"] == "centre" and agg["field"] == "lux" and agg["hour"] == NOW - 3600
    assert agg["count"] == 8 and agg["devices"] == 2  # 4 windows x 2 lamps
    readings = await get_json(client, f"/api/readings?from={NOW - 3600}&to={NOW}&field=lux")
    values = [r["value"] for r in readings["readings"]]
    assert agg["sum"] == sum(values) and agg["min"] == min(values) and agg["max"] == max(values)
    # A 6-hour PIR count sits in the hour it starts (06:00), one per lamp.
    data = await get_json(client, f"/api/aggregates/hourly?from={NOW - 6 * 3600}&to={NOW}&field=mot&zone=centre")
    [agg] = data["aggregates"]
    assert agg["hour"] == NOW - 6 * 3600 and agg["count"] == 2 and agg["devices"] == 2
    readings = await get_json(client, f"/api/readings?from={NOW - 6 * 3600}&to={NOW}&field=mot")
    values = [r["value"] for r in readings["readings"]]
    assert agg["sum"] == sum(values) and agg["min"] == min(values) and agg["max"] == max(values)


async def test_alarms_newest_first(client: TestClient) -> None:
    data = await get_json(client, "/api/alarms")
    assert [(a["device"], a["code"]) for a in data["alarms"]] == [("bin-02", "fire"), ("sl-02", "lamp_fail")]


async def test_dashboard_summary(client: TestClient) -> None:
    data = await get_json(client, "/api/dashboard")
    assert data["status_counts"] == {"ok": 2, "alarm": 2, "never": 1, "revoked": 1}
    assert len(data["series"]["mot"]) == 1 and len(data["series"]["wh"]) == 6  # mot: one 6-hour release
    assert all(p["value"] > 0 for p in data["series"]["mot"])


@pytest.mark.parametrize(
    ("query", "param", "fragment"),
    [
        ("/api/readings?from=yesterday", "from", "ISO 8601"),
        ("/api/readings?from=1795262400000", "from", "outside 2000..2100"),
        (f"/api/readings?from={NOW}&to={NOW - 10}", "from", "must be before"),
        (f"/api/readings?from={NOW - 400 * 86400}&to={NOW}", "to", "longer than"),
        (f"/api/readings?from={NOW - 400 * 86400}", "from", "longer than"),  # 'to' is the default: now
        ("/api/readings?limit=%EF%BC%91", "limit", "integer"),  # a full-width 1
        ("/api/dashboard?hours=%D9%A3", "hours", "integer"),  # an Arabic-Indic 3
        ("/api/readings?limit=%E3%80%8010", "limit", "integer"),  # an ideographic space before 10
        ("/api/readings?from=%EF%BC%91%EF%BC%97%EF%BC%99%EF%BC%95%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90%EF%BC%90",
         "from", "ASCII"),  # unix seconds in full-width digits
        ("/api/aggregates/hourly?to=%EF%BC%92026-11-21", "to", "ISO 8601"),
        ("/api/readings?field=mot,heartbeat", "field", "heartbeat"),
        ("/api/readings?field=", "field", "empty"),
        ("/api/readings?limit=0", "limit", "between 1 and"),
        ("/api/readings?limit=ten", "limit", "integer"),
        ("/api/readings?device=../etc", "device", "[A-Za-z0-9._-]"),
        ("/api/readings?feild=mot", "feild", "unknown parameter"),
        ("/api/readings?after=bm9wZQ", "after", "'next' value of a previous page"),
        ("/api/readings?after=WzEsImEiLDEsIm0iXQ", "after", "'next' value"),  # [1,"a",1,"m"]: before 2000
        ("/api/readings?after=", "after", "'next' value"),
        ("/api/devices?kind=lamp", "kind", "one of"),
        ("/api/devices?zone=%3Cscript%3E", "zone", "zone"),
        ("/api/aggregates/hourly?to=2026-13-45", "to", "ISO 8601"),
        ("/api/dashboard?hours=0", "hours", "between"),
        ("/opendata/ngsi-ld/v1/entities?type=Lamp", "type", "Streetlight"),
        ("/opendata/ngsi-ld/v1/entities?options=compact", "options", "keyValues"),
        ("/opendata/readings.csv?field=mac", "field", "unknown field"),
        ("/api/devices?kind=bin&kind=streetlight", "kind", "given 2 times"),
        ("/opendata/readings.csv?from=1&limit=5&from=2&from=3", "from", "given 3 times"),
        # QA LOW5: the API answered 200 to empty field items and every endpoint answered an unknown zone
        # (or one in the wrong case) with no rows, where an unknown field is a 400 naming the known ones.
        ("/api/readings?field=mot,,lvl", "field", "empty item"),
        ("/api/readings?field=mot,", "field", "empty item"),
        ("/api/readings?field=,", "field", "empty"),
        ("/api/aggregates/hourly?field=mot,,lvl", "field", "empty item"),
        ("/opendata/readings.csv?field=mot,,lvl", "field", "empty item"),
        ("/api/aggregates/hourly?zone=harbour", "zone", "known: centre, north"),
        ("/api/devices?zone=Centre", "zone", "known: centre, north"),
    ],
)
async def test_bad_parameters_get_400_naming_the_parameter(
    client: TestClient, query: str, param: str, fragment: str
) -> None:
    err = await get_json(client, query, 400)
    assert err["error"]["code"] == "bad_parameter"
    assert err["error"]["param"] == param
    assert fragment in err["error"]["message"]


@pytest.mark.parametrize(
    "query,fragment",
    [
        ("zone=Centre", "unknown zone 'Centre' (zone names are case-sensitive: 'centre'?); known: centre, north"),
        ("zone=harbour", "unknown zone 'harbour'; known: centre, north"),
    ],
)
async def test_a_refused_csv_zone_names_the_known_ones(fleet: Fleet, query: str, fragment: str) -> None:
    """The zones of the devices in the CSV: at 12:05, its first mark after the fixture's reports."""
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as c:
        err = await get_json(c, "/opendata/readings.csv?" + query, 400)
    assert (err["error"]["code"], err["error"]["param"]) == ("bad_parameter", "zone")
    assert fragment in err["error"]["message"]


async def test_unknown_path_and_method_are_json_errors(client: TestClient) -> None:
    resp = await client.get("/api/nothing")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.delete("/api/devices")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/transparency", "/transparency.json", "/openapi.json", "/",
                                  "/api/devices", "/opendata/readings.csv"])
async def test_a_wrong_method_is_a_json_405_on_every_path(client: TestClient, path: str) -> None:
    resp = await client.post(path)
    assert resp.status == 405 and resp.content_type == "application/json", (path, await resp.text())
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_an_unknown_path_outside_the_api_is_a_json_404(client: TestClient) -> None:
    for path in ("/nothing", "/healthz/x"):
        resp = await client.get(path)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found", path


@pytest.mark.parametrize("path", ["/metrics", "/openapi.json", "/transparency.json", "/healthz"])
async def test_operations_endpoints_refuse_unknown_parameters(client: TestClient, path: str) -> None:
    err = await get_json(client, f"{path}?format=json", 400)
    assert err["error"] == {"code": "bad_parameter", "message": "unknown parameter(s): format", "param": "format"}


async def test_html_pages_ignore_their_query_string(client: TestClient) -> None:
    # a parameter given twice too (web review: those got 400 from the repeated-parameter check)
    for path in ("/?from=newsletter", "/transparency?lang=nl", "/?a=1&a=2", "/transparency?a=1&a=2"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html", path


async def test_security_headers_on_pages(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # No page may be framed (clickjacking): CSP frame-ancestors plus X-Frame-Options for old browsers.
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    for path in ("/api/devices", "/opendata/readings.csv", "/api/nothing"):
        resp = await client.get(path)
        assert resp.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], path
        # Not aiohttp's default, which names the exact Python and aiohttp versions.
        assert resp.headers["Server"] == "civicedge", path


async def test_hourly_aggregates_read_the_fleet_only_for_a_zone(client: TestClient,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Review L1: /api/aggregates/hourly loaded the fleet snapshot on every call (the await inside the
    generator for parse_zone ran at once), though only a zone is checked against it."""
    from gateway.web.source import StoreFleetSource

    calls = []
    real = StoreFleetSource.devices

    async def counted(self: StoreFleetSource) -> Any:
        calls.append(1)
        return await real(self)

    monkeypatch.setattr(StoreFleetSource, "devices", counted)
    data = await get_json(client, f"/api/aggregates/hourly?from={NOW - 3600}&to={NOW}&field=lux")
    assert data["aggregates"] and calls == []
    data = await get_json(client, f"/api/aggregates/hourly?from={NOW - 3600}&to={NOW}&field=lux&zone=centre")
    assert data["aggregates"] and calls == [1]
