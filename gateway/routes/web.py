"""HTTP surface of collection planning: ``GET /api/routes/plan`` for the gateway's web app.

Mount it next to the other API routes::

    from gateway.routes.web import routes_for_gateway
    app = create_app(..., extra_routes=routes_for_gateway(cfg, registry))   # [routes] of gateway.toml

Query parameters (all optional): ``date`` (YYYY-MM-DD, today, tomorrow; default today),
``format`` (json, geojson, csv; default json), ``depot`` (LAT,LON), ``vehicles`` (at most 200),
``capacity`` (litres, 100 to 1 000 000), ``threshold`` (0.8 or 80%); dates from 2000-01-01 to
2099-12-31. Errors answer ``{"error": {"code", "message", ...}}`` with 400 (bad input, bad matrix
file), 422 (capacity smaller than one bin), 503 (``bin_data``: bin data unreadable;
``solver_unavailable``: OR-Tools or numpy cannot be imported: the 'routes' extra is not installed, or no wheel for this platform) or 500 (``solver``: no
solution; ``internal``: a defect, logged with its traceback), 503 with Retry-After (``busy``;
``planning_timeout``; ``planner_restarted``: the worker died; ``planner_stopped``: shutting down) or
429 with Retry-After (``too_many_plans``: one uncached plan per client at a time, and at most
:data:`CLIENT_PLANS_PER_WINDOW` per :data:`CLIENT_WINDOW_S`). No bins due is not an error: 200 with an empty plan and a ``notice``. Plans
are solved one at a time in a worker process (:mod:`gateway.routes.worker`), so the gateway keeps
serving meanwhile, and cached per query and registry state for ``cache_s`` real seconds (also under
``[sim_clock]``, like the per-client limit).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
import os
import threading
import time as _time
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.registry import Registry
from gateway.routes.config import PlanDefaults, load_plan_defaults
from gateway.routes.errors import CapacityError, InvalidInputError, RoutesError
from gateway.routes.model import Plan
from gateway.routes.outputs import FORMATS, Timing, plan_to_dict, plan_to_geojson, render
from gateway.routes.parsing import (
    MAX_CAPACITY_L,
    MAX_VEHICLES,
    MIN_CAPACITY_L,
    parse_date,
    parse_depot,
    parse_litres,
    parse_positive,
    parse_threshold,
)
from gateway.routes.planner import PlanSettings
from gateway.routes.solver import ORTOOLS_PACKAGE
from gateway.routes.source import BinSource, GatewayBinSource
from gateway.routes.worker import PlannerStopped, PlannerTimeout, SolverProcess, shared_solver

__all__ = ["CLIENT_PLANS_PER_WINDOW", "CLIENT_WINDOW_S", "MAX_QUEUED", "client_address", "PLAN_PARAMS", "PLAN_PATH", "PlanDefaults", "PlanRoutes", "routes_for_gateway",
           "routes_handlers"]

logger = logging.getLogger(__name__)

PLAN_PATH = "/api/routes/plan"
#: Query parameters the endpoint accepts (any other is refused with 400).
PLAN_PARAMS = frozenset({"date", "format", "depot", "vehicles", "capacity", "threshold"})


class _UnknownParameter(InvalidInputError):
    """A query parameter the endpoint does not take; ``param`` is its name (``field`` says what it is)."""

    def __init__(self, name: str) -> None:
        super().__init__("query parameter", name, "unknown; allowed: " + ", ".join(sorted(PLAN_PARAMS)))
        self.param = name


def _round_fields(settings: PlanSettings | None) -> dict[str, str]:
    """``date`` and ``round_start`` of the plan asked for, once the query was understood: the dashboard
    uses them to tell whether today's round has started even when planning it failed."""
    if settings is None:
        return {}
    return {"date": settings.day.isoformat(), "round_start": settings.round_start.isoformat()}


