"""Host header allow-list: a page rebound to the gateway's address (DNS rebinding) is refused."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer

from .support import NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app, start_http
from gateway.web.hosts import HostAllowlist, host_name_of

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8080", "127.0.0.1"), ("Data.City.Example.:80", "data.city.example"), ("[::1]:8080", "::1"),
    ("[::1]", "::1"), ("localhost", "localhost"), ("::1", None), ("[::1", None), ("[nothost]:80", None),
    ("a:b", None), ("", None), ("[::1]x", None),
])
def test_host_name_of(header: str, name: str | None) -> None:
    assert host_name_of(header) == name


def test_allowlist_rules() -> None:
    hosts = HostAllowlist(["data.city.example"], own_names=["gw-7", "gw-7.lan.example"])
    for ok in ("127.0.0.1:8080", "10.0.0.5", "[::1]:8080", "[fe80::1]", "localhost:8080", "LOCALHOST",
               "gw-7", "gw-7.lan.example.", "data.city.example:443", None):
        assert hosts.allows(ok), ok
    for bad in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", "data.city.example.evil",
                "::1", "x", "", "localhost.evil.example"):
        assert not hosts.allows(bad), bad
    assert HostAllowlist().names >= {socket.gethostname().lower(), "localhost"}


@pytest.fixture
async def client(fleet: Fleet) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=None, clock=lambda: float(NOW), allowed_hosts=["data.city.example"])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        yield c


@pytest.mark.parametrize("path", ["/api/devices", "/", "/healthz", "/opendata/readings.csv", "/api/nothing"])
async def test_foreign_host_is_refused_with_json_naming_the_key(client: TestClient, path: str) -> None:
    resp = await client.get(path, headers={"Host": "evil.example"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "host_not_allowed"
    assert "allowed_hosts" in body["error"]["message"] and "evil.example" in body["error"]["message"]
    assert "devices" not in body
    assert resp.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8080", "data.city.example", "DATA.city.example.:443",
                                  socket.gethostname()])
async def test_known_hosts_are_served(client: TestClient, host: str) -> None:
    resp = await client.get("/api/devices", headers={"Host": host})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["devices"]


async def test_rebinding_over_the_wire_is_refused(fleet: Fleet) -> None:
    """What the reviewer did: curl -H 'Host: evil.example' http://127.0.0.1:PORT/api/devices."""
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=None, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=0.5)
    try:
        for host, status in ((b"evil.example", b"400"), (b"127.0.0.1:%d" % server.port, b"200")):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /api/devices HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
            assert data.split()[1] == status, data[:200]
            if status == b"400":
                assert b"host_not_allowed" in data and b"sl-01" not in data
    finally:
        await server.stop()
