"""aiohttp application of the gateway's web surface.

Mounting (done by the gateway service; see docs/api.md)::

    app = create_app(store=queries, registry=registry, policy=load_policy(),
                     metrics_registry=metrics.registry, admin_token=token)
    server = await start_http(app, host=cfg.http.listen, port=cfg.http.port)
    ...
    await server.stop()
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import GatewayError
from gateway.log_limit import LogLimiter, more_since
from gateway.web import admin_api, opendata, pages, read_api
from gateway.web.auth import AdminToken
from gateway.web.bodies import check_body_headers
from gateway.web.connlimit import DEFAULT_MAX_CONNECTIONS, CappedSite, connection_cap, raise_fd_limit
from gateway.web.context import CONTEXT_KEY, WebContext
from gateway.web.errors import BadParameter, WebError
from gateway.web.forwarded import TRUSTED_PROXIES_KEY, forwarded_client
from gateway.web.hosts import HostAllowlist
from gateway.web.logsafe import shown_path
from gateway.web.proxies import TrustedProxies
from gateway.web.retention import RetentionSettings
from gateway.web.views import FleetAdmin, FleetSource

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 15.0
HealthCheck = Callable[[], Sequence[str]]
# Lines an unauthenticated client can cause (refused Host, failures): at most one per interval each.
REQUEST_LOG_EVERY_S = 10.0


class _RequestLogLimits:
    """Per-app rate limits of the log lines about requests (see :data:`REQUEST_LOG_EVERY_S`)."""

    def __init__(self) -> None:
        self.refused_host = LogLimiter(REQUEST_LOG_EVERY_S, time.monotonic)
        self.failed = LogLimiter(REQUEST_LOG_EVERY_S, time.monotonic)
        self.backend = LogLimiter(REQUEST_LOG_EVERY_S, time.monotonic)
        self.defect = LogLimiter(REQUEST_LOG_EVERY_S, time.monotonic)


LOG_LIMITS_KEY = web.AppKey("log_limits", _RequestLogLimits)


class _WithoutRequestBytes(logging.Filter):
    """aiohttp logs a request it cannot parse (line or header too long, too many headers, bad
    syntax) at ERROR with a traceback that quotes the offending bytes, which may be a token in a
    header or URL. Keep one INFO line saying who and what kind of error, never the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "refused a malformed HTTP request from %s: %s (HTTP %s)", (
                peer, type(exc).__name__, exc.code)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# The server logger aiohttp is given (handler_args below): parse errors through the filter above.
http_logger = logging.getLogger("gateway.web.http")
http_logger.addFilter(_WithoutRequestBytes())


def _json_error(err: WebError) -> web.Response:
    return web.json_response(err.to_json(), status=err.status, headers=err.headers())


def _reject_repeated(query: Any) -> None:
    """No endpoint takes a parameter twice; which copy would apply is not obvious, so refuse it."""
    if len(query) != len(set(query)):
        name = next(k for k in query if len(query.getall(k)) > 1)
        raise BadParameter(f"parameter '{name}' is given {len(query.getall(name))} times; give it once",
                           param=name)


