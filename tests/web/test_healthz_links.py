"""/healthz names every link that is down, whatever else its probes report.

Was: a link was left out when any probe reason contained its name anywhere in the text, so with the
broker gone ("mqtt broker unreachable") a down `ble` link was not reported ("ble" is in
"unreachable"). A probe names its link at the start; only that counts.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp.test_utils import TestClient, TestServer

from .support import NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app


async def reasons(fleet: Fleet, probe: Callable[[], list[str]]) -> list[str]:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW),
                     health_checks=[probe])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/healthz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "degraded"
        found: list[str] = body["reasons"]
        return found


async def test_a_down_link_is_reported_when_another_reason_contains_its_name(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("ble").set(0)
    got = await reasons(fleet, lambda: ["mqtt broker unreachable (outbox depth 3)"])
    assert got == ["link ble is down", "mqtt broker unreachable (outbox depth 3)"]


async def test_a_link_its_probe_reports_is_reported_once(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("ble").set(0)
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB1").set(0)
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB10").set(0)
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB2").set(0)
    got = await reasons(fleet, lambda: [
        "mqtt broker unreachable (outbox depth 0)",
        "ble is down: cannot reach the BLE radio/adapter (no adapter)",
        "serial:/dev/ttyUSB10 is down",
        "link serial:/dev/ttyUSB2 failed (RuntimeError: boom); restarting it",
    ])
    assert got == ["link serial:/dev/ttyUSB1 is down",  # "serial:/dev/ttyUSB10 is down" is another port
                   "mqtt broker unreachable (outbox depth 0)",
                   "ble is down: cannot reach the BLE radio/adapter (no adapter)",
                   "serial:/dev/ttyUSB10 is down",
                   "link serial:/dev/ttyUSB2 failed (RuntimeError: boom); restarting it"]