def _error(exc: RoutesError, settings: PlanSettings | None = None) -> web.Response:
    """The API's error answer ``{"error": {"code", "message", "param", ...}}`` for a planning error."""
    body = exc.to_dict()
    for key, value in _round_fields(settings).items():
        body.setdefault(key, value)
    if isinstance(exc, _UnknownParameter):
        body["param"] = exc.param
    elif isinstance(exc, InvalidInputError):
        body["param"] = exc.field  # the web API's name for the offending parameter
    elif isinstance(exc, CapacityError):
        body["param"] = "capacity"  # the vehicle capacity (the query's or the configured one) is too small
    return web.json_response({"error": body}, status=exc.http_status)


#: Plans waiting for the worker besides the one being solved; more get 503 ``busy`` with Retry-After.
MAX_QUEUED = 3
#: Uncached plans one client address may start per :data:`CLIENT_WINDOW_S` (a cached or joined plan
#: does not count); more get 429 ``too_many_plans``. With one plan in flight per client, this bounds how
#: much of the planner one client can take (a dashboard asks the same, cached, query again and again).
CLIENT_PLANS_PER_WINDOW = 10
CLIENT_WINDOW_S = 600.0
#: How often a waiting request checks whether its client is still connected.
_GONE_POLL_S = 0.25


@dataclass(frozen=True)
class _Refusal:
    """A plan request not taken: its status, error code, message and Retry-After seconds."""

    status: int
    code: str
    message: str
    retry_after_s: int

    def response(self, settings: PlanSettings | None) -> web.Response:
        return web.json_response({"error": {"code": self.code, "message": self.message, **_round_fields(settings)}},
                                 status=self.status, headers={"Retry-After": str(self.retry_after_s)})


class _ClientGone(Exception):
    """The client closed its connection while its plan was queued or solved."""


def client_address(request: web.Request) -> str:
    """The client of ``request`` for the per-client limits: its address (behind a proxy listed in
    ``[http] trusted_proxies``, the client it names: gateway.web.forwarded; behind any other, the proxy's)."""
    return request.remote or "unknown"


class _RegistryStamp:
    """The registry's change marker, part of the cache key: a revoked, moved, added or re-kinded bin is never
    served from a plan made before (whoever changed it: this gateway's API or a ``civicedge gateway devices``
    command in another process). Cheap enough for every request, cached or refused: no row is read
    (:attr:`Registry.version`). A registry given as a directory is held open for it (reopened when its
    ``devices.sqlite`` is replaced); None for a source without a registry or with none to open (the plan
    itself then says why: 503 bin_data)."""

    def __init__(self, source: BinSource) -> None:
        self.source = source
        self._held: Registry | None = None
        self._held_file: tuple[int, int] | None = None  # (st_dev, st_ino) of the held devices.sqlite
        # Counts the opens: a file replaced twice may get the first one's inode back, and an unchanged file
        # just opened always has the same version, so (dev, ino, version) alone could repeat an old stamp.
        self._opens = 0
        self._lock = threading.Lock()  # stamps are taken in threads, maybe two at a time

    def __call__(self) -> tuple[Any, ...] | None:
        if not isinstance(self.source, GatewayBinSource):
            return None
        if isinstance(self.source.registry, Registry):
            return self.source.registry.version
        with self._lock:
            try:
                st = os.stat(Path(self.source.registry) / "devices.sqlite")
            except OSError:
                self._release()
                return None
            file = (st.st_dev, st.st_ino)
            try:
                if self._held is None or self._held_file != file:
                    self._release()
                    self._held = Registry(Path(self.source.registry), create=False)
                    self._held_file = file
                    self._opens += 1
                return (self._opens, *file, *self._held.version)
            except GatewayError:
                self._release()
                return None

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
        self._held, self._held_file = None, None

    def close(self) -> None:
        """Close the registry held open for the stamps (if any)."""
        with self._lock:
            self._release()


