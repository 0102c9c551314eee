"""Fleet gauges in /metrics: devices by kind and status and open alarms by kind and code, as /api/devices
shows them, every policy combination pre-set; absent (and civicedge_fleet_view_up 0) when the store is
unreadable, while the rest of /metrics still answers."""

from __future__ import annotations

from collections import Counter

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.fleet_metrics import STATUSES, alarm_codes
from gateway.web.liveness import STALE_WINDOWS, window_of


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {fam.name: [(s.labels, s.value) for s in fam.samples] for fam in text_string_to_metric_families(text)}


def _by(samples: list[tuple[dict[str, str], float]], a: str, b: str) -> dict[tuple[str, str], float]:
    return {(labels[a], labels[b]): value for labels, value in samples}


async def _scrape_and_devices(fleet: Fleet, now: int) -> tuple[dict[str, list[tuple[dict[str, str], float]]],
                                                                 list[dict[str, object]], list[dict[str, object]]]:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(now))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/metrics")
        assert resp.status == 200
        families = _families(await resp.text())  # the parser refuses an invalid exposition
        devices = (await (await c.get("/api/devices")).json())["devices"]
        alarms = (await (await c.get("/api/alarms")).json())["alarms"]
    return families, devices, alarms


async def test_fleet_gauges_count_what_api_devices_shows(fleet: Fleet) -> None:
    policy = load_policy()
    families, devices, alarms = await _scrape_and_devices(fleet, NOW)
    assert families["civicedge_fleet_view_up"] == [({}, 1.0)]
    by_status = _by(families["civicedge_devices"], "kind", "status")
    # every policy kind and status is there, 0 where no device is
    assert set(by_status) == {(k, s) for k in policy["kinds"] for s in STATUSES}
    want = Counter((d["kind"], d["status"]) for d in devices)
    assert {k: v for k, v in by_status.items() if v} == dict(want)
    # the fixture's fleet: sl-02 lamp_fail and bin-02 fire open, sl-03 never reported, bin-03 revoked
    assert by_status[("streetlight", "alarm")] == 1 and by_status[("bin", "alarm")] == 1
    assert by_status[("streetlight", "never")] == 1 and by_status[("bin", "revoked")] == 1
    open_alarms = _by(families["civicedge_open_alarms"], "kind", "code")
    assert set(open_alarms) == {(k, c) for k, codes in alarm_codes(policy).items() for c in codes}
    assert {k: v for k, v in open_alarms.items() if v} == dict(Counter((a["kind"], a["code"]) for a in alarms))
    assert open_alarms[("bin", "fire")] == 1 and open_alarms[("bin", "tip")] == 0


async def test_silent_devices_count_as_stale(fleet: Fleet) -> None:
    policy = load_policy()
    # past every kind's silence limit, within the 24 h alarms stay open
    later = NOW + STALE_WINDOWS * max(window_of(policy, k) for k in policy["kinds"]) + 60
    families, devices, _ = await _scrape_and_devices(fleet, later)
    by_status = _by(families["civicedge_devices"], "kind", "status")
    want = Counter((d["kind"], d["status"]) for d in devices)
    assert want[("streetlight", "ok")] == 0 and want[("bin", "ok")] == 0  # sl-01 and bin-01 went silent
    assert {k: v for k, v in by_status.items() if v} == dict(want)
    assert by_status[("streetlight", "stale")] == 1 and by_status[("bin", "stale")] == 1


async def test_unreadable_store_leaves_fleet_gauges_out_and_metrics_answering(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW))
    fleet.queries.close()  # the read connection is gone: every query fails
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/metrics")
        assert resp.status == 200
        families = _families(await resp.text())
    assert families["civicedge_fleet_view_up"] == [({}, 0.0)]
    assert families["civicedge_devices"] == [] and families["civicedge_open_alarms"] == []
    assert families["civicedge_reports_stored"]  # the gateway's registry is served as before