def _answer_started(request: web.Request) -> bool:
    """True once a streamed answer sent bytes (its status line at least)."""
    writer = request.writer
    return writer is not None and writer.output_size > 0


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn WebErrors, aiohttp's own HTTP errors (404 no route, 405 wrong method, ...) and defects (500) into JSON bodies."""
    ctx: WebContext = request.app[CONTEXT_KEY]
    try:
        if not _is_admin(request) and request.match_info.http_exception is None:
            # A body the API would not take, refused from its headers before a byte is read (413, 415); after
            # routing (404, 405 come first, as on admin paths). Under /api/admin/ the handlers check the
            # token first, then the query, then this (admin_api._authorize).
            check_body_headers(request, ctx.max_body_bytes)
            if not pages.query_ignored(request.path):
                _reject_repeated(request.query)
        return await handler(request)
    except WebError as err:
        if err.status >= 500:
            skipped = request.app[LOG_LIMITS_KEY].failed.allow()
            if skipped is not None:
                logger.error("%s %s failed: %s%s", request.method, shown_path(request), err.code,
                             more_since(skipped, "failed requests"))
        return _json_error(err)
    except GatewayError as err:
        # Storage or registry trouble: tell the client it is temporary, keep details in the log.
        skipped = request.app[LOG_LIMITS_KEY].backend.allow()
        if skipped is not None:
            # SQLite's own words ("database disk image is malformed (SQLITE_CORRUPT)"): library text, never
            # a stored value or a key, and what tells a damaged file from a busy one.
            sqlite = getattr(err, "sqlite", None)
            logger.error("%s %s failed: %s (%s%s)%s", request.method, shown_path(request), type(err).__name__,
                         err.reason, "" if sqlite is None else ": SQLite: %s" % sqlite,
                         more_since(skipped, "requests failed on the backend"))
        return web.json_response(
            {"error": {"code": "backend_unavailable", "message": f"gateway backend unavailable ({err.reason})"}},
            status=503,
        )
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(
            {"error": {"code": "body_too_large", "message": f"request body exceeds {ctx.max_body_bytes} bytes"}},
            status=413,
        )
    except web.HTTPException as exc:
        if exc.status >= 400:  # on every path: /healthz, /metrics and the pages answer like /api
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            if isinstance(exc, web.HTTPMethodNotAllowed):
                # One format on every path ("GET, HEAD", as the preflight's); on open data OPTIONS is
                # answered too (CORS preflight): say so, as the preflight does.
                headers = {"Allow": _open_data_allow(exc.allowed_methods) if _is_open_data(request)
                           else ", ".join(sorted(exc.allowed_methods))}
            return web.json_response(
                {"error": {"code": exc.reason.lower().replace(" ", "_"), "message": _http_error_message(request, exc)}},
                status=exc.status, headers=headers,
            )
        raise
    except (ConnectionResetError, ConnectionAbortedError):
        raise  # the client hung up, or a streamed answer was cut off on purpose: nobody to answer
    except Exception:  # a defect: answer JSON like every other error, keep the traceback in the log
        skipped = request.app[LOG_LIMITS_KEY].defect.allow()
        if skipped is not None:
            logger.exception("%s %s failed unexpectedly%s", request.method, shown_path(request),
                             more_since(skipped, "unexpected failures"))
        if _answer_started(request):
            raise  # a second answer would land inside the first one's body: aiohttp drops the connection
        return web.json_response(
            {"error": {"code": "internal", "message": "the request failed unexpectedly; the gateway log has the details"}},
            status=500,
        )


@web.middleware
async def _allowed_hosts(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse a Host header that does not name this gateway (DNS rebinding; see gateway.web.hosts)."""
    host = request.headers.get("Host")
    if request.app[CONTEXT_KEY].hosts.allows(host):
        return await handler(request)
    shown = (host or "")[:100]
    skipped = request.app[LOG_LIMITS_KEY].refused_host.allow()
    if skipped is not None:
        logger.info("refused %s %s for Host %r (not in [http] allowed_hosts)%s", request.method[:16],
                    shown_path(request), shown, more_since(skipped, "refused Host headers"))
    return web.json_response(
        {"error": {"code": "host_not_allowed",
                   "message": f"this gateway does not answer to Host {shown!r}; if it should, add the name to"
                              " [http] allowed_hosts in the gateway config (key http.allowed_hosts)"}},
        status=400,
    )


def _is_admin(request: web.BaseRequest) -> bool:
    """Under ``/api/admin``: the handlers check the token before anything about the query or body."""
    return request.path == "/api/admin" or request.path.startswith("/api/admin/")


def _http_error_message(request: web.BaseRequest, exc: web.HTTPException) -> str:
    """The ``message`` of an aiohttp HTTP error (no route, wrong method, ...): what to do instead."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = _open_data_allow(exc.allowed_methods) if _is_open_data(request) else ", ".join(
            sorted(exc.allowed_methods))
        return f"method {request.method[:16]!r} is not allowed on this path; allowed: {allowed}"
    if isinstance(exc, web.HTTPNotFound) and exc.text == "404: Not Found":
        return "nothing is served at this path (/openapi.json lists the API's paths)"
    return exc.text or exc.reason


