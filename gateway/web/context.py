"""Per-application state shared by the handlers, and small request helpers (request bodies:
gateway.web.bodies)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from aiohttp import web

from gateway.web.accept import gzip_allowed
from gateway.web.auth import AdminToken
from gateway.web.errors import Unavailable
from gateway.web.hosts import HostAllowlist
from gateway.web.views import FleetAdmin, FleetSource


@dataclass(frozen=True)
class WebContext:
    """Everything the handlers read; built once by :func:`gateway.web.app.build_app`."""

    fleet: FleetSource
    admin: FleetAdmin | None
    policy: Mapping[str, Any]
    metrics_registry: Any | None
    token: AdminToken
    health_checks: tuple[Callable[[], Sequence[str]], ...]
    clock: Callable[[], float]
    max_body_bytes: int
    body_timeout_s: float
    hosts: HostAllowlist
    ble_enabled: bool | None = None  # [ble] enabled of the gateway; None when not known (no gateway)
    # The health checks report every link themselves (the gateway's own): /healthz derives none from link_state
    links_in_health_checks: bool = False

    def now(self) -> int:
        """Current unix seconds from the app's clock."""
        return int(self.clock())

    def known_fields(self) -> set[str]:
        """All measurement fields of all kinds in the policy."""
        return {f for spec in self.policy.get("kinds", {}).values() for f in spec.get("fields", {})}

    def require_admin(self) -> FleetAdmin:
        """The admin backend, or 503 when the gateway mounted the app without a registry."""
        if self.admin is None:
            raise Unavailable("admin API has no device registry attached", code="no_registry")
        return self.admin


CONTEXT_KEY = web.AppKey("civicedge_web_context", WebContext)


def ctx_of(request: web.Request) -> WebContext:
    """The :class:`WebContext` of the app serving ``request``."""
    return request.app[CONTEXT_KEY]


# JSON bodies from this size on are compressed for a client that accepts it (the dashboard's 600-device
# answer every 30 s: ~196 KB as text); smaller ones would gain less than the compression costs.
COMPRESS_MIN_BYTES = 1024


class _JsonResponse(web.Response):
    """A JSON answer that decides its compression when it is sent, with the request at hand."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        """Compress with gzip, named explicitly, only when ``Accept-Encoding`` allows it by q-value
        (:func:`gateway.web.accept.gzip_allowed`): aiohttp's own choice, left to it, looks for the
        substring ``gzip`` and so sent gzip to ``gzip;q=0``."""
        if gzip_allowed(request.headers.get("Accept-Encoding", "")):
            self.enable_compression(web.ContentCoding.gzip)
        return await super().prepare(request)


def json_response(data: Any, *, status: int = 200, content_type: str = "application/json") -> web.Response:
    """A JSON response with compact separators and an explicit content type.

    A body of :data:`COMPRESS_MIN_BYTES` or more is sent gzip-compressed when the request's
    ``Accept-Encoding`` allows it by q-value (decided when the response is sent, by the parser of every
    negotiating endpoint, gateway.web.accept), with ``Vary: Accept-Encoding`` so a cache keeps the two
    forms apart.
    """
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) < COMPRESS_MIN_BYTES:
        return web.Response(body=body, status=status, content_type=content_type, charset="utf-8")
    response = _JsonResponse(body=body, status=status, content_type=content_type, charset="utf-8")
    response.headers["Vary"] = "Accept-Encoding"
    return response


def etag_matches(request: web.Request, etag: str) -> bool:
    """``If-None-Match`` lists ``etag`` (weak comparison, RFC 9110 13.1.2) or is ``*``: answer 304."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    wanted = etag.removeprefix("W/")
    return any(t.strip() == "*" or t.strip().removeprefix("W/") == wanted for t in header.split(","))
