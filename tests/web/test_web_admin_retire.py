"""Admin API ``/retire`` and ``/reinstate``: a board that left this gateway is retired (not revoked): not
silent in /api/devices and the fleet gauges, its past data kept, its frames refused and never acknowledged."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from .support import ADMIN_TOKEN, NOW, Fleet, admin_headers
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.liveness import STALE_WINDOWS, window_of
from gateway.web.openapi import openapi_document
from gateway.web.revocation import REINSTATED_OPEN_DATA, RETIRED_OPEN_DATA

WIN = {"t": "win", "k": "streetlight", "w": NOW, "l": 900, "m": {"lux": 10}}


def _later() -> int:
    """Past every kind's silence limit: the fixture's reporting devices are stale then."""
    policy = load_policy()
    return NOW + STALE_WINDOWS * max(window_of(policy, k) for k in policy["kinds"]) + 60


async def _state(fleet: Fleet, now: int) -> tuple[dict[str, str], dict[tuple[str, str], float], int]:
    """Status per device in /api/devices, civicedge_devices by (kind, status), sl-01's readings in /api/readings."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(now))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        devices = (await (await c.get("/api/devices")).json())["devices"]
        text = await (await c.get("/metrics")).text()
        readings = (await (await c.get(f"/api/readings?from={NOW - 6 * 3600}&to={NOW}&device=sl-01")).json())
        dashboard = await (await c.get("/api/dashboard")).json()
    gauges = {(s.labels["kind"], s.labels["status"]): s.value for fam in text_string_to_metric_families(text)
              if fam.name == "civicedge_devices" for s in fam.samples}
    assert dashboard["status_counts"] == dict(Counter(d["status"] for d in devices))
    return {d["id"]: d["status"] for d in devices}, gauges, readings["count"]