class _PlanEndpoint:
    """State of one mounted endpoint: defaults, source, the planning worker, its queue and a small cache."""

    def __init__(self, source: BinSource, defaults: PlanDefaults, clock: Callable[[], float],
                 solver: SolverProcess, client_key: Callable[[web.Request], str] = client_address,
                 timer: Callable[[], float] = _time.monotonic) -> None:
        self.source = source
        self.defaults = defaults
        self.clock = clock  # the gateway's (maybe simulated) time: which day "today" is
        self.timer = timer  # real seconds: the cache and the per-client limits (planner load is real time)
        self.solver = solver
        self.client_key = client_key
        self.lock = asyncio.Lock()
        self.cache: dict[tuple[Any, ...], tuple[float, Plan, str | None]] = {}
        self.inflight: dict[tuple[Any, ...], asyncio.Task[tuple[Plan, str | None]]] = {}
        self.running: tuple[Any, ...] | None = None  # the key of the plan in the worker (or reading its bins)
        self.waiters: dict[tuple[Any, ...], int] = {}  # requests waiting per in-flight plan
        self.client_waits: dict[str, dict[tuple[Any, ...], int]] = {}  # per client: its waits per plan
        self.client_starts: dict[str, deque[float]] = {}  # per client: when its uncached plans were started
        self.stamp = _RegistryStamp(source)
        # rendered answers of cached plans, by (id of the plan, format): a 4,000-stop JSON takes ~10 ms to
        # make; the plan is held with its text, so its id is not reused while the entry lives
        self.bodies: dict[tuple[int, str], tuple[Plan, str]] = {}
        self.closed = False

    def settings(self, query: dict[str, str]) -> PlanSettings:
        unknown = sorted(set(query) - PLAN_PARAMS)
        if unknown:
            raise _UnknownParameter(unknown[0])
        d = self.defaults
        vehicles = int(parse_positive("vehicles", query["vehicles"], integer=True, maximum=MAX_VEHICLES)) \
            if "vehicles" in query else None
        now = datetime.fromtimestamp(self.clock(), tz=d.tz)
        day: date = parse_date(query.get("date", "today"), d.tz, now=now)
        return d.settings_for(
            day,
            depot=parse_depot(query["depot"]) if "depot" in query else None,
            vehicles=vehicles,
            capacity_l=parse_litres("capacity", query["capacity"], minimum=MIN_CAPACITY_L, maximum=MAX_CAPACITY_L)
            if "capacity" in query else None,
            threshold=parse_threshold(query["threshold"]) if "threshold" in query else None,
        )

    def _solve(self, settings: PlanSettings) -> tuple[Plan, str | None]:
        """Read the bins (in a thread: SQLite) and plan them in the worker process."""
        if self.closed:  # closed while this plan waited for the thread: read nothing, start nothing
            raise PlannerStopped("route planning was stopped")
        return self.solver.plan(self.source.load(settings.round_start), settings)

    async def _solve_and_cache(self, key: tuple[Any, ...], settings: PlanSettings) -> tuple[Plan, str | None]:
        async with self.lock:  # one plan at a time; the queue is the tasks waiting here
            cached = self.cache.get(key)
            if cached is not None and cached[0] > self.timer():
                return cached[1], cached[2]
            self.running = key  # from here on the plan runs to its end, waited for or not (it is cached)
            try:
                plan, notice = await asyncio.to_thread(self._solve, settings)
            finally:
                self.running = None
            now = self.timer()
            self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
            self.cache[key] = (now + self.defaults.cache_s, plan, notice)
            live = {id(v[1]) for v in self.cache.values()}
            self.bodies = {k: v for k, v in self.bodies.items() if k[0] in live}
            return plan, notice

    def _prune(self) -> None:
        """Drop expired plans with their rendered bodies, and clients with no start left in the window, so
        memory does not wait for the next uncached plan (a 4,000-stop plan and its texts are megabytes)."""
        now = self.timer()
        if any(v[0] <= now for v in self.cache.values()):
            self.cache = {k: v for k, v in self.cache.items() if v[0] > now}
            live = {id(v[1]) for v in self.cache.values()}
            self.bodies = {k: v for k, v in self.bodies.items() if k[0] in live}
        for client in [c for c, starts in self.client_starts.items()
                       if not starts or starts[-1] <= now - CLIENT_WINDOW_S]:
            del self.client_starts[client]

    def _retry_after(self) -> int:
        """Seconds until the queue has room, roughly: the time limits of the plans ahead, plus a few seconds each."""
        return max(1, math.ceil(sum(self.defaults.time_limit_s + 2 for _ in self.inflight)))

    def _queue_text(self) -> str:
        running = 1 if self.running is not None else 0
        return f"{running} plan running, {len(self.inflight) - running} waiting"

    def _refuse_new(self, client: str) -> _Refusal | None:
        """Why ``client`` may not start another uncached plan now, if it may not."""
        if self.closed:
            return _Refusal(503, "planner_stopped", "route planning is stopped (the gateway is shutting down)", 5)
        if any(self.client_waits.get(client, {})):
            return _Refusal(429, "too_many_plans", "one uncached plan per client at a time: wait for the answer "
                            "to your other plan request", self._retry_after())
        starts = self.client_starts.get(client)
        now = self.timer()
        while starts and starts[0] <= now - CLIENT_WINDOW_S:
            starts.popleft()
        if starts is not None and len(starts) >= CLIENT_PLANS_PER_WINDOW:
            wait = max(1, math.ceil(starts[0] + CLIENT_WINDOW_S - now))
            return _Refusal(429, "too_many_plans", f"at most {CLIENT_PLANS_PER_WINDOW} new plans per client in "
                            f"{CLIENT_WINDOW_S / 60:g} minutes; retry in {wait} s", wait)
        if len(self.inflight) > MAX_QUEUED:
            wait = self._retry_after()
            return _Refusal(503, "busy", f"route planning is busy ({self._queue_text()}); retry in {wait} s", wait)
        return None

    async def plan(self, settings: PlanSettings, client: str = "", gone: Callable[[], bool] = lambda: False,
                   ) -> tuple[Plan, str | None] | _Refusal:
        """The plan (cached, joined to the same plan in progress, or queued), or why it was refused.

        Raises:
            _ClientGone: ``gone()`` said the client left while it waited (a queued plan nobody else waits
                for is cancelled; a running one runs on and is cached).
        """
        stamp = await asyncio.to_thread(self.stamp)
        key = (repr(settings), stamp)  # settings are frozen dataclasses: their repr names every value
        self._prune()
        cached = self.cache.get(key)
        if cached is not None and cached[0] > self.timer():
            return cached[1], cached[2]
        task = self.inflight.get(key)
        if task is None:  # joining the same query in progress is always allowed
            refusal = self._refuse_new(client)
            if refusal is not None:
                return refusal
            task = asyncio.ensure_future(self._solve_and_cache(key, settings))
            self.inflight[key] = task
            task.add_done_callback(lambda _t: self.inflight.pop(key, None))
            self.client_starts.setdefault(client, deque()).append(self.timer())
        self.waiters[key] = self.waiters.get(key, 0) + 1
        waits = self.client_waits.setdefault(client, {})
        waits[key] = waits.get(key, 0) + 1
        try:
            # asyncio.wait, not await: a waiter that goes (or is cancelled) does not cancel the plan itself
            while not task.done():
                await asyncio.wait({task}, timeout=_GONE_POLL_S)
                if not task.done() and gone():
                    raise _ClientGone()
            if task.cancelled():  # by close(), not by this request (its own cancellation raises above)
                raise PlannerStopped("route planning was stopped")
            return task.result()
        finally:
            self._leave(key, client, task)

    def _leave(self, key: tuple[Any, ...], client: str, task: asyncio.Task[tuple[Plan, str | None]]) -> None:
        """One waiter of ``key`` is done; a plan still queued that nobody waits for any more is cancelled."""
        self.waiters[key] -= 1
        if not self.waiters[key]:
            del self.waiters[key]
            if not task.done() and self.running != key:
                logger.info("routes plan cancelled before it started: its clients left")
                task.cancel()
        waits = self.client_waits[client]
        waits[key] -= 1
        if not waits[key]:
            del waits[key]
        if not waits:
            del self.client_waits[client]

    async def close(self) -> None:
        """Answer the waiting requests 503 ``planner_stopped``, cancel queued plans, stop the worker (for the
        app's ``on_shutdown``: the requests are answered before aiohttp waits for its handlers)."""
        self.closed = True
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.to_thread(self.solver.close)
        self.stamp.close()

    def _answer(self, plan: Plan, notice: str | None, fmt: str, timing: Timing) -> web.Response:
        """The 200 answer in ``fmt``, rendered once per cached plan and format."""
        memo = self.bodies.get((id(plan), fmt))
        if memo is not None and memo[0] is plan:
            text = memo[1]
        else:
            text = _render(plan, notice, fmt, timing)
            if any(v[1] is plan for v in self.cache.values()):  # only a cached plan is asked for again
                self.bodies[(id(plan), fmt)] = (plan, text)
        return web.Response(text=text, content_type=FORMATS[fmt], charset="utf-8")

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        settings: PlanSettings | None = None
        try:
            fmt = query.pop("format", "json")
            if fmt not in FORMATS:
                raise InvalidInputError("format", fmt, "expected one of " + ", ".join(FORMATS))
            settings = self.settings(query)
            outcome = await self.plan(settings, self.client_key(request), lambda: _gone(request))
            if isinstance(outcome, _Refusal):
                logger.info("routes plan request refused (%s): %s", outcome.code, outcome.message)
                return outcome.response(settings)
            plan, notice = outcome
            return self._answer(plan, notice, fmt, settings.timing())
        except RoutesError as exc:
            logger.info("routes plan request refused: %s", exc.message)
            return _error(exc, settings)
        except _ClientGone:
            logger.info("routes plan request %r: the client left before its plan was ready", request.query_string)
            return web.Response(status=499)  # nobody reads it
        except PlannerStopped as exc:
            if self.closed:
                return _Refusal(503, "planner_stopped", "route planning was stopped (the gateway is shutting "
                                "down)", 5).response(settings)
            logger.warning("routes plan request %r failed: %s", request.query_string, exc)
            return _Refusal(503, "planner_restarted", f"{exc}; the planner restarts with the next request, "
                            "retry", 5).response(settings)
        except PlannerTimeout as exc:
            logger.warning("routes plan request %r: %s", request.query_string, exc)
            return _Refusal(503, "planning_timeout", str(exc), self._retry_after()).response(settings)
        except (GatewayError, web.HTTPException):
            raise  # the app's middleware answers these (e.g. 503 backend_unavailable)
        except Exception:  # a defect, not bad input (inputs are bounded where parsed): log it, answer JSON
            logger.exception("routes plan request %r failed", request.query_string)
            return web.json_response({"error": {"code": "internal", "message": "planning failed unexpectedly; "
                                                "the gateway log has the details",
                                                **_round_fields(settings)}}, status=500)


