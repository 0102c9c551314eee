"""Open data and HTTP caches: Vary, ETags that change with what the answer is made of (retention,
media type) and only with that, CORS on every answer, the CSV's default range lag and its bounds.

Each test answers a finding of the review of the open-data fixes, over the real aiohttp app and the
real SQLite store of the fed fleet (tests/web/conftest.py)."""

from __future__ import annotations

import copy
import csv
import io
import os
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.storage.store import ReportRecord
from gateway.resources import load_policy
from gateway.web import export
from gateway.web.app import create_app
from gateway.web.opendata import INGEST_LAG_S, csv_filename, csv_range

from .support import NOW, Fleet, pty_gateway_config
from .test_web_opendata_publishing import app_client, bin_window

H = 3600
JSON_PATHS = ("/opendata", "/opendata/ngsi-ld/v1/entities", "/opendata/devices.geojson",
              "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01")
PATHS = (*JSON_PATHS, f"/opendata/readings.csv?from={NOW - 3 * H}&to={NOW}")
ORIGIN = {"Origin": "https://maps.example"}


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_vary_accept_on_200_and_304(client: TestClient, method: str) -> None:
    """Review: no Vary: Accept although answers depend on Accept and are Cache-Control: public."""
    for path in PATHS:
        resp = await client.request(method, path)
        assert resp.status == 200 and resp.headers["Vary"] == "Accept, Accept-Encoding", (method, path)
        again = await client.request(method, path, headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304 and again.headers["Vary"] == "Accept, Accept-Encoding", (method, path)


async def test_each_media_type_has_its_own_etag(client: TestClient) -> None:
    """Review: NGSI-LD as application/json and as */* shared one strong ETag with two Content-Types."""
    path = "/opendata/ngsi-ld/v1/entities"
    ld = await client.get(path, headers={"Accept": "*/*"})
    plain = await client.get(path, headers={"Accept": "application/json"})
    assert (ld.content_type, plain.content_type) == ("application/ld+json", "application/json")
    assert await ld.read() == await plain.read()
    assert ld.headers["ETag"] != plain.headers["ETag"]
    crossed = await client.get(path, headers={"Accept": "application/json", "If-None-Match": ld.headers["ETag"]})
    assert crossed.status == 200 and crossed.content_type == "application/json"
    geo = await client.get("/opendata/devices.geojson")
    geo_plain = await client.get("/opendata/devices.geojson", headers={"Accept": "application/json"})
    assert geo.headers["ETag"] != geo_plain.headers["ETag"]


async def test_cors_exposes_validators_and_preflight_allows_if_none_match(client: TestClient) -> None:
    """Review: a page on another site could not read ETag/Link/Last-Modified, nor send If-None-Match."""
    exposed = "ETag, Link, Content-Disposition, Last-Modified"
    for path in PATHS:
        resp = await client.get(path, headers=ORIGIN)
        assert resp.headers["Access-Control-Allow-Origin"] == "*", path
        assert resp.headers["Access-Control-Expose-Headers"] == exposed, path
        again = await client.get(path, headers={**ORIGIN, "If-None-Match": resp.headers["ETag"]})
        assert again.status == 304 and again.headers["Access-Control-Expose-Headers"] == exposed, path
        assert again.headers["Access-Control-Allow-Origin"] == "*", path
    refused = await client.get("/opendata/readings.csv", headers={**ORIGIN, "Accept": "application/json"})
    assert refused.status == 406
    assert refused.headers["Access-Control-Allow-Origin"] == "*"
    assert refused.headers["Access-Control-Expose-Headers"] == exposed
    pre = await client.options("/opendata/readings.csv", headers={
        **ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match"})
    assert pre.status == 204
    allowed = {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"accept", "if-none-match"} <= allowed
    # Not for the admin API: its answers are not for other sites.
    assert "Access-Control-Expose-Headers" not in (await client.get("/api/devices")).headers


async def test_retention_changes_the_csv_etag(fleet: Fleet) -> None:
    """Review: values removed by retention kept the ETag, so a revalidating client got 304 and kept
    the deleted data as current."""
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 12:05: the CSV's mark
        await _retention_changes_the_csv_etag(client, fleet)


async def _retention_changes_the_csv_etag(client: TestClient, fleet: Fleet) -> None:
    path = f"/opendata/readings.csv?from={NOW - 3 * H}&to={NOW}"
    before = await client.get(path)
    assert before.status == 200 and any(r["field"] == "temp" for r in rows_of(await before.text()))
    assert fleet.queries.data_version() == 0
    # bin temp kept for one day, run a day after the range: the range's temp values go.
    assert fleet.store.apply_retention({("bin", "temp"): 1}, now=NOW + 86400) > 0
    # one step for the values' removal, one per batch of the report rows it emptied (row retention)
    version = fleet.queries.data_version()
    assert version >= 1
    after = await client.get(path, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status == 200 and after.headers["ETag"] != before.headers["ETag"]
    assert not any(r["field"] == "temp" for r in rows_of(await after.text()))
    # A retention run that removes nothing leaves the version (and every ETag) as it was.
    assert fleet.store.apply_retention({("bin", "temp"): 1}, now=NOW + 86400) == 0
    assert fleet.queries.data_version() == version
    assert (await client.get(path, headers={"If-None-Match": after.headers["ETag"]})).status == 304


async def test_a_past_range_keeps_its_etag_when_later_reports_arrive(fleet: Fleet) -> None:
    """Review: the CSV ETag changed with any new report anywhere, so a historic range never got 304."""
    past = f"/opendata/readings.csv?from={NOW - 6 * H}&to={NOW - 3 * H}"
    recent = f"/opendata/readings.csv?from={NOW - H}&to={NOW + H}"
    clock = [float(NOW + H + INGEST_LAG_S)]  # 13:05: the 12:00 hour complete
    async with app_client(fleet, clock=lambda: clock[0]) as client:
        tags = {p: (await client.get(p)).headers["ETag"] for p in (past, recent)}
        await bin_window(fleet, "bin-01", NOW, 90)
        clock[0] += H  # 14:05: the next CSV mark publishes it
        assert (await client.get(past, headers={"If-None-Match": tags[past]})).status == 304
        assert (await client.get(recent, headers={"If-None-Match": tags[recent]})).status == 200
        # A late report for the past range changes it (at the next mark: docs/privacy.md).
        await bin_window(fleet, "bin-02", NOW - 5 * H, 40)
        assert (await client.get(past, headers={"If-None-Match": tags[past]})).status == 304
        clock[0] += H
        assert (await client.get(past, headers={"If-None-Match": tags[past]})).status == 200


async def test_the_etag_names_the_normalised_range_and_rows_are_selected_by_their_end(fleet: Fleet) -> None:
    """Review: the from=NOW&to=NOW+1234 check could not fail. Bounds that round to the same whole
    hours are one export (one ETag); a row ending at 'to' is in it, one ending at 'from' is not."""
    async with app_client(fleet, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 11:00 hour complete
        async def etag(query: str) -> str:
            resp = await client.get("/opendata/readings.csv?" + query)
            assert resp.status == 200
            return resp.headers["ETag"]

        base = await etag(f"from={NOW - 2 * H}&to={NOW}")
        assert await etag(f"from={NOW - 2 * H + 1800}&to={NOW + 1234}") == base
        assert await etag(f"from={NOW - 2 * H}&to={NOW}&field=fill,temp") == await etag(
            f"from={NOW - 2 * H}&to={NOW}&field=temp,fill")
        assert await etag(f"from={NOW - 3 * H}&to={NOW}") != base
        # The 10:00 hour ends at 11:00: in (10:00, 11:00], not in (11:00, 12:00].
        first = rows_of(await (await client.get(f"/opendata/readings.csv?from={NOW - 2 * H}&to={NOW - H}")).text())
        second = rows_of(await (await client.get(f"/opendata/readings.csv?from={NOW - H}&to={NOW}")).text())
    assert {r["hour"] for r in first} == {"2026-11-21T10:00:00Z"}
    assert {r["until"] for r in first} == {"2026-11-21T11:00:00Z"}
    assert "2026-11-21T10:00:00Z" not in {r["hour"] for r in second} and second


def test_the_default_to_lags_behind_now() -> None:
    """Review: a poller at hh:00:05 with the default 'to' got the hour whose last report had not arrived."""
    assert csv_range({}, now=NOW + 5) == (NOW - 25 * H, NOW - H)
    assert csv_range({}, now=NOW + INGEST_LAG_S - 1) == (NOW - 25 * H, NOW - H)
    assert csv_range({}, now=NOW + INGEST_LAG_S) == (NOW - 24 * H, NOW)
    # An explicit 'to' is rounded down and never later than the default one: at 12:00:05 the 11:00 hour's
    # last report may still be on its way (QA H1: to=tomorrow at 23:52 gave a 23:00 row of 3 windows).
    assert csv_range({"to": str(NOW + 5)}, now=NOW + 5) == (NOW - 25 * H, NOW - H)
    assert csv_range({"from": str(NOW - 3 * H), "to": str(NOW + 12 * H)}, now=NOW + 5) == (NOW - 3 * H, NOW - H)
    assert csv_range({"from": str(NOW - 3 * H), "to": str(NOW + 12 * H)}, now=NOW + INGEST_LAG_S) == (NOW - 3 * H, NOW)
    assert csv_range({"from": str(NOW - 3 * H), "to": str(NOW - 2 * H)}, now=NOW + 5) == (NOW - 3 * H, NOW - 2 * H)
    # A 'from' in the hour still open is an empty export, not a 400 (it is not in the future).
    assert csv_range({"from": str(NOW - 60), "to": str(NOW + H)}, now=NOW) == (NOW - H, NOW - H)


@pytest.mark.parametrize("ahead_s", [5 * H, 3 * 86400, 40 * 86400])
def test_a_future_to_alone_gives_the_last_complete_24_hours(ahead_s: int) -> None:
    """Review M1: the default 'from' was counted back from the 'to' as asked, and only then was the
    range cut at the default 'to': with 'to' 3 days ahead the export was (23:00, 23:00], header only,
    named after that future hour; 5 h ahead it held 19 hours instead of 24."""
    now = NOW + 52 * 60                                    # 12:52: the 12:00 hour is not complete
    expected = (NOW - 24 * H, NOW)
    assert csv_range({"to": str(now + ahead_s)}, now=now) == expected
    assert csv_range({"to": str(now + ahead_s)}, now=now) == csv_range({}, now=now)
    assert csv_filename(*expected) == "civicedge-readings-2026-11-20T12-2026-11-21T12.csv"


async def test_a_future_to_alone_is_served_as_the_default_range(fleet: Fleet) -> None:
    """Review M1, through HTTP: to = now + 3 days names and holds the default range."""
    async with app_client(fleet, clock=lambda: float(NOW + 52 * 60)) as c:
        default = await c.get("/opendata/readings.csv")
        ahead = await c.get(f"/opendata/readings.csv?to={NOW + 52 * 60 + 3 * 86400}")
        assert default.status == ahead.status == 200
        assert ahead.headers["Content-Disposition"] == default.headers["Content-Disposition"] == (
            'inline; filename="civicedge-readings-2026-11-20T12-2026-11-21T12.csv"')
        rows = rows_of(await ahead.text())
        assert rows and rows == rows_of(await default.text())


@pytest.mark.parametrize("query", [f"from={NOW + 600}", f"from={NOW + 7200}", f"from={NOW + 600}&to={NOW + 7200}"])
async def test_a_from_in_the_future_is_refused_however_far(client: TestClient, query: str) -> None:
    """Review: from=NOW+600 gave 200 with a header only while from=NOW+7200 gave 400."""
    resp = await client.get("/opendata/readings.csv?" + query)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == "from" and "future" in error["message"]


async def test_a_from_within_the_ingest_lag_is_an_empty_export_and_a_future_to_is_allowed(
        client: TestClient) -> None:
    resp = await client.get(f"/opendata/readings.csv?from={NOW - 60}")
    assert resp.status == 200 and rows_of(await resp.text()) == []
    assert (await client.get(f"/opendata/readings.csv?from={NOW - H}&to={NOW + 7 * H}")).status == 200


@pytest.mark.parametrize("value", ["2026-11-21T10:00:00 02:00", "2026-11-21 10:00:00Z", f" {NOW - H}"])
async def test_a_space_in_a_time_gets_the_plus_hint(client: TestClient, value: str) -> None:
    """Review: an unencoded +02:00 (a space in the middle) got no hint about '+' in URLs."""
    resp = await client.get("/opendata/readings.csv", params={"from": value})
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert "a '+' in a URL is a space; write %2B" in message


@pytest.mark.parametrize(("accept", "media"), [
    ("*", "application/ld+json"),
    ("application/ld+json;q=nan", "application/ld+json"),
    ("application/json;q=nan, application/ld+json;q=0.5", "application/json"),
    ("application/json;q=2, application/ld+json;q=0.5", "application/json"),
    ("application/json;q=-1, application/ld+json;q=0.5", "application/json"),
])
async def test_odd_accept_values(client: TestClient, accept: str, media: str) -> None:
    """Review: 'Accept: *' was 406; q=nan made a range neither accepted nor refused."""
    resp = await client.get("/opendata/ngsi-ld/v1/entities", headers={"Accept": accept})
    assert resp.status == 200 and resp.content_type == media


async def test_last_modified_is_never_after_date(fleet: Fleet) -> None:
    """Review: under [sim_clock] (arrivals ahead of the wall clock) Last-Modified was later than Date."""
    ahead = time.time() + 30 * 86400
    fleet.store.insert_batch([ReportRecord(
        device="bin-01", seq=10_000, kind="bin", zone="centre", type="win", w=NOW, l=900,
        m={"fill": 50, "temp": 10, "tilt": 0, "bat": 80}, e={}, a=[], fw=None, received_at=ahead,
        link="serial:/dev/pts/9", digest="00" * 32)])
    async with app_client(fleet, clock=lambda: float(NOW + H + INGEST_LAG_S)) as c:
        # The CSV's range holds published rows (the morning's last hour): its Last-Modified is the mark that
        # published them. (12:00-13:00 holds only the report stamped ahead, not published while the clock is
        # behind it: no row, so no Last-Modified since the stamp covers the range's rows only.)
        for path in (*JSON_PATHS[1:], f"/opendata/readings.csv?from={NOW - H}&to={NOW}"):
            resp = await c.get(path)
            assert resp.status == 200, path
            modified = parsedate_to_datetime(resp.headers["Last-Modified"])
            assert modified <= parsedate_to_datetime(resp.headers["Date"]), path


@pytest.mark.timeout(60)
async def test_the_gateway_service_publishes_its_opendata_config(tmp_path: Path) -> None:
    """Review: nothing checked that a real Gateway passes [opendata] to the web app."""
    from gateway.service import Gateway

    master, slave = os.openpty()
    try:
        gw = Gateway(pty_gateway_config(tmp_path, "gw-od", slave, opendata={
            "licence": "CC-BY-4.0", "publisher": "City of Example"}))
        await gw.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{gw.http_port}/opendata") as resp:
                    index = await resp.json()
                    link = resp.headers["Link"]
        finally:
            await gw.stop()
    finally:
        os.close(master)
        os.close(slave)
    assert (index["license"], index["publisher"]) == ("CC-BY-4.0", "City of Example")
    assert link == '<https://spdx.org/licenses/CC-BY-4.0.html>; rel="license"'


def test_a_row_of_periods_not_aligned_to_hours_ends_when_its_last_value_ends(fleet: Fleet) -> None:
    """Review: the row end was hour + ceil(l / 3600) h, so a 40-minute window starting at :40 (ending
    at the next hour's :20) was put in a range that closed before the value existed."""
    hour = NOW - 3 * H
    fleet.store.insert_batch([ReportRecord(
        device="bin-09", seq=1, kind="bin", zone="centre", type="win", w=hour + 2400, l=2400,
        m={"fill": 50}, e={}, a=[], fw=None, received_at=NOW, link="serial:/dev/pts/9", digest="00" * 32)])

    def rows(start: int, end: int) -> list[tuple[int, int]]:
        return [(r.hour, r.count) for r in fleet.queries.device_hourly(
            fields=["fill"], start=start, end=end, devices=["bin-09"])]

    assert rows(hour, hour + H) == []  # the value ends at hour + 1 h 20 min
    assert rows(hour + H, hour + 2 * H) == [(hour, 1)]
    # Aligned 15-minute windows keep their hour: the row ends on the next hour.
    assert [r.hour for r in fleet.queries.device_hourly(fields=["temp"], start=NOW - 2 * H, end=NOW - H,
                                                         devices=["bin-01"])] == [NOW - 2 * H]


async def test_the_csv_etag_changes_with_the_output_format_and_the_policy(fleet: Fleet,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Review M2: the CSV's ETag named the stored data and the request only, so an upgrade that changed
    past rows (cde47c2: means of value reports only; a150fdf: fill rows labelled last) or a policy change
    (a label, a unit) answered a harvester's revalidation of a past range with 304 for ever."""
    path = f"/opendata/readings.csv?from={NOW - 3 * H}&to={NOW}"
    async with app_client(fleet) as c:
        before = (await c.get(path)).headers["ETag"]
        assert (await c.get(path, headers={"If-None-Match": before})).status == 304
        monkeypatch.setattr(export, "CSV_FORMAT_VERSION", export.CSV_FORMAT_VERSION + 1)
        resp = await c.get(path, headers={"If-None-Match": before})
        assert resp.status == 200 and resp.headers["ETag"] != before
    monkeypatch.undo()
    policy = copy.deepcopy(load_policy())  # load_policy's dict is shared
    policy["kinds"]["bin"]["fields"]["fill"]["label"] = "Fill level (renamed)"
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=policy,
                     metrics_registry=fleet.metrics.registry, admin_token=None, retention=fleet.retention, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get(path, headers={"If-None-Match": before})
        assert resp.status == 200 and resp.headers["ETag"] != before
    async with app_client(fleet) as c:  # the same policy and format again: the same ETag
        assert (await c.get(path, headers={"If-None-Match": before})).status == 304
