"""The API's plan cache follows the registry: a revoked or moved bin is not served from a plan made
before the change (QA LOW: up to 5 minutes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.registry import Registry
from gateway.routes.model import Depot
from gateway.routes.source import GatewayBinSource
from gateway.routes.web import PlanDefaults, routes_handlers

from routes_helpers import T0
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(60)
NOW = T0 - 3 * 3600


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    for i in range(4):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 6 * WINDOW_S, [90] * 5)
    yield data
    data.close()


def _stops(doc: dict) -> dict[str, tuple[float, float]]:  # type: ignore[type-arg]
    return {s["bin_id"]: (s["lat"], s["lon"]) for r in doc["routes"] for s in r["stops"]}


@pytest.mark.parametrize("registry_kind", ["gateway's own", "another process's"])
async def test_revoked_and_moved_bins_are_not_served_from_the_cache(city: CityData, registry_kind: str) -> None:
    """The gateway's own Registry (API changes) and a separate connection (``civicedge device``), both seen.
    Test fails before."""
    own = registry_kind == "gateway's own"
    source = GatewayBinSource(city.db_path, city.registry if own else city.registry_dir)
    routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=300),
                             clock=lambda: float(NOW))
    app = web.Application()
    app.add_routes(routes)
    app.on_cleanup.append(routes.close)
    client = TestClient(TestServer(app))
    await client.start_server()
    other = None if own else Registry(city.registry_dir)
    changer = city.registry if own else other
    assert changer is not None
    try:
        first = _stops(await (await client.get("/api/routes/plan")).json())
        assert sorted(first) == ["bin-0", "bin-1", "bin-2", "bin-3"]
        again = _stops(await (await client.get("/api/routes/plan")).json())
        assert again == first  # unchanged registry: the cached plan
        changer.revoke("bin-1")
        changer.move("bin-2", lat="52.3800", lon="4.9100")
        after = _stops(await (await client.get("/api/routes/plan")).json())
        assert sorted(after) == ["bin-0", "bin-2", "bin-3"]
        assert after["bin-2"] == (52.38, 4.91)
    finally:
        if other is not None:
            other.close()
        await client.close()