async def _expect_continue(request: web.Request) -> None:
    """``Expect`` of a routed request. aiohttp's own handler sent ``100 Continue`` before any check and
    answered any other expectation with a ``text/plain`` 417 before the middlewares ran (no JSON, no Host
    check). Here ``100 Continue`` goes out only when the body will be read: not to an admin call without
    the token, a refused ``Host`` or a body the headers already refuse (413, 415), whose final JSON answer
    then comes without the body being sent. Any other expectation is ignored, as RFC 9110 10.1.1 allows:
    the request is answered as without it."""
    if request.version != HttpVersion11 or request.headers.get("Expect", "").strip().lower() != "100-continue":
        return None
    ctx: WebContext = request.app[CONTEXT_KEY]
    if not ctx.hosts.allows(request.headers.get("Host")) or (_is_admin(request) and not ctx.token.accepts(request)):
        request[CONTINUE_WITHHELD] = True
        return None
    try:
        check_body_headers(request, ctx.max_body_bytes)
    except WebError:
        request[CONTINUE_WITHHELD] = True
        return None
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # (as aiohttp's handler) the answer itself has not started
    return None


# Set on a request answered without 100 Continue: its body may still follow (a client may send it after
# waiting) or never come; either way the connection is out of step after the answer, so the answer closes
# it (``Connection: close``, RFC 9110 10.1.1) instead of the next request's bytes being read as this body.
CONTINUE_WITHHELD = web.RequestKey("civicedge.continue_withheld", bool)


def _with_expect_handler(routes: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """``routes`` with :func:`_expect_continue` as the ``Expect`` handler of each route definition
    (a route that names its own keeps it)."""
    return [web.RouteDef(d.method, d.path, d.handler, {"expect_handler": _expect_continue, **d.kwargs})
            if isinstance(d, web.RouteDef) else d for d in routes]


def _is_open_data(request: web.BaseRequest) -> bool:
    return request.path == "/opendata" or request.path.startswith("/opendata/")


# Methods of every open-data path: its routes' GET (and the HEAD aiohttp adds), and the CORS
# preflight answered by _cors_preflight.
OPEN_DATA_METHODS = ("GET", "HEAD", "OPTIONS")
# Response headers of open data a cross-origin script may read (Access-Control-Expose-Headers).
OPEN_DATA_EXPOSED_HEADERS = "ETag, Link, Content-Disposition, Last-Modified"


def _open_data_allow(route_methods: Iterable[str] = ()) -> str:
    """The ``Allow`` value of an open-data path: its routes' methods and OPTIONS, sorted."""
    return ", ".join(sorted(set(route_methods) | set(OPEN_DATA_METHODS)))


@web.middleware
async def _cors_preflight(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if (_is_open_data(request) and request.method == "OPTIONS"
            and not isinstance(request.match_info.http_exception, web.HTTPNotFound)):
        # (A path with no resource is 404 to OPTIONS as to GET.)
        # A browser's CORS preflight: open data may be read from any site (maps, notebooks).
        # The same method list as a 405 there ("Allow", see _errors_middleware).
        methods = _open_data_allow()
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": methods, "Allow": methods,
            # If-None-Match: a page revalidating with the ETag it was given (a CORS-unsafe header).
            "Access-Control-Allow-Headers": "Accept, If-None-Match",
            "Access-Control-Max-Age": "86400"})
    return await handler(request)


