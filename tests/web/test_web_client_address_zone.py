"""One rule for an IPv6 zone id in a client address (gateway.web.proxies.client_address).

A socket peer's zone (``fe80::1%eth0``: the gateway's own interface) is dropped, so the machine is one client
whether or not its address came with one; an ``X-Forwarded-For`` entry with a zone (text any client writes)
is no address. Before, the X-Forwarded-For walk refused the zone of the *peer* too (a link-local trusted
proxy was never believed), while the admin throttle kept it (``ipaddress`` keeps a scope in equality and
``str``): audit lines named ``fe80::1%eth0`` and the route planner keyed it apart from ``fe80::1``.

The requests are made with aiohttp's ``make_mocked_request`` on a transport naming the peer: a real socket
here cannot give a zone. CPython on Linux names an accepted link-local peer without one (checked with a
connection to this machine's ``fe80::...%eth0``: peername ``('fe80::fc:ff:fe00:1', port, 0, 4)``, the scope
being the fourth item), so the zone reaches ``request.remote`` only from a transport, event loop or
middleware that puts it there; the rule holds for those.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from .support import ADMIN_TOKEN, admin_headers
from .test_web_admin_throttle import WRONG, Clock
from gateway.routes.web import client_address as planner_client
from gateway.web.admin_throttle import FREE_WRONG_TOKENS, GLOBAL_BURST
from gateway.web.auth import AdminThrottled, AdminToken, _client_address, throttle_client, throttle_network
from gateway.web.errors import Unauthorized
from gateway.web.forwarded import TRUSTED_PROXIES_KEY, VIA_PROXY, client_label, forwarded_client
from gateway.web.proxies import TrustedProxies, client_address, peer_text

pytestmark = pytest.mark.timeout(30)

PATH = "/api/admin/retention"


class _Transport(asyncio.Transport):
    """A transport that only names its peer (what request.remote reads), as a 4-tuple of an IPv6 socket."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self._peer = (peer, 40000, 0, 4)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default


def _app(trusted: list[str] | None = None) -> web.Application:
    app = web.Application()
    app[TRUSTED_PROXIES_KEY] = TrustedProxies(trusted or ())
    return app


def _request(peer: str, token: str = WRONG, *, app: web.Application | None = None,
             forwarded_for: str | None = None) -> web.Request:
    """An admin request with ``token`` from socket peer ``peer`` (the middleware has not run)."""
    headers = admin_headers(token)
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return make_mocked_request("GET", PATH, headers=headers, transport=_Transport(peer),
                               app=app if app is not None else _app())


def _status(token: AdminToken, peer: str, presented: str) -> int:
    try:
        token.check(_request(peer, presented))
    except AdminThrottled:
        return 429
    except Unauthorized:
        return 401
    return 200


@pytest.mark.parametrize(("text", "from_socket", "expected"), [
    ("fe80::1%eth0", True, "fe80::1"),
    ("fe80::1%eth0", False, None),
    ("fe80::1%x", False, None),
    ("[fe80::1%eth0]", True, "fe80::1"),
    ("::1%] (token of the night operator)", False, None),
    ("fe80::1%", True, None),  # no zone after the '%': no address
    ("203.0.113.9%eth0", True, None),  # IPv4 has no zones
    ("::ffff:203.0.113.9", False, "203.0.113.9"),
    ("::ffff:203.0.113.9%eth0", True, "203.0.113.9"),
    (" [2001:db8::7] ", False, "2001:db8::7"),
    ("unknown", True, None),
    ("203.0.113.9:4711", False, None),
    ("", True, None),
    (None, True, None),
])
def test_one_parser_for_socket_peers_and_forwarded_entries(text: str | None, from_socket: bool,
                                                           expected: str | None) -> None:
    address = client_address(text, from_socket=from_socket)
    assert (None if address is None else str(address)) == expected
    if expected is not None:
        # Equal (and hashed) as the zone-free address: one dict key, one set member.
        assert address == ipaddress.ip_address(expected) and hash(address) == hash(ipaddress.ip_address(expected))


def test_a_link_local_peer_is_the_same_client_with_or_without_its_zone() -> None:
    """Fails before: _client_address kept the scope (``IPv6Address('fe80::1%eth0') != IPv6Address('fe80::1')``)."""
    assert _client_address(_request("fe80::1%eth0")) == ipaddress.IPv6Address("fe80::1")
    assert str(_client_address(_request("fe80::1%eth0"))) == "fe80::1"
    assert throttle_client(_request("fe80::1%eth0")) == throttle_client(_request("fe80::1")) == "fe80::/64"
    assert throttle_network(_request("fe80::1%eth0")) == "fe80::/48"
    token = AdminToken(ADMIN_TOKEN, Clock())
    for i in range(FREE_WRONG_TOKENS):  # its wrong tokens count together whichever form they came in
        assert _status(token, "fe80::1%eth0" if i % 2 else "fe80::1", WRONG) == 401
    assert _status(token, "fe80::1%wlan0", ADMIN_TOKEN) == 429


