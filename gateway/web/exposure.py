"""What an ``[http] listen`` address other machines can reach serves to them without a token.

The gateway serves plain HTTP, and only ``/api/admin/`` asks for a token: the operators' read API
(per-device readings, ``last_seen``, link addresses, alarms), the dashboard, ``/metrics`` and
``/healthz`` answer anyone who reaches the port. docs/api.md ("Public paths") has the public reach
the gateway through a reverse proxy that forwards only :data:`PUBLIC` to a gateway listening on
127.0.0.1. A listen address beyond loopback is warned about (at start and by ``run --check``), not
refused: a city may firewall the port to its operators' network (docs/gateway.md, "Scraping from a
central Prometheus").
"""

from __future__ import annotations

import ipaddress
import socket

from gateway.web.hosts import host_port
from gateway.web.pages import PUBLIC_PATHS as PUBLIC  # what the city publishes

ADMIN_PREFIX = "/api/admin/"
# Every other route answers without a token (a test checks it against the app's routes): the read API
# (gateway.web.read_api, gateway.routes.web), then the dashboard page and the operations endpoints.
OPERATOR_READS = ("/api/devices", "/api/devices/{id}", "/api/readings", "/api/aggregates/hourly", "/api/alarms",
                  "/api/dashboard", "/api/routes/plan")
OPERATOR_PAGES = ("/", "/static/", "/openapi.json", "/metrics", "/healthz")


def loopback_only(listen: str) -> bool:
    """True if ``[http] listen`` is reachable from this machine only: a loopback address (also an
    IPv4-mapped one, ``::ffff:127.0.0.1``) or a name that resolves to loopback addresses only. A
    wildcard (``0.0.0.0``, ``::``), any other address and a name that does not resolve are not."""
    try:
        return _is_loopback(listen)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(listen, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(_is_loopback(str(info[4][0])) for info in infos)


def _is_loopback(address: str) -> bool:
    """``address`` (an IP literal, maybe with an IPv6 ``%scope``) is loopback; ValueError for a name."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _unguarded() -> str:
    """The routes anyone reaching the port reads without a token, in words."""
    return ("%s (per-device readings with their receive times, last_seen, link addresses, alarms), the dashboard "
            "%s, %s and %s" % (", ".join(OPERATOR_READS), OPERATOR_PAGES[0], ", ".join(OPERATOR_PAGES[1:-1]),
                               OPERATOR_PAGES[-1]))


def _remedy() -> str:
    """What to do instead, in words."""
    return ("listen on 127.0.0.1 behind a TLS reverse proxy that forwards only %s and %s (docs/api.md, \"Public paths\"; "
            "docs/gateway.md, \"Running as a service\"), or firewall the port so only the operators' machines "
            "reach it" % (", ".join(PUBLIC[:-1]), PUBLIC[-1]))


def exposure_warning(listen: str, port: int, *, admin_token: bool) -> str | None:
    """The warning for an ``[http] listen`` other machines can reach, or None when it is loopback only.

    Args:
        listen: ``[http] listen``.
        port: the port served (the bound one at start, ``[http] port`` for ``run --check``).
        admin_token: an ``[http] admin_token_file`` is configured (the admin API is on).
    """
    if loopback_only(listen):
        return None
    where = host_port(listen, port)
    if admin_token:
        # Kept as it began before (operators grep for it): the token's own exposure, then what it does not guard.
        return ("the admin API is served over plain HTTP on %s, which other machines can reach: the admin token "
                "and admin calls cross the network unencrypted; the token guards only %s: %s answer anyone who "
                "reaches the port, without it; %s" % (where, ADMIN_PREFIX, _unguarded(), _remedy()))
    return ("HTTP on %s can be reached from other machines ([http] listen = \"%s\" is not a loopback address) and "
            "serves the operators' data to anyone there, without a token: %s; only %s are meant for the public "
            "(an admin token would not change this: it guards %s only, and none is set, so the admin API is off); "
            "%s" % (where, listen, _unguarded(), ", ".join(PUBLIC), ADMIN_PREFIX, _remedy()))
