"""The hand-written OpenAPI document describes exactly the mounted routes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from .support import NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.openapi import openapi_document

# Mounted by the routes engineer's handler factory when gateway.routes is available.
OPTIONAL_PATHS = {"/api/routes/plan"}


def mounted_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path is None or path.startswith("/static") or route.method == "HEAD":
            continue
        out.add((path, route.method.lower()))
    return out


async def test_every_route_is_described_and_every_description_is_mounted(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW))
    mounted = mounted_routes(app)
    doc = openapi_document()
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert mounted - described == set(), "routes missing from openapi.json"
    assert {p for p, _ in described - mounted} <= OPTIONAL_PATHS, "openapi.json describes routes that do not exist"


def test_document_shape() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.")
    for path, ops in doc["paths"].items():
        params_in_path = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (path, method)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params_in_path, (path, method)
            if path.startswith("/api/admin"):
                assert op["security"] == [{"bearerAuth": []}]
                assert "401" in op["responses"]


async def test_served_document_is_the_same(client: TestClient) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert await resp.json() == openapi_document()


def test_readings_pagination_is_described() -> None:
    op = openapi_document()["paths"]["/api/readings"]["get"]
    assert "after" in {p["name"] for p in op["parameters"]}
    page = openapi_document()["components"]["schemas"]["ReadingsPage"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReadingsPage"}
    assert {"next", "truncated"} <= set(page["required"]) and page["properties"]["next"]["type"] == ["string", "null"]


async def test_routes_plan_is_mounted_and_described_with_every_parameter(fleet: Fleet, tmp_path: Path) -> None:
    """Mounted with the routes engineer's handlers, /api/routes/plan is described with each parameter it
    accepts, their bounds and every status it answers."""
    from gateway.routes.errors import BinDataError, CapacityError, InvalidInputError, SolverError
    from gateway.routes.outputs import FORMATS
    from gateway.routes.parsing import MAX_CAPACITY_L, MAX_VEHICLES
    from gateway.routes.source import GatewayBinSource
    from gateway.routes.web import PLAN_PARAMS, PLAN_PATH, PlanDefaults, routes_handlers

    extra = routes_handlers(GatewayBinSource(tmp_path / "reports.sqlite", tmp_path / "registry"), PlanDefaults())
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=None, admin_token=None, clock=lambda: float(NOW), extra_routes=extra)
    doc = openapi_document()
    assert (PLAN_PATH, "get") in mounted_routes(app) and PLAN_PATH in doc["paths"]
    op = doc["paths"][PLAN_PATH]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == PLAN_PARAMS and all(p["in"] == "query" and not p["required"] for p in params.values())
    assert params["vehicles"]["schema"]["maximum"] == MAX_VEHICLES
    assert params["capacity"]["schema"]["maximum"] == MAX_CAPACITY_L
    assert set(params["format"]["schema"]["enum"]) == set(FORMATS)
    statuses = {str(e.http_status) for e in (InvalidInputError, CapacityError, BinDataError, SolverError)}
    # the worker's own answers (gateway.routes.web): busy, planner_restarted, planner_stopped, too_many_plans
    assert statuses | {"200", "429", "503"} == set(op["responses"])
    assert set(op["responses"]["200"]["content"]) == set(FORMATS.values())


async def _probe_statuses(fleet: Fleet) -> dict[tuple[str, str], dict[str, list[str]]]:
    """Answer statuses of every described operation under the ways a request can go wrong here,
    each with the probes (method, URL, conditions) that produced it.

    Each operation is requested as is, with a parameter it does not take, with unknown ids, without
    the admin token, with an oversized body, over a gateway without registry and metrics, and over a
    store that cannot be read.
    """
    from .support import ADMIN_TOKEN, admin_headers

    def app(*, healthy: bool) -> web.Application:
        return create_app(store=fleet.queries, registry=fleet.registry if healthy else None, policy=load_policy(),
                          metrics_registry=fleet.metrics.registry if healthy else None, admin_token=ADMIN_TOKEN,
                          retention=fleet.retention, clock=lambda: float(NOW), max_body_bytes=4096)

    known = {"device_id": "sl-01", "entity_id": "urn:ngsi-ld:Streetlight:sl-01"}
    unknown = {"device_id": "nope-1", "entity_id": "urn:ngsi-ld:Streetlight:nope-1"}
    bodies = {("/api/admin/devices/{device_id}", "put"): {"kind": "streetlight", "zone": "centre", "lat": "52.3702",
                                                 "lon": "4.8952", "key": fleet.registry.key("sl-01").hex()},
              ("/api/admin/devices/{device_id}/move", "post"): {"lat": "52.3703", "lon": "4.8952"},
              ("/api/admin/retention", "put"): {"kind": "bin", "field": "temp", "days": 30}}
    ops = [(p, m) for p, o in openapi_document()["paths"].items() for m in o if p not in OPTIONAL_PATHS]
    seen: dict[tuple[str, str], dict[str, list[str]]] = {op: {} for op in ops}

    async def run(client: TestClient, condition: str) -> None:
        for path, method in ops:
            body = bodies.get((path, method))
            for ids, query, headers, data in (
                (known, "", admin_headers(), None), (known, "?zz=1", admin_headers(), None),
                (unknown, "", admin_headers(), None), (known, "", {}, None),
                (known, "?options=bogus&type=Bogus&from=x", admin_headers(), None),
                (known, "", admin_headers(), b"x" * 5000 if body is not None else None),
            ):
                url = path.format(**ids) + query
                kw: dict = {"headers": headers}
                if data is not None:
                    kw["data"] = data
                elif body is not None:
                    kw["json"] = body
                resp = await client.request(method.upper(), url, **kw)
                await resp.read()
                probe = f"{method.upper()} {url} ({condition}{', no token' if not headers else ''}" \
                        f"{', oversized body' if data is not None else ''})"
                seen[(path, method)].setdefault(str(resp.status), []).append(probe)

    for healthy in (True, False):
        async with TestClient(TestServer(app(healthy=healthy), host="127.0.0.1", port=0)) as client:
            await run(client, "healthy" if healthy else "no registry/metrics")
    fleet.queries.close()  # every store read fails from now on
    async with TestClient(TestServer(app(healthy=True), host="127.0.0.1", port=0)) as client:
        await run(client, "unreadable store")
    return seen


async def test_every_status_an_operation_answers_is_described(fleet: Fleet) -> None:
    """QA: the single entity's 400 (bad `options`) and the CSV's 503 were missing from openapi.json."""
    doc = openapi_document()
    seen = await _probe_statuses(fleet)
    # A 500 is a defect, never an answer to describe: every probe that crashed is named.
    crashed = {f"{path} {method}": probes["500"] for (path, method), probes in seen.items() if "500" in probes}
    assert crashed == {}
    missing = {(path, method): sorted(set(probes) - set(doc["paths"][path][method]["responses"]))
               for (path, method), probes in seen.items()}
    assert {op: s for op, s in missing.items() if s} == {}


def test_open_data_paths_describe_their_caching_and_negotiation() -> None:
    """Review: readings.csv had the /api ranges' 'end (exclusive)' text; no 304/406 nor ETag, Vary... headers."""
    paths = openapi_document()["paths"]
    for path, ops in paths.items():
        if not path.startswith("/opendata"):
            continue
        responses = ops["get"]["responses"]
        assert {"200", "304", "406"} <= set(responses), path
        for status in ("200", "304"):
            assert {"ETag", "Cache-Control", "Last-Modified", "Link", "Vary"} <= set(responses[status]["headers"]), path
    csv_params = {p["name"]: p["description"] for p in paths["/opendata/readings.csv"]["get"]["parameters"]}
    assert "exclusive" not in csv_params["to"] and "(from, to]" in csv_params["from"]
    assert "whole UTC hour" in csv_params["from"] and "whole UTC hour" in csv_params["to"]
    assert "device, stored zone, UTC hour and field" in paths["/opendata/readings.csv"]["get"]["summary"]
    entity = paths["/opendata/ngsi-ld/v1/entities/{entity_id}"]["get"]["parameters"][0]["description"]
    assert entity.endswith("sl-001")