def test_refused_admin_calls_are_logged_without_the_zone(caplog: pytest.LogCaptureFixture) -> None:
    """Fails before: the line said ``from fe80::1%eth0``."""
    caplog.set_level(logging.WARNING, logger="gateway.web")
    with pytest.raises(Unauthorized):
        AdminToken(ADMIN_TOKEN, Clock()).check(_request("fe80::1%eth0"))
    [line] = [r.getMessage() for r in caplog.records if "refused an admin call" in r.getMessage()]
    assert "from fe80::1 to GET" in line and "%" not in line, line
    assert client_label(_request("fe80::1%eth0")) == "fe80::1"


def test_a_link_local_trusted_proxy_is_believed_with_its_zone() -> None:
    """Fails before: the peer's zone made it no address to the walk, so a proxy listed as ``fe80::1`` that
    connected as ``fe80::1%eth0`` was never trusted and every client behind it was one throttle key."""
    proxies = TrustedProxies(["fe80::1"])
    assert proxies.client("fe80::1%eth0", ["203.0.113.9"]) == "203.0.113.9"
    assert proxies.client("fe80::1", ["203.0.113.9"]) == "203.0.113.9"
    app = _app(["fe80::1"])
    assert throttle_client(_request("fe80::1%eth0", app=app, forwarded_for="203.0.113.9")) == "203.0.113.9"


def test_a_zone_id_in_x_forwarded_for_stays_refused() -> None:
    """Untrusted text: the walk stops at the proxy that wrote it, whose own address is the client. (Held
    before too; a guard that the one parser still refuses it where the socket peer's zone is dropped.)"""
    proxies = TrustedProxies(["127.0.0.1", "fe80::1"])
    assert proxies.client("127.0.0.1", ["fe80::1%x"]) == "127.0.0.1"
    assert proxies.client("127.0.0.1", ["203.0.113.9, fe80::2%eth0"]) == "127.0.0.1"
    # ... also after a link-local trusted hop: its zone is not the entry's.
    assert proxies.client("127.0.0.1", ["fe80::2%x, fe80::1"]) == "fe80::1"
    app = _app(["127.0.0.1"])
    assert throttle_client(_request("127.0.0.1", app=app, forwarded_for="fe80::1%x")) == "127.0.0.1"


def test_an_admin_network_matches_a_link_local_peer_with_or_without_its_zone() -> None:
    """Held before too (a network's ``in`` ignores an address's scope); a guard now that the zone is dropped
    before the match."""
    clock = Clock()
    token = AdminToken(ADMIN_TOKEN, clock, admin_networks=["fe80::/10"])
    for n in range(int(GLOBAL_BURST)):  # the whole budget, reserve included, spent by new networks
        assert _status(token, "10.0.%d.1" % n, WRONG) == 401
    assert _status(token, "198.51.100.7", ADMIN_TOKEN) == 429  # outside: refused unchecked
    assert _status(token, "fe80::1%eth0", ADMIN_TOKEN) == 200  # inside, with a zone: checked
    assert _status(token, "fe80::2", ADMIN_TOKEN) == 200  # ... and without


async def _remote(request: web.Request) -> web.Response:
    """What a handler sees: ``request.remote``, the route planner's client key and the audit label."""
    return web.json_response({"remote": request.remote, "planner": planner_client(request),
                              "label": client_label(request), "via": request.get(VIA_PROXY)})


@pytest.mark.parametrize(("trusted", "forwarded_for", "expected"), [
    # No proxy listed: the peer without its zone (fails before: request.remote kept it).
    ([], "203.0.113.9", {"remote": "fe80::1", "planner": "fe80::1", "label": "fe80::1", "via": None}),
    # A listed link-local proxy: the client it names, the proxy without its zone (fails before: not believed).
    (["fe80::1"], "203.0.113.9", {"remote": "203.0.113.9", "planner": "203.0.113.9",
                                  "label": "203.0.113.9 via proxy fe80::1", "via": "fe80::1"}),
    # A listed proxy naming a zone: no address, so the proxy is the client, without its own zone.
    (["fe80::1"], "fe80::9%x", {"remote": "fe80::1", "planner": "fe80::1", "label": "fe80::1", "via": None}),
])
async def test_handlers_and_audit_lines_see_the_address_without_the_zone(
        trusted: list[str], forwarded_for: str, expected: dict[str, Any]) -> None:
    request = _request("fe80::1%eth0", app=_app(trusted), forwarded_for=forwarded_for)
    resp = await forwarded_client(request, _remote)
    assert isinstance(resp, web.Response) and resp.text is not None
    assert json.loads(resp.text) == expected


async def test_a_peer_without_a_zone_is_served_as_it_came() -> None:
    """Only a zone is taken off: an IPv4-mapped peer keeps its form in request.remote (the throttle maps it)."""
    request = _request("::ffff:203.0.113.9")
    seen: list[web.Request] = []

    async def handler(req: web.Request) -> web.Response:
        seen.append(req)
        return web.Response()

    await forwarded_client(request, handler)
    assert seen == [request] and request.remote == "::ffff:203.0.113.9"
    assert peer_text("::ffff:203.0.113.9") == "::ffff:203.0.113.9" and peer_text(None) is None
    assert peer_text("fe80::1%eth0") == "fe80::1"
