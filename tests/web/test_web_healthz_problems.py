"""/healthz lists its reasons as structured problems too: a stable code and severity each, and the
worst severity at the top, so a monitor tells page (critical) from ticket (warning) without parsing
the reasons' text. `status`, `reasons` and the HTTP status (503 for any problem) are unchanged.

Was: only `status` (ok/degraded) and free-text reasons with changing figures and paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from .support import NOW, Fleet
from gateway.health import Problem
from gateway.resources import load_policy
from gateway.web.app import create_app


async def healthz(fleet: Fleet, *probes: Callable[[], Sequence[str]]) -> tuple[int, dict[str, Any]]:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW),
                     health_checks=list(probes))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/healthz")
        body: dict[str, Any] = await resp.json()
        return resp.status, body


async def test_healthy_is_ok_with_no_problems(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB0").set(1)
    status, body = await healthz(fleet, lambda: [])
    assert status == 200
    assert (body["status"], body["severity"], body["reasons"], body["problems"]) == ("ok", "ok", [], [])


async def test_one_port_down_is_a_warning_still_503(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB0").set(1)
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB1").set(0)
    status, body = await healthz(fleet, lambda: [])
    assert status == 503 and body["status"] == "degraded" and body["severity"] == "warning"
    assert body["reasons"] == ["link serial:/dev/ttyUSB1 is down"]
    assert body["problems"] == [{"code": "link_down", "severity": "warning", "subject": "serial:/dev/ttyUSB1",
                                 "message": "link serial:/dev/ttyUSB1 is down"}]


async def test_a_critical_problem_makes_the_whole_critical(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("ble").set(0)
    damaged = "report store damaged, nothing is committed or acknowledged until a restart on a recovered ..."
    status, body = await healthz(fleet, lambda: [Problem("mqtt_down", "mqtt broker unreachable (outbox depth 7)"),
                                                 Problem("store_damaged", damaged)])
    assert status == 503 and body["severity"] == "critical"
    assert [(p["code"], p["severity"]) for p in body["problems"]] == [
        ("ble_down", "warning"), ("mqtt_down", "warning"), ("store_damaged", "critical")]
    assert body["reasons"] == ["link ble is down", "mqtt broker unreachable (outbox depth 7)", damaged]
    assert [p["message"] for p in body["problems"]] == body["reasons"]


async def test_a_failing_probe_and_an_uncoded_reason_are_critical(fleet: Fleet) -> None:
    """Neither says whether reports are stored: the state is unknown, which a monitor must not read as fine."""
    def broken() -> list[str]:
        raise RuntimeError("boom")

    status, body = await healthz(fleet, broken, lambda: ["something a probe says without a code"])
    assert status == 503 and body["severity"] == "critical"
    assert [(p["code"], p["severity"]) for p in body["problems"]] == [
        ("health_check_failed", "critical"), ("unclassified", "critical")]


async def test_a_store_that_cannot_be_read_is_critical(fleet: Fleet) -> None:
    fleet.queries.close()  # the web's read connection is gone: the store probe fails with an error
    status, body = await healthz(fleet, lambda: [])
    assert status == 503 and body["severity"] == "critical"
    assert [p["code"] for p in body["problems"]] == ["store_unreadable"]


async def test_a_registry_that_cannot_be_read_is_the_documented_warning(fleet: Fleet, monkeypatch: Any) -> None:
    """A registry briefly locked (a CLI ``devices add``) is ``store_unavailable`` (warning) naming the registry,
    not a critical ``store_unreadable`` that blames the report store (review rev-obs M2)."""
    from gateway.errors import RegistryError

    def locked() -> list[Any]:
        raise RegistryError("cannot list the devices in registry x: database is locked", reason="storage")

    monkeypatch.setattr(fleet.registry, "list", locked)
    status, body = await healthz(fleet, lambda: [])
    assert status == 503 and body["severity"] == "warning"
    assert body["problems"] == [{"code": "store_unavailable", "severity": "warning",
                                 "message": "registry cannot be read (storage)"}]


async def test_the_gateways_own_link_check_decides_about_ble_during_its_first_scan(fleet: Fleet) -> None:
    """BLE's link_state is 0 while its first scan runs after a start; the gateway's own check knows that
    is no outage (no ble_down, no all_links_down). /healthz took ble_down from the metric anyway. Was:
    a ble_down warning (503) for every start of a BLE gateway."""
    fleet.metrics.link_state.labels("ble").set(0)
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB0").set(0)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW),
                     health_checks=[lambda: [Problem("link_down", "serial:/dev/ttyUSB0 is down",
                                                     "serial:/dev/ttyUSB0")]],
                     links_in_health_checks=True)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/healthz")
        body: dict[str, Any] = await resp.json()
    assert [(p["code"], p["subject"]) for p in body["problems"]] == [("link_down", "serial:/dev/ttyUSB0")]
    assert body["checks"]["links"] == {"ble": 0.0, "serial:/dev/ttyUSB0": 0.0}  # the figures stay
    # Without the gateway's check (an app on its own), a link at 0 is still reported from the metric.
    status, alone = await healthz(fleet, lambda: [])
    assert status == 503 and {p["code"] for p in alone["problems"]} == {"ble_down", "link_down"}
