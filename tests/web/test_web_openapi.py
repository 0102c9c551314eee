"""The hand-written OpenAPI document describes exactly the mounted routes."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

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
    assert statuses | {"200"} == set(op["responses"])
    assert set(op["responses"]["200"]["content"]) == set(FORMATS.values())