async def test_a_retired_silent_device_is_not_stale_and_its_past_readings_stay(client: TestClient, fleet: Fleet,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    later = _later()
    statuses, gauges, readings = await _state(fleet, later)
    assert statuses["sl-01"] == "stale" and gauges[("streetlight", "stale")] == 1 and readings > 0
    caplog.set_level(logging.WARNING, logger="gateway.web")
    resp = await client.post("/api/admin/devices/sl-01/retire", headers=admin_headers())
    assert resp.status == 200 and await resp.json() == {"device": "sl-01", "retired": True,
                                                         "open_data": RETIRED_OPEN_DATA}
    audit = [r.getMessage() for r in caplog.records if "retired device sl-01" in r.getMessage()]
    assert audit and "open data: " + RETIRED_OPEN_DATA in audit[0], caplog.text
    statuses, gauges, after = await _state(fleet, later)
    assert statuses["sl-01"] == "retired"
    assert gauges[("streetlight", "stale")] == 0 and gauges[("streetlight", "retired")] == 1  # the alert's expr: 0
    assert after == readings  # its past reports stay stored and published
    devices = (await (await client.get("/api/devices")).json())["devices"]
    [sl01] = [d for d in devices if d["id"] == "sl-01"]
    assert (sl01["retired"], sl01["revoked"], sl01["status"]) == (True, False, "retired")
    admin = (await (await client.get("/api/admin/devices", headers=admin_headers())).json())["devices"]
    assert [d["status"] for d in admin if d["id"] == "sl-01"] == ["retired"]

    resp = await client.post("/api/admin/devices/sl-01/reinstate", headers=admin_headers())
    assert resp.status == 200 and await resp.json() == {"device": "sl-01", "retired": False,
                                                         "open_data": REINSTATED_OPEN_DATA}
    statuses, gauges, _ = await _state(fleet, later)
    assert statuses["sl-01"] == "stale" and gauges[("streetlight", "retired")] == 0


async def test_a_retired_devices_frames_are_refused_unacknowledged_until_it_is_reinstated(
        client: TestClient, fleet: Fleet) -> None:
    assert (await client.post("/api/admin/devices/sl-01/retire", headers=admin_headers())).status == 200
    stored, acks = fleet.queries.count_reports(), len(fleet.acks)
    seq = fleet.feed("sl-01", WIN)
    await fleet.settle(stored=stored, rejected=1)
    assert fleet.metrics.value("civicedge_rejections_total", {"reason": "retired"}) == 1
    assert fleet.metrics.value("civicedge_rejections_total", {"reason": "revoked"}) == 0
    assert fleet.queries.count_reports() == stored and len(fleet.acks) == acks
    resp = await client.post("/api/admin/devices/sl-01/retire", headers=admin_headers())
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "already_retired"
    # enrolling never takes it back, not even with its own key
    resp = await client.put("/api/admin/devices/sl-01", headers=admin_headers(), json={
        "kind": "streetlight", "zone": "centre", "lat": "52.3702", "lon": "4.8952",
        "key": fleet.registry.key("sl-01").hex()})
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "retired" and "/api/admin/devices/sl-01/reinstate" in error["message"]

    assert (await client.post("/api/admin/devices/sl-01/reinstate", headers=admin_headers())).status == 200
    resp = await client.post("/api/admin/devices/sl-01/reinstate", headers=admin_headers())
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_retired"
    fleet.seqs["sl-01"] = seq - 1  # the board re-sends what it kept
    fleet.feed("sl-01", WIN)
    await fleet.settle(stored=stored + 1, rejected=1)
    await _acked(fleet, ("sl-01", seq))


async def _acked(fleet: Fleet, ack: tuple[str, int]) -> None:
    import asyncio

    for _ in range(500):
        if ack in fleet.acks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{ack} not acknowledged: {fleet.acks[-5:]}")


async def test_a_revoked_device_is_not_retired_nor_reinstated_and_a_retired_one_can_be_revoked(
        client: TestClient, fleet: Fleet) -> None:
    for action in ("retire", "reinstate"):
        resp = await client.post(f"/api/admin/devices/bin-03/{action}", headers=admin_headers())
        error = (await resp.json())["error"]
        assert resp.status == 409 and (error["code"], error["param"]) == ("revoked", "device_id")
    assert not fleet.registry.get("bin-03").retired
    assert (await client.post("/api/admin/devices/bin-01/retire", headers=admin_headers())).status == 200
    assert (await client.post("/api/admin/devices/bin-01/revoke", headers=admin_headers())).status == 200
    devices = (await (await client.get("/api/devices")).json())["devices"]
    assert {d["id"]: d["status"] for d in devices}["bin-01"] == "revoked"


async def test_retire_and_reinstate_need_the_token_and_a_registered_id(client: TestClient, fleet: Fleet) -> None:
    for action in ("retire", "reinstate"):
        resp = await client.post(f"/api/admin/devices/sl-01/{action}")
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "missing_token"
        resp = await client.post(f"/api/admin/devices/ghost/{action}", headers=admin_headers())
        assert resp.status == 404 and (await resp.json())["error"] == {
            "code": "unknown_device", "message": "no device 'ghost'", "param": "device_id"}
        resp = await client.post(f"/api/admin/devices/sl-01/{action}?dry_run=1", headers=admin_headers())
        assert resp.status == 400
    assert not fleet.registry.get("sl-01").retired


async def test_the_retire_and_reinstate_answers_are_the_ones_openapi_describes(client: TestClient) -> None:
    # Before: described as any object, without the open_data the answers now carry.
    doc = openapi_document()
    for action, retired in (("retire", True), ("reinstate", False)):
        resp = await client.post("/api/admin/devices/sl-02/%s" % action, headers=admin_headers())
        answer = await resp.json()
        schema = doc["paths"]["/api/admin/devices/{device_id}/%s" % action]["post"]["responses"]["200"][
            "content"]["application/json"]["schema"]
        assert resp.status == 200 and set(answer) == set(schema["required"])
        # The reinstate's warning comes only with a device without a usable key (test_web_admin_remove_races).
        assert set(schema["properties"]) == set(schema["required"]) | (set() if retired else {"warning"})
        assert schema["properties"]["retired"]["enum"] == [answer["retired"]] == [retired]
        assert all(isinstance(answer[k], str) for k in ("device", "open_data"))