def _gone(request: web.Request) -> bool:
    """Whether the client of ``request`` closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _render(plan: Plan, notice: str | None, fmt: str, timing: Timing) -> str:
    """The 200 answer's text in ``fmt``; times estimated with ``timing`` (the [routes] speed and service time)."""
    if fmt == "csv":
        return render(plan, "csv", notice, timing)
    body: dict[str, Any] = plan_to_geojson(plan, timing) if fmt == "geojson" else plan_to_dict(plan, timing)
    if notice is not None:
        (body["properties"] if fmt == "geojson" else body)["notice"] = notice
    return json.dumps(body, ensure_ascii=False)


class PlanRoutes(list[web.RouteDef]):
    """The endpoint's route definitions, plus :meth:`close` for the app's ``on_shutdown``."""

    def __init__(self, routes: list[web.RouteDef], endpoint: _PlanEndpoint) -> None:
        super().__init__(routes)
        self._endpoint = endpoint

    async def close(self, app: web.Application | None = None) -> None:
        """Stop planning: waiting requests answer 503 ``planner_stopped``, queued plans are cancelled, the
        worker is stopped, later requests get 503 too (for the app's ``on_shutdown``, or ``on_cleanup``)."""
        await self._endpoint.close()


def routes_handlers(
    source: BinSource,
    defaults: PlanDefaults | None = None,
    *,
    clock: Callable[[], float] = _time.time,
    solver: SolverProcess | None = None,
    client_key: Callable[[web.Request], str] = client_address,
    timer: Callable[[], float] = _time.monotonic,
) -> PlanRoutes:
    """Return the route definitions of the collection-plan API, to pass to ``app.add_routes``.

    Plans are solved in a separate worker process (OR-Tools holds the GIL while it searches), one at
    a time; up to :data:`MAX_QUEUED` more wait, further requests get 503 ``busy`` with ``Retry-After``.
    A client (``client_key``) waits for at most one uncached plan at a time and starts at most
    :data:`CLIENT_PLANS_PER_WINDOW` per :data:`CLIENT_WINDOW_S` (429 ``too_many_plans``); a queued plan
    whose clients all left is cancelled (one already solved runs on and is cached).
    Add ``routes.close`` to the app's ``on_shutdown`` (waiting requests get 503 ``planner_stopped``
    before aiohttp waits for its handlers) to stop the worker with the app (it is a daemon process,
    stopped at the latest when the gateway process exits).

    Args:
        source: Where bins come from (e.g. :class:`gateway.routes.source.GatewayBinSource`).
        defaults: Plan settings; query parameters override depot, vehicles, capacity, threshold.
        clock: Unix-time clock, maybe simulated (for ``date=today``).
        solver: The planning worker (default: the process-wide one, :func:`gateway.routes.worker.shared_solver`).
        client_key: Who a request is from, for the per-client limits (default: the peer address; behind a
            reverse proxy every request is the proxy's, so read the header the proxy sets instead).
        timer: Real-time seconds (monotonic) of the cache's ``cache_s`` and the per-client window, also
            under ``[sim_clock]``: at 30x a 5-minute cache timed by the simulated clock lasted 10 s, so
            a dashboard asking again made a new plan each time and ran into the per-client limit.
    """
    endpoint = _PlanEndpoint(source, defaults or PlanDefaults(), clock, solver or shared_solver(), client_key,
                             timer)
    return PlanRoutes([web.get(PLAN_PATH, endpoint.handle)], endpoint)


