"""One rule for an IPv6 zone id in a client address (gateway.web.proxies.client_address), and what a
link-local address is trusted with.

A socket peer's zone (``fe80::1%eth0``) is dropped, so the machine is one client whether or not its address
came with one; an ``X-Forwarded-For`` entry with a zone (text any client writes) is no address. Before
b7c1e5d the admin throttle kept the zone (``ipaddress`` keeps a scope in equality and ``str``): audit lines
named ``fe80::1%eth0`` and the route planner keyed it apart from ``fe80::1``.

Dropping the zone loses something real: a link-local address names a host only per link (RFC 4007), so
``fe80::1%eth0`` and ``fe80::1%wlan0`` may be two hosts, and any host on a link the gateway listens on can
take ``fe80::1``. So no link-local address is trusted (review M3): ``trusted_proxies`` refuses one (before,
a proxy listed as ``fe80::1`` was believed from any link, a zone-qualified entry matched on every link
too), and so does ``admin_networks``; and the admin throttle keys a link-local client by its own address,
not by ``fe80::/64``, which holds every link-local host (review L8: one host's wrong tokens paused all).

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
    """Fails before b7c1e5d: _client_address kept the scope (``IPv6Address('fe80::1%eth0') != IPv6Address('fe80::1')``)."""
    assert _client_address(_request("fe80::1%eth0")) == ipaddress.IPv6Address("fe80::1")
    assert str(_client_address(_request("fe80::1%eth0"))) == "fe80::1"
    assert throttle_client(_request("fe80::1%eth0")) == throttle_client(_request("fe80::1")) == "fe80::1"
    token = AdminToken(ADMIN_TOKEN, Clock())
    for i in range(FREE_WRONG_TOKENS):  # its wrong tokens count together whichever form they came in
        assert _status(token, "fe80::1%eth0" if i % 2 else "fe80::1", WRONG) == 401
    # The zone is not the client: the same address with another zone is paused too (the gateway is not told
    # the link, so it cannot tell two hosts with one link-local address apart) ...
    assert _status(token, "fe80::1%wlan0", ADMIN_TOKEN) == 429
    # ... while another link-local host is not (below).
    assert _status(token, "fe80::2", ADMIN_TOKEN) == 200


def test_one_link_local_host_does_not_pause_the_others() -> None:
    """Review L8; fails before: every link-local address was keyed ``fe80::/64``, so one host's wrong tokens
    paused every link-local operator (``fe80::2`` got 429 with the right token)."""
    assert throttle_client(_request("fe80::2")) == "fe80::2" != throttle_client(_request("fe80::1"))
    assert throttle_client(_request("fe80::2:3%eth0")) == "fe80::2:3"
    # A global or unique-local address stays keyed by its /64 (privacy addresses rotate within it).
    assert throttle_client(_request("2001:db8:1:2::7")) == throttle_client(_request("2001:db8:1:2::8"))
    assert throttle_client(_request("fd00:5::7")) == "fd00:5::/64"
    token = AdminToken(ADMIN_TOKEN, Clock())
    for _ in range(FREE_WRONG_TOKENS + 1):
        _status(token, "fe80::bad", WRONG)
    assert _status(token, "fe80::bad", ADMIN_TOKEN) == 429
    assert _status(token, "fe80::2%eth0", ADMIN_TOKEN) == 200
    assert _status(token, "fe80::1", WRONG) == 401  # its own first wrong token: not paused


@pytest.mark.parametrize(("peer", "network"), [
    ("fe80::1", "fe80::/10"), ("fe80::1%eth0", "fe80::/10"), ("fe80:1:2:3::9", "fe80::/10"),
    ("febf::1", "fe80::/10"), ("169.254.7.1", "169.254.0.0/16"), ("169.254.200.9", "169.254.0.0/16"),
    ("::ffff:169.254.7.1", "169.254.0.0/16"),
    ("fec0::1", "fec0::/48"), ("2001:db8:1:2::7", "2001:db8:1::/48"), ("169.255.0.1", "169.255.0.0/24"),
])
def test_all_link_local_addresses_are_one_network_to_the_reserve(peer: str, network: str) -> None:
    """Fails before (``fe80::/48``, ``169.254.7.0/24``): a link-local host picks its own address anywhere in
    the range, so by /48 or /24 one host could draw on the reserve for quiet networks as many."""
    assert throttle_network(_request(peer)) == network


def test_refused_admin_calls_are_logged_without_the_zone(caplog: pytest.LogCaptureFixture) -> None:
    """Fails before: the line said ``from fe80::1%eth0``."""
    caplog.set_level(logging.WARNING, logger="gateway.web")
    with pytest.raises(Unauthorized):
        AdminToken(ADMIN_TOKEN, Clock()).check(_request("fe80::1%eth0"))
    [line] = [r.getMessage() for r in caplog.records if "refused an admin call" in r.getMessage()]
    assert "from fe80::1 to GET" in line and "%" not in line, line
    assert client_label(_request("fe80::1%eth0")) == "fe80::1"


@pytest.mark.parametrize(("entry", "words"), [
    ("fe80::1", "'fe80::1' is link-local (fe80::/10): a link-local address names a host only on one link"),
    ("fe80::1%eth0", "'fe80::1%eth0' is link-local (fe80::/10)"),
    ("fe80::/64", "is link-local (fe80::/10)"),
    ("fe00::/7", "'fe00::/7' includes link-local addresses (fe80::/10)"),
    ("169.254.7.1", "'169.254.7.1' is link-local (169.254.0.0/16)"),
    ("::ffff:169.254.7.1", "is link-local (169.254.0.0/16)"),
    ("128.0.0.0/1", "includes link-local addresses (169.254.0.0/16)"),
    ("2001:db8::7%eth0", "'2001:db8::7%eth0' has an IPv6 zone id (%eth0) that could not be matched"),
])
def test_a_link_local_or_zoned_proxy_is_refused(entry: str, words: str) -> None:
    """Review M3; fails before: each was taken (``fe80::1%eth0`` as ``fe80::1%eth0/128``, its zone ignored when
    matching), and a proxy listed as ``fe80::1`` was believed from a host of that address on any link."""
    with pytest.raises(ValueError) as info:
        TrustedProxies([entry])
    assert words in str(info.value), info.value
    if "link-local" in words:
        assert "list the proxy's global or unique-local (fd00::/8) address" in str(info.value)
    with pytest.raises(ValueError, match="link-local|zone id"):  # a network object is checked as its text
        TrustedProxies([ipaddress.ip_network(entry)])


def test_a_link_local_peer_is_not_believed_as_a_proxy() -> None:
    """With the proxy listed by a unique-local address, a link-local host (of whatever link) naming a client
    is the client itself: nothing it writes in X-Forwarded-For is believed."""
    proxies = TrustedProxies(["fd00:5::1", "127.0.0.1"])
    assert proxies.client("fe80::1%wlan0", ["10.20.0.5"]) == "fe80::1%wlan0"
    assert proxies.client("fd00:5::1", ["10.20.0.5"]) == "10.20.0.5"
    app = _app(["fd00:5::1"])
    assert throttle_client(_request("fe80::1%wlan0", app=app, forwarded_for="10.20.0.5")) == "fe80::1"
    # A listed proxy naming a link-local client: that client, keyed by its own address.
    assert proxies.client("127.0.0.1", ["fe80::9"]) == "fe80::9"


def test_a_zone_id_in_x_forwarded_for_stays_refused() -> None:
    """Untrusted text: the walk stops at the proxy that wrote it, whose own address is the client. (Held
    before too; a guard that the one parser still refuses it where the socket peer's zone is dropped.)"""
    proxies = TrustedProxies(["127.0.0.1", "fd00:5::1"])
    assert proxies.client("127.0.0.1", ["fe80::1%x"]) == "127.0.0.1"
    assert proxies.client("127.0.0.1", ["203.0.113.9, fe80::2%eth0"]) == "127.0.0.1"
    # ... also after another trusted hop.
    assert proxies.client("127.0.0.1", ["fe80::2%x, fd00:5::1"]) == "fd00:5::1"
    app = _app(["127.0.0.1"])
    assert throttle_client(_request("127.0.0.1", app=app, forwarded_for="fe80::1%x")) == "127.0.0.1"


def test_an_admin_network_matches_a_peer_with_or_without_a_zone() -> None:
    """Held before too (a network's ``in`` ignores an address's scope); a guard now that the zone is dropped
    before the match."""
    clock = Clock()
    token = AdminToken(ADMIN_TOKEN, clock, admin_networks=["fd00:5::/48"])
    for n in range(int(GLOBAL_BURST)):  # the whole budget, reserve included, spent by new networks
        assert _status(token, "10.0.%d.1" % n, WRONG) == 401
    assert _status(token, "198.51.100.7", ADMIN_TOKEN) == 429  # outside: refused unchecked
    assert _status(token, "fe80::1", ADMIN_TOKEN) == 429  # link-local: outside
    assert _status(token, "fd00:5::1%eth0", ADMIN_TOKEN) == 200  # inside, with a zone: checked
    assert _status(token, "fd00:5::2", ADMIN_TOKEN) == 200  # ... and without


@pytest.mark.parametrize(("entry", "words"), [
    ("fe80::/10", "'fe80::/10' is link-local (fe80::/10)"),
    ("fe80::/64", "is link-local (fe80::/10)"),
    ("169.254.0.0/16", "is link-local (169.254.0.0/16)"),
    ("fc00::/6", "includes link-local addresses (fe80::/10)"),
    ("fd00:5::%eth0/48", "has an IPv6 zone id (%eth0)"),
    ("::/0", "is every address"),
])
def test_a_link_local_or_zoned_admin_network_is_refused(entry: str, words: str) -> None:
    """Review M3; fails before: ``fe80::/10`` spared every host of every link the gateway listens on the global
    cap (each taking fresh addresses could guess past it), and a zone was ignored when matching."""
    with pytest.raises(ValueError) as info:
        AdminToken(ADMIN_TOKEN, Clock(), admin_networks=[entry])
    assert words in str(info.value), info.value
    if "link-local" in words:
        assert "spared the global cap of wrong admin tokens" in str(info.value)


async def _remote(request: web.Request) -> web.Response:
    """What a handler sees: ``request.remote``, the route planner's client key and the audit label."""
    return web.json_response({"remote": request.remote, "planner": planner_client(request),
                              "label": client_label(request), "via": request.get(VIA_PROXY)})


@pytest.mark.parametrize(("trusted", "forwarded_for", "expected"), [
    # No proxy listed: the peer without its zone (fails before: request.remote kept it).
    ([], "203.0.113.9", {"remote": "fe80::1", "planner": "fe80::1", "label": "fe80::1", "via": None}),
    # A link-local peer is no listed proxy: itself, without its zone.
    (["fd00:5::1"], "203.0.113.9", {"remote": "fe80::1", "planner": "fe80::1", "label": "fe80::1", "via": None}),
])
async def test_handlers_and_audit_lines_see_the_address_without_the_zone(
        trusted: list[str], forwarded_for: str, expected: dict[str, Any]) -> None:
    request = _request("fe80::1%eth0", app=_app(trusted), forwarded_for=forwarded_for)
    resp = await forwarded_client(request, _remote)
    assert isinstance(resp, web.Response) and resp.text is not None
    assert json.loads(resp.text) == expected


@pytest.mark.parametrize(("forwarded_for", "expected"), [
    # A listed proxy whose peer address came with a zone: the client it names, the proxy without its zone.
    ("203.0.113.9", {"remote": "203.0.113.9", "planner": "203.0.113.9",
                     "label": "203.0.113.9 via proxy fd00:5::1", "via": "fd00:5::1"}),
    # A listed proxy naming a zone: no address, so the proxy is the client, without its own zone.
    ("fe80::9%x", {"remote": "fd00:5::1", "planner": "fd00:5::1", "label": "fd00:5::1", "via": None}),
])
async def test_a_listed_proxy_peer_is_read_without_its_zone(forwarded_for: str, expected: dict[str, Any]) -> None:
    request = _request("fd00:5::1%eth0", app=_app(["fd00:5::1"]), forwarded_for=forwarded_for)
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
    # With a zone, the peer is named as client_address reads it: an IPv4-mapped one as its IPv4 address.
    assert peer_text("::ffff:203.0.113.9%eth0") == "203.0.113.9"
