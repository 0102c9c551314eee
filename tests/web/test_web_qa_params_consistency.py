"""QA (city IT persona) LOW findings on parameters, against a real store fed through the ingest service:

* an unknown ``device`` on ``/api/readings`` answered an empty 200, where an unknown zone or field is a 400;
* the 2000..2100 bound was uneven: a default ``from`` counted back from ``to`` before 2000 was 200 on
  ``/api`` (from 1999-12-31T12:00Z) and 400 on the CSV exports; now clamped to 2000-01-01T00:00Z everywhere;
* static files ignore their query string (a cache-busting ``?v=``), a repeated parameter included, as
  docs/api.md now says.
"""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app

MIN_TS = 946684800  # 2000-01-01T00:00:00Z


async def _error(resp: object) -> dict[str, str]:
    body = await resp.json()  # type: ignore[attr-defined]
    return body["error"]  # type: ignore[no-any-return]


async def test_unknown_device_is_a_400_with_a_did_you_mean(client: TestClient) -> None:
    resp = await client.get("/api/readings", params={"device": "sl-1"})
    assert resp.status == 400
    error = await _error(resp)
    assert (error["code"], error["param"]) == ("bad_parameter", "device")
    assert error["message"].startswith("unknown device 'sl-1'") and "'sl-01'" in error["message"]
    # Close ids only: not the whole fleet (bin-01 is nothing like sl-1).
    assert "bin-01" not in error["message"]
    resp = await client.get("/api/readings", params={"device": "nosuch"})
    error = await _error(resp)
    assert resp.status == 400 and error["message"].startswith("unknown device 'nosuch'")
    assert "did you mean" not in error["message"]


async def test_known_devices_stay_accepted_revoked_and_never_reported_too(client: TestClient, fleet: Fleet) -> None:
    data = await (await client.get("/api/readings", params={"device": "sl-01"})).json()
    assert data["count"] > 0 and {r["device"] for r in data["readings"]} == {"sl-01"}
    # bin-03: registered, revoked, never reported: known, so an empty page rather than a 400.
    resp = await client.get("/api/readings", params={"device": "bin-03"})
    assert resp.status == 200 and (await resp.json())["count"] == 0
    # A revoked device with stored data keeps its readings.
    fleet.registry.revoke("sl-01")
    data = await (await client.get("/api/readings", params={"device": "sl-01"})).json()
    assert data["count"] > 0


async def test_without_a_registry_the_stored_devices_are_the_known_ones(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=None, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        assert (await c.get("/api/readings", params={"device": "sl-01"})).status == 200
        # sl-03 is registered but never reported: without the registry nothing tells it exists.
        resp = await c.get("/api/readings", params={"device": "sl-03"})
        assert resp.status == 400 and (await _error(resp))["param"] == "device"


async def test_a_default_from_before_2000_is_clamped_on_every_endpoint(client: TestClient) -> None:
    for path in ("/api/readings", "/api/aggregates/hourly"):
        resp = await client.get(path, params={"to": "2000-01-01T12:00:00Z"})
        assert resp.status == 200, path
        data = await resp.json()
        assert (data["from"], data["to"]) == (MIN_TS, MIN_TS + 12 * 3600), path
        # An explicit 'from' outside the bound stays a 400 naming it.
        resp = await client.get(path, params={"from": "1999-12-31T00:00:00Z", "to": "2000-01-01T12:00:00Z"})
        error = await _error(resp)
        assert resp.status == 400 and error["param"] == "from" and "outside 2000..2100" in error["message"], path
        # 'to' at the bound itself leaves no time: a 400 naming 'to', the parameter given.
        resp = await client.get(path, params={"to": "2000-01-01T00:00:00Z"})
        assert resp.status == 400 and (await _error(resp))["param"] == "to", path
    for path in ("/opendata/readings.csv", "/opendata/privacy-budget.csv"):
        resp = await client.get(path, params={"to": "2000-01-01T12:00:00Z"})
        assert resp.status == 200, path
        text = await resp.text()
        assert text.count("\n") == 1, path  # the header alone: nothing stored in 2000
        resp = await client.get(path, params={"to": "2000-01-01T00:00:00Z"})
        assert resp.status == 200 and (await resp.text()).count("\n") == 1, path
        resp = await client.get(path, params={"from": "1999-12-31T00:00:00Z", "to": "2000-01-01T12:00:00Z"})
        error = await _error(resp)
        assert resp.status == 400 and error["param"] == "from" and "outside 2000..2100" in error["message"], path
    # Not clamped where 24 h back stays in 2000.
    resp = await client.get("/opendata/readings.csv", params={"to": "2000-01-02T06:00:00Z"})
    assert 'filename="civicedge-readings-2000-01-01T06-2000-01-02T06.csv"' in resp.headers["Content-Disposition"]
    resp = await client.get("/opendata/readings.csv", params={"to": "2000-01-01T12:00:00Z"})
    assert 'filename="civicedge-readings-2000-01-01T00-2000-01-01T12.csv"' in resp.headers["Content-Disposition"]


async def test_static_files_ignore_their_query_string(client: TestClient) -> None:
    plain = await client.get("/static/dashboard.js")
    assert plain.status == 200
    body = await plain.read()
    for query in ("?v=3", "?v=3&v=4", "?x=1&y=2"):
        resp = await client.get("/static/dashboard.js" + query)
        assert resp.status == 200 and await resp.read() == body, query
        resp = await client.get("/favicon.ico" + query)
        assert resp.status == 204, query
    # The JSON endpoints still refuse a repeated or unknown parameter.
    assert (await client.get("/api/alarms?v=3")).status == 400
    assert (await client.get("/healthz?v=3&v=4")).status == 400