def routes_for_gateway(config: GatewayConfig, registry: Registry | None = None, *,
                       clock: Callable[[], float] = _time.time) -> PlanRoutes:
    """Route definitions for a running gateway: its store, its registry, the ``[routes]`` of its config.

    Args:
        config: The gateway's validated configuration (``config.source`` is read for ``[routes]``).
        registry: The gateway's open registry (default: opened from ``config.registry_dir`` per plan).
        clock: The gateway's clock (simulated under ``[sim_clock]``), for ``date=today``.

    Raises:
        InvalidInputError: A ``[routes]`` key is wrong (so the gateway refuses to start with it).
        MatrixError: The configured matrix CSV is unusable.
    """
    defaults = load_plan_defaults(config.source) if config.source is not None else PlanDefaults()
    # Looked for, not imported: OR-Tools is loaded by the planning worker on the first plan (solver._ortools).
    missing = [name for name in (ORTOOLS_PACKAGE, "numpy") if importlib.util.find_spec(name) is None]
    if missing:
        logger.warning("route planning unavailable: %s not installed (the 'routes' extra: pip install "
                       "'civicedge[routes]'; or no wheel for this platform); %s answers 503 solver_unavailable"
                       " when bins are due, the rest of the gateway runs", " and ".join(missing), PLAN_PATH)
    source = GatewayBinSource(config.storage.path, registry if registry is not None else config.registry_dir)
    return routes_handlers(source, defaults, clock=clock)
