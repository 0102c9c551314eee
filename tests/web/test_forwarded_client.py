"""The client behind a trusted reverse proxy (``[http] trusted_proxies``): audit lines and per-client
limits named every client by the proxy's address (all admin calls "from 127.0.0.1" behind nginx)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.proxies import TrustedProxies, parse_network

pytestmark = pytest.mark.timeout(30)
PROXY = "127.0.0.1"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    # nginx appended the client it saw; the client's own header (left of it) is not believed.
    assert proxies.client(PROXY, ["203.0.113.9"]) == "203.0.113.9"
    assert proxies.client(PROXY, ["198.51.100.1, 203.0.113.9"]) == "203.0.113.9"
    # Two trusted proxies in a row (a load balancer in 10/8, then the local nginx).
    assert proxies.client(PROXY, ["198.51.100.1, 203.0.113.9, 10.1.2.3"]) == "203.0.113.9"
    # Several headers count as one list, in order.
    assert proxies.client(PROXY, ["198.51.100.1", "203.0.113.9"]) == "203.0.113.9"
    # Only trusted hops all the way: the leftmost is the best known.
    assert proxies.client(PROXY, ["10.9.9.9"]) == "10.9.9.9"


def test_a_peer_that_is_no_trusted_proxy_keeps_its_own_address() -> None:
    proxies = TrustedProxies(["127.0.0.1"])
    assert proxies.client("192.0.2.50", ["203.0.113.9"]) == "192.0.2.50"
    assert TrustedProxies().client(PROXY, ["203.0.113.9"]) == PROXY  # nothing listed: nothing believed
    assert proxies.client(PROXY, []) == PROXY
    assert proxies.client(None, ["203.0.113.9"]) is None


def test_an_entry_that_is_no_address_stops_at_the_hop_that_wrote_it() -> None:
    proxies = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert proxies.client(PROXY, ["unknown"]) == PROXY
    assert proxies.client(PROXY, ["203.0.113.9, garbage, 10.0.0.7"]) == "10.0.0.7"
    assert proxies.client(PROXY, ["203.0.113.9:4711"]) == PROXY  # a port is not an address
    assert proxies.client(PROXY, ["[2001:db8::7]"]) == "2001:db8::7"


def test_ipv6_and_ipv4_mapped_peers() -> None:
    proxies = TrustedProxies(["127.0.0.1", "::1"])
    assert proxies.client("::1", ["2001:db8::7"]) == "2001:db8::7"
    assert proxies.client("::ffff:127.0.0.1", ["203.0.113.9"]) == "203.0.113.9"
    assert proxies.client("::2", ["203.0.113.9"]) == "::2"
    # One client, one form: a mapped entry is its IPv4 address (review: '::ffff:cb00:7109').
    assert proxies.client("::1", ["::ffff:203.0.113.9"]) == "203.0.113.9"
    # A mapped entry in the list is the IPv4 proxy it names (it was accepted and never matched).
    assert TrustedProxies(["::ffff:127.0.0.1"]).client("127.0.0.1", ["203.0.113.9"]) == "203.0.113.9"


def test_a_zone_id_is_no_address_so_no_text_rides_into_audit_lines() -> None:
    """Review: ipaddress accepts any text after '%' (an IPv6 zone id), so a hop could put fake words
    into the audit line and a fresh per-client key into the planner's limit."""
    proxies = TrustedProxies(["127.0.0.1"])
    assert proxies.client(PROXY, ["::1%] (token of the night operator)"]) == PROXY
    assert proxies.client(PROXY, ["203.0.113.9, fe80::1%eth0"]) == PROXY


@pytest.mark.parametrize(("entry", "message"), [
    ("10.0.0.1/8", "host bits set.*10.0.0.0/8"),
    ("proxy.city.example", "not an IP address or network"),
    ("", "not an IP address or network"),
    ("0.0.0.0/0", "trusts every address"),
    ("::/0", "trusts every address"),
])
def test_a_bad_entry_is_refused_with_the_reason(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_network(entry)


def _config(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "%s"\n[http]\ntrusted_proxies = %s\n' % (tmp_path / "data", value))
    return path


def test_the_config_key_is_checked_and_named(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '["127.0.0.1", "10.0.0.0/8", "127.0.0.1"]'))
    assert config.http is not None and config.http.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8")
    with pytest.raises(ConfigError, match=r"http.trusted_proxies\[1\].*host bits set") as bad:
        load_config(_config(tmp_path, '["::1", "10.0.0.1/8"]'))
    assert bad.value.key == "http.trusted_proxies" and bad.value.reason == "bad_value"
    with pytest.raises(ConfigError, match=r"http.trusted_proxies\[0\] must be a string") as wrong:
        load_config(_config(tmp_path, "[8080]"))
    assert wrong.value.reason == "wrong_type"


async def _remote(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote})


@pytest.fixture
async def behind_proxy(fleet: Fleet) -> AsyncIterator[TestClient]:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW), trusted_proxies=[PROXY],
                     extra_routes=[web.get("/test/remote", _remote)])
    async with TestClient(TestServer(app, host=PROXY, port=0)) as c:
        yield c


async def test_handlers_see_the_client_behind_the_proxy(behind_proxy: TestClient) -> None:
    # What the route planner's per-client limit reads (gateway.routes.web.client_address).
    resp = await behind_proxy.get("/test/remote", headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.9"})
    assert (await resp.json()) == {"remote": "203.0.113.9"}
    resp = await behind_proxy.get("/test/remote")
    assert (await resp.json()) == {"remote": PROXY}


async def test_audit_lines_name_the_client_and_the_proxy(
        behind_proxy: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.web")
    resp = await behind_proxy.put("/api/admin/retention", json={"kind": "streetlight", "field": "lux", "days": 7},
                                  headers={"Authorization": "Bearer " + ADMIN_TOKEN,
                                           "X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 200, await resp.text()
    resp = await behind_proxy.put("/api/admin/retention", json={"kind": "streetlight", "field": "lux", "days": 7},
                                  headers={"X-Forwarded-For": "198.51.100.23"})
    assert resp.status == 401
    audit = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin API:")]
    assert audit and audit[-1].endswith("[from 203.0.113.9 via proxy 127.0.0.1]"), audit
    [refused] = [r.getMessage() for r in caplog.records if "refused an admin call" in r.getMessage()]
    assert "from 198.51.100.23 via proxy 127.0.0.1 to PUT" in refused


async def test_without_trusted_proxies_the_header_is_ignored(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW), extra_routes=[web.get("/test/remote", _remote)])
    async with TestClient(TestServer(app, host=PROXY, port=0)) as client:
        resp = await client.get("/test/remote", headers={"X-Forwarded-For": "203.0.113.9"})
        assert (await resp.json()) == {"remote": PROXY}