async def _security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Headers on every response, set as it is prepared (so streamed bodies and errors carry them too)."""
    if request.get(CONTINUE_WITHHELD):
        # The headers are already computed when this hook runs: say it, and have the server close after.
        response.force_close()
        response.headers["Connection"] = "close"
    if _is_open_data(request):
        # Public data without credentials: any origin may read it (no cookies or tokens are involved).
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        # A script on another site sees only the CORS-safelisted headers unless these are named:
        # the validators it revalidates with, the licence and the CSV's file name.
        response.headers.setdefault("Access-Control-Expose-Headers", OPEN_DATA_EXPOSED_HEADERS)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    # aiohttp's default names Python's and aiohttp's exact versions: a scanner's shortcut to known flaws.
    response.headers["Server"] = "civicedge"
    # No page of the gateway may be framed (clickjacking the admin forms); X-Frame-Options for
    # browsers without CSP frame-ancestors.
    response.headers.setdefault("X-Frame-Options", "DENY")
    # Everything is served from this gateway: no CDN, no tiles, no third-party scripts.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self';"
        " frame-ancestors 'none'",
    )


def build_app(
    *,
    fleet: FleetSource,
    admin: FleetAdmin | None,
    policy: Mapping[str, Any],
    metrics_registry: Any | None,
    admin_token: str | None,
    health_checks: Iterable[HealthCheck] = (),
    extra_routes: Iterable[web.AbstractRouteDef] = (),
    clock: Callable[[], float] = time.time,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S,
    allowed_hosts: Iterable[str] = (),
    open_data: opendata.OpenDataMeta | None = None,
    admin_token_file: Path | None = None,
    ble_enabled: bool | None = None,
    trusted_proxies: Iterable[str] = (),
    links_in_health_checks: bool = False,
    admin_networks: Iterable[str] = (),
) -> web.Application:
    """Build the application over already-adapted data sources (see :func:`create_app`).

    Args:
        fleet: read access to devices, readings and aggregates.
        admin: registry changes for the admin API, or None to answer admin calls with 503.
        policy: the privacy policy dict (``firmware/policy.json``).
        metrics_registry: the gateway's ``prometheus_client.CollectorRegistry`` (None: /metrics 503).
        admin_token: the admin bearer token, or None to refuse every admin call.
        admin_token_file: the file ``admin_token`` was read from: a usable token written there later
            replaces it without a restart (:class:`gateway.web.auth.AdminToken`).
        health_checks: callables returning degradation reasons (empty list = healthy).
        extra_routes: more route definitions to mount (e.g. the collection-plan endpoint).
        clock: unix-seconds clock (tests pass a fixed one).
        max_body_bytes: request body limit; larger bodies get 413.
        body_timeout_s: time a client has to send its request body.
        keepalive_timeout_s: idle keep-alive connections are closed after this.
        allowed_hosts: host names served besides IP literals, ``localhost`` and this machine's
            own names (``[http] allowed_hosts``); other ``Host`` headers get 400 ``host_not_allowed``.
        open_data: licence and publisher of the open data (``[opendata]``); both "not set" when None.
        ble_enabled: whether the gateway runs a BLE link (``[ble] enabled``); when False ``/healthz``
            says ``"ble": "disabled"`` instead of a ``ble_connected`` count. None: not known.
        trusted_proxies: addresses or networks of reverse proxies whose ``X-Forwarded-For`` names the
            client (``[http] trusted_proxies``, gateway.web.forwarded); a bad entry raises ValueError.
        links_in_health_checks: ``health_checks`` report every link (the gateway's own check, which
            knows BLE's first scan is no outage): ``/healthz`` derives no link problem from
            ``civicedge_link_state``. False: a link whose state is 0 is reported as down.
        admin_networks: networks whose clients the admin throttle's global budget never refuses (``[http]
            admin_networks``, gateway.web.admin_throttle); a bad entry raises ValueError.
    """
    proxies = TrustedProxies(trusted_proxies)
    ctx = WebContext(
        fleet=fleet, admin=admin, policy=policy, metrics_registry=metrics_registry,
        token=AdminToken(admin_token, path=admin_token_file, admin_networks=admin_networks),
        health_checks=tuple(health_checks), clock=clock,
        max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s, hosts=HostAllowlist(allowed_hosts),
        ble_enabled=ble_enabled, links_in_health_checks=links_in_health_checks,
    )
    # Connection limits travel with the app (handler_args override the runner's arguments), so
    # they hold under any AppRunner: idle keep-alive closed, small header limits, no access log
    # (a request line could carry a mistyped token).
    handler_args = {"keepalive_timeout": keepalive_timeout_s, "max_line_size": 4096, "max_field_size": 4096,
                    "max_headers": 64, "access_log": None, "logger": http_logger,
                    # Bodies are decoded by gateway.web.bodies: aiohttp's parser refused a br or zstd body
                    # with a plain-text 400 before any gateway code (the token check included) ran.
                    "auto_decompress": False}
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[forwarded_client, _allowed_hosts, _cors_preflight, _errors_middleware],
        handler_args=handler_args,
    )
    app[CONTEXT_KEY] = ctx
    app[TRUSTED_PROXIES_KEY] = proxies
    app[LOG_LIMITS_KEY] = _RequestLogLimits()
    app[opendata.OPEN_DATA_META_KEY] = open_data or opendata.OpenDataMeta()
    app.on_response_prepare.append(_security_headers)
    for routes in (pages.ROUTES, read_api.ROUTES, admin_api.ROUTES, opendata.ROUTES, extra_routes):
        app.add_routes(_with_expect_handler(routes))
    app.router.add_static("/static", pages.STATIC_DIR, name="static", append_version=False)
    opendata.warn_unpublished(policy)  # a kind of the policy open data cannot carry: said at start
    logger.info("web app built (admin API %s)", "enabled" if ctx.token.configured else "disabled")
    return app


def create_app(
    *,
    store: Any,
    registry: Any | None,
    policy: Mapping[str, Any],
    metrics_registry: Any | None,
    admin_token: str | None,
    retention: RetentionSettings | None = None,
    health_checks: Iterable[HealthCheck] = (),
    extra_routes: Iterable[web.AbstractRouteDef] = (),
    clock: Callable[[], float] = time.time,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S,
    allowed_hosts: Iterable[str] = (),
    open_data: opendata.OpenDataMeta | None = None,
    admin_token_file: Path | None = None,
    ble_enabled: bool | None = None,
    save_meta: Callable[[str, str], Awaitable[object]] | None = None,
    trusted_proxies: Iterable[str] = (),
    links_in_health_checks: bool = False,
    admin_networks: Iterable[str] = (),
    store_batch_ms: int = 50,
    ingest_settled: Callable[[str], Awaitable[None]] | None = None,
) -> web.Application:
    """Build the web application over the gateway's storage read API and device registry.

    Args:
        store: the gateway's storage read API (``gateway.storage.ReportQueries``); the app reads it
            on its own worker threads (one SQLite connection each), never on the event loop.
        registry: the gateway's device registry (``gateway.registry.Registry``), or None.
        policy: the privacy policy dict.
        metrics_registry: the gateway's prometheus ``CollectorRegistry``.
        admin_token: admin bearer token (from the ``[http]`` admin token file), or None.
        admin_token_file: that file: a new usable token written there replaces the old one while
            the gateway runs (an unusable one keeps the old one, with an ERROR and a ``/healthz`` reason).
        retention: retention settings the admin API changes; pass the same object to the
            gateway's retention task (``retention.effective()``). In-memory when None.
        health_checks: callables returning degradation reasons for ``/healthz``.
        extra_routes: extra route definitions (``gateway.routes.web.routes_handlers(...)``).
        clock: unix-seconds clock.
        max_body_bytes: request body limit (413 above).
        body_timeout_s: time a client has to send its request body (408 after).
        keepalive_timeout_s: idle keep-alive connections are closed after this.
        allowed_hosts: host names served besides IP literals, ``localhost`` and this machine's
            own names (``[http] allowed_hosts``).
        open_data: licence and publisher of the open data (``[opendata]`` of the config); both
            "not set" when None.
        ble_enabled: ``[ble] enabled`` of the gateway (False: ``/healthz`` says BLE is disabled).
        save_meta: writes a row of the store's ``meta`` table through the store's writer (the gateway's
            ``ReportStore.save_meta`` on its store thread): what the public open data published is
            kept there across restarts. None: in memory only.
        trusted_proxies: reverse proxies whose ``X-Forwarded-For`` names the client
            (``[http] trusted_proxies``).
        links_in_health_checks: ``health_checks`` report every link themselves (see :func:`build_app`).
        admin_networks: networks whose clients the admin throttle's global budget never refuses
            (``[http] admin_networks``).
        store_batch_ms: the gateway's ``[storage] batch_ms`` (its writer commits what it accepted within it):
            the admin API's device removal waits it, and a margin, before checking the store again (when
            ``ingest_settled`` is None).
        ingest_settled: the gateway's ``IngestService.settled``: the admin API's device removal waits on it
            (on this event loop, bounded) until every report of the device accepted before it was retired is
            committed, however long the writer's backlog, instead of a timed wait. Given, ``create_app`` must be
            called on the running loop.

    Returns:
        The aiohttp application; serve it with :func:`start_http`.
    """
    from gateway.web.source import RegistryAdmin, StoreFleetSource

    fleet = StoreFleetSource(store=store, registry=registry, policy=policy, clock=clock, save_meta=save_meta)
    # The store's file, which a device removal checks (a store object without one: removal answers 503 no_store).
    store_path = getattr(store, "db_path", None)
    admin = (RegistryAdmin(registry=registry, policy=policy, retention=retention,
                           store_path=Path(store_path) if store_path is not None else None,
                           store_batch_ms=store_batch_ms, ingest_settled=ingest_settled)
             if registry is not None else None)
    app = build_app(
        fleet=fleet, admin=admin, policy=policy, metrics_registry=metrics_registry,
        admin_token=admin_token, admin_token_file=admin_token_file, health_checks=health_checks,
        extra_routes=extra_routes, clock=clock,
        max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s, keepalive_timeout_s=keepalive_timeout_s,
        allowed_hosts=allowed_hosts, open_data=open_data, ble_enabled=ble_enabled,
        trusted_proxies=trusted_proxies, links_in_health_checks=links_in_health_checks,
        admin_networks=admin_networks,
    )

    async def stop_store_reads(_app: web.Application) -> None:
        await fleet.aclose()

    app.on_cleanup.append(stop_store_reads)
    return app


@dataclass
class HttpServer:
    """A running HTTP server; :meth:`stop` closes the listener and open connections."""

    runner: web.AppRunner
    host: str
    port: int
    site: CappedSite | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving and release the port."""
        await self.runner.cleanup()


async def start_http(
    app: web.Application, *, host: str, port: int, shutdown_timeout_s: float = 5.0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> HttpServer:
    """Serve ``app`` on ``host:port`` (port 0 picks a free port) and return the running server.

    The app's connection limits apply (see :func:`build_app`); request bodies must arrive within
    the app's ``body_timeout_s``. The soft open-file limit is raised as far as the connections need, and at most
    ``max_connections`` connections are served at once, fewer if the open-file limit leaves less room
    (see :mod:`gateway.web.connlimit`): above that the connection idle the longest, else the one whose
    client stopped reading its answer the longest ago, is closed, or the new one gets 503. A connection
    whose client acknowledges no byte of its answer for ``connlimit.STALL_TIMEOUT_S`` is closed.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    cap = connection_cap(max_connections, raise_fd_limit(max_connections))
    site = CappedSite(runner, host, port, max_connections=cap)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    logger.info("http listening on %s:%s (at most %d connections)", host, site.port, site.max_connections)
    return HttpServer(runner=runner, host=host, port=site.port, site=site)
