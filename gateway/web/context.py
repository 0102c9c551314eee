"""Per-application state shared by the handlers, and small request helpers."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from gateway.web.accept import gzip_allowed
from gateway.web.auth import AdminToken
from gateway.web.errors import BadParameter, RequestTimeout, Unavailable, WebError
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


BODY_ENCODINGS = ("gzip", "deflate")
"""``Content-Encoding`` values of a request body the API decodes (aiohttp does, as the body arrives)."""


class UnsupportedEncoding(WebError):
    """The request body is sent in a ``Content-Encoding`` the API does not decode (415, RFC 9110 15.5.16)."""

    status = 415
    default_code = "unsupported_encoding"

    def headers(self) -> dict[str, str]:
        """``Accept-Encoding`` naming the codings a body may use, as RFC 9110 asks of this answer."""
        return {"Accept-Encoding": ", ".join(BODY_ENCODINGS)}


def _body_encoding(request: web.Request) -> str | None:
    """The body's one content coding (``gzip``/``deflate``), None for none (``identity``), else 415.

    aiohttp passes a body in a coding it does not know (``Content-Encoding: bogus``, a list such as
    ``gzip, gzip``, or two such headers) through undecoded: refused here so it is never parsed as
    the plain JSON it is not.
    """
    values = request.headers.getall("Content-Encoding", [])
    if not values:
        return None
    coding = values[0].strip().lower() if len(values) == 1 else ""
    if coding == "identity":
        return None
    if coding not in BODY_ENCODINGS:
        shown = ", ".join(values)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        raise UnsupportedEncoding(f"request body Content-Encoding '{shown}' is not supported; send the body "
                                  f"plain or in one of: {', '.join(BODY_ENCODINGS)}", param="Content-Encoding")
    return coding


class _UnreadableBody(BadParameter):
    """A body aiohttp could not decode or frame (400); its connection is closed after the answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="body")

    def headers(self) -> dict[str, str]:
        """``Connection: close``: the rest of the connection cannot be parsed."""
        return {"Connection": "close"}


async def _read_body(request: web.Request) -> bytes:
    """The whole (decoded) body within the app's time limit; 400 when it cannot be decoded."""
    ctx = ctx_of(request)
    coding = _body_encoding(request)
    try:
        async with asyncio.timeout(ctx.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {ctx.body_timeout_s} s") from None
    except RequestPayloadError as exc:
        # aiohttp's parser stopped at the bad bytes: the stream is done (else aiohttp reads it again after
        # the answer and logs the error at ERROR with three tracebacks) and the connection carries no
        # further request, so it is closed after the answer.
        request.content.feed_eof()
        request.protocol.close()
        if isinstance(exc.__cause__, ContentEncodingError):
            raise _UnreadableBody(f"request body is not valid {coding} (Content-Encoding: {coding})") from None
        # Malformed chunked framing and the like: the client's bytes, not a gateway defect.
        raise _UnreadableBody(f"request body could not be read: {exc}".strip()) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict, refusing a key given twice: which copy would apply is not
    obvious (Python's parser keeps the last), so ``{"kind": "bin", "kind": "streetlight"}`` is 400."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise BadParameter(f"request body gives key '{shown}' more than once; give it once", param=shown)
        seen[key] = value
    return seen


async def read_json_body(request: web.Request) -> Any:
    """Read and parse a JSON request body within the app's size and time limits.

    Raises:
        BadParameter: empty body, not JSON, a key given twice in an object, or a gzip/deflate body
            that does not decode (400).
        UnsupportedEncoding: a ``Content-Encoding`` other than gzip, deflate or identity (415).
        RequestTimeout: the body did not arrive within ``body_timeout_s`` (408).
    """
    raw = await _read_body(request)
    if not raw:
        raise BadParameter("request body is empty; JSON expected", param="body")
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadParameter(f"request body is not valid JSON: {exc}", param="body") from None
    except RecursionError:
        # Deep nesting ("[" * 20000) fits under the size cap but exhausts the parser's recursion limit.
        raise BadParameter("request body is nested too deeply to be a valid request", param="body") from None


# JSON's whitespace (RFC 8259) around an empty object or null: what generic clients send as "no data"
_EMPTY_JSON = re.compile(rb"[ \t\n\r]*(?:\{[ \t\n\r]*\}|null)[ \t\n\r]*")


async def require_no_body(request: web.Request) -> None:
    """Refuse (400) a body sent to an endpoint that takes none, before it acts.

    A caller sending ``{"dry_run": true}`` to ``/revoke`` meant something the endpoint does not do;
    acting anyway could be irreversible. No body is fine: an empty one (``Content-Length: 0``), and the
    empty JSON object ``{}`` or ``null`` (whitespace around them too), which generic clients send for
    "no data" (``requests.post(url, json={})``, axios).
    """
    if not request.body_exists:
        return
    raw = await _read_body(request)
    if raw and _EMPTY_JSON.fullmatch(raw) is None:
        raise BadParameter(f"{request.method} {request.path} takes no request body; got {len(raw)} bytes "
                           "(nothing was changed; send none, {} or null)", param="body")


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
