"""The client's address behind a reverse proxy the city trusts (``[http] trusted_proxies``).

Behind nginx or Caddy every request comes from the proxy, so the audit lines of admin calls and the
per-client limit of the route planner would all name the proxy. A proxy the operator lists here
passes the client's address in ``X-Forwarded-For`` (nginx: ``proxy_set_header X-Forwarded-For
$proxy_add_x_forwarded_for;``), and the web app then uses that address as ``request.remote``.

Only the hops the gateway can vouch for are believed: the list is read from the right (the entry the
nearest proxy appended) and the first address that is not itself a trusted proxy is the client. A
client outside the listed addresses cannot pass itself off as another by sending its own
``X-Forwarded-For``, since its entries are left of the one its proxy appended (anything connecting from
a listed address is believed: list proxies, not networks of clients). A request from an address not listed keeps that address, header or
not. A socket peer's IPv6 zone id (``fe80::1%eth0``) is dropped from ``request.remote`` whether or not a
proxy is listed, and an entry of the header with one is no address (gateway.web.proxies.client_address).
No listed proxy is link-local: such an address names a host only per link, and the gateway is not told
the link (gateway.web.proxies.link_local_problem). ``X-Forwarded-Host`` and ``-Proto`` are not used: the
``Host`` check (gateway.web.hosts) and the links the pages build do not depend on them.

aiohttp-remotes' ``XForwardedStrict`` does the same walk but refuses (400) every request from an
address that is not a listed proxy, which would lock out an operator on the gateway's own machine;
hence this small middleware.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from gateway.web.proxies import TrustedProxies, peer_text

TRUSTED_PROXIES_KEY = web.AppKey("trusted_proxies", TrustedProxies)
# The trusted proxy a request came through (set by forwarded_client), or absent.
VIA_PROXY = web.RequestKey("via_proxy", str)


def client_label(request: web.BaseRequest) -> str:
    """The client's address for a log line: ``192.0.2.7``, or ``192.0.2.7 via proxy 127.0.0.1`` when a
    trusted proxy named it (so an audit line says where the address came from)."""
    via = request.get(VIA_PROXY)
    client = peer_text(request.remote) or "unknown address"
    return client if via is None else "%s via proxy %s" % (client, via)


@web.middleware
async def forwarded_client(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Serve the request with ``request.remote`` set to the client behind a trusted proxy (module doc), and
    without a zone id on a socket peer's IPv6 address."""
    proxies = request.app[TRUSTED_PROXIES_KEY]
    peer = request.remote
    client = proxies.client(peer, request.headers.getall("X-Forwarded-For", ())) if proxies.networks else peer
    bare = peer_text(peer)
    if client is not None and client != peer:
        request = request.clone(remote=client)
        request[VIA_PROXY] = bare or "unknown address"
    elif bare is not None and bare != peer:  # only a peer with a zone id; the rest is served as it came
        request = request.clone(remote=bare)
    return await handler(request)
