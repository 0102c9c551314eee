"""/metrics from the gateway's CollectorRegistry and /healthz."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from .support import NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples
    }


async def test_metrics_exposes_the_gateway_registry(client: TestClient, fleet: Fleet) -> None:
    stored = fleet.queries.count_reports()
    fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW, "l": 900, "m": {"lux": 20}})
    fleet.feed("bin-01", {"t": "win", "k": "bin", "w": NOW, "l": 900, "m": {"bat": 60}}, link="ble:AA:BB:CC:00:00:00")
    # A report with a field off the allowlist is rejected by the gateway's policy gate and counted.
    fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW + 900, "l": 900, "m": {"mac": 1}})
    await fleet.settle(stored=stored + 2, rejected=1)
    # The ingest writer sets outbox_depth from the store after each commit, on the event loop once the commit's
    # store job returned: a store job queued now returns after every earlier one, and the writer's bookkeeping
    # for them runs before this test resumes. Else a commit seen by settle() (it reads the store) could still
    # overwrite the 7 below (CI under load: 0.0 == 7).
    await fleet.ingest.run_in_store(lambda: None)
    for _ in range(3):
        await asyncio.sleep(0)
    # What the transports and the upstream set (no links or broker run in this test).
    fleet.metrics.outbox_depth.set(7)
    fleet.metrics.link_state.labels("serial:/dev/pts/9").set(1)
    fleet.metrics.ble_connected.set(2)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    got = samples(await resp.text())
    assert got[("civicedge_reports_in_total", (("link_type", "serial"),))] == 2
    assert got[("civicedge_reports_in_total", (("link_type", "ble"),))] == 1
    assert got[("civicedge_reports_stored_total", ())] == 2
    assert got[("civicedge_rejections_total", (("reason", "policy"),))] == 1
    assert got[("civicedge_rejections_total", (("reason", "hmac"),))] == 0
    assert got[("civicedge_outbox_depth", ())] == 7
    assert got[("civicedge_link_state", (("link", "serial:/dev/pts/9"),))] == 1
    assert got[("civicedge_ble_connected", ())] == 2


async def test_healthz_ok(client: TestClient, fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("serial:/dev/pts/9").set(1)
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["checks"]["devices"] == 6 and body["checks"]["links"] == {"serial:/dev/pts/9": 1.0}


async def test_healthz_degraded_with_reasons(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("ble").set(0)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW),
                     health_checks=[lambda: ["storage batch writer is 12 s behind"], lambda: []])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/healthz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "degraded"
        assert body["reasons"] == ["link ble is down", "storage batch writer is 12 s behind"]


async def test_healthz_degraded_when_store_unreadable(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW))
    fleet.queries.close()  # the read connection is gone: every query fails
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/healthz")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "degraded"
        assert body["reasons"][0].startswith("store unreadable")
        resp = await c.get("/metrics")
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "no_metrics"
        # API calls answer a JSON 503, not a stack trace.
        resp = await c.get("/api/devices")
        assert resp.status == 503
        assert (await resp.json())["error"] == {"code": "backend_unavailable",
                                                "message": "gateway backend unavailable (read_failed)"}


async def test_healthz_does_not_repeat_a_link_the_gateway_probe_reports(fleet: Fleet) -> None:
    fleet.metrics.link_state.labels("serial:/dev/ttyUSB0").set(0)
    fleet.metrics.link_state.labels("mqtt").set(0)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW),
                     health_checks=[lambda: ["serial:/dev/ttyUSB0 is down"], lambda: 1 / 0])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/healthz")
        body = await resp.json()
        assert resp.status == 503
        assert body["reasons"] == ["link mqtt is down", "serial:/dev/ttyUSB0 is down",
                                   "health check failed (ZeroDivisionError)"]


async def test_a_defect_in_a_handler_answers_a_json_500_and_logs_the_traceback(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW))

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a defect")

    app.router.add_get("/api/broken", broken)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/api/broken")
        assert resp.status == 500
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"]["code"] == "internal"
    failed = [r for r in caplog.records if "GET '/api/broken' failed unexpectedly" in r.getMessage()]
    assert failed and failed[0].exc_info is not None and failed[0].exc_info[0] is KeyError


async def test_a_defect_after_a_streamed_answer_started_cuts_the_connection(fleet: Fleet) -> None:
    # QA review: the JSON 500 was written into the chunked CSV body (a complete-looking file with an
    # HTTP response inside it); a started answer must end without its closing chunk instead.
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW))

    async def streaming(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "text/csv"
        await resp.prepare(request)
        await resp.write(b"hour,device\r\n2026,b1\r\n")
        raise KeyError("a defect mid-stream")

    app.router.add_get("/api/streaming", streaming)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/streaming HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed the connection
        writer.close()
    finally:
        await server.close()
    assert data.startswith(b"HTTP/1.1 200") and b"2026,b1" in data
    assert b"500" not in data and b"internal" not in data
    assert not data.endswith(b"0\r\n\r\n")  # no closing chunk: the client sees a cut-off transfer
