"""The browser's /favicon.ico (asked on every page, also /opendata's JSON) is answered, not a 404."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from .support import NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app


async def test_favicon_is_204_not_404(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/favicon.ico")
        assert resp.status == 204 and await resp.read() == b""
