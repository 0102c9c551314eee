"""HTTP surface of collection planning: ``GET /api/routes/plan`` for the gateway's web app.

Mount it next to the other API routes::

    from gateway.routes.web import routes_for_gateway
    app = create_app(..., extra_routes=routes_for_gateway(cfg, registry))   # [routes] of gateway.toml

Query parameters (all optional): ``date`` (YYYY-MM-DD, today, tomorrow; default today),
``format`` (json, geojson, csv; default json), ``depot`` (LAT,LON), ``vehicles`` (at most 200),
``capacity`` (litres, at most 1 000 000), ``threshold`` (0.8 or 80%); dates from 2000-01-01 to
2099-12-31. Errors answer ``{"error": {"code", "message", ...}}`` with 400 (bad input, bad matrix
file), 422 (capacity smaller than one bin), 503 (bin data unreadable) or 500 (``solver``: no
solution; ``internal``: a defect, logged with its traceback) or 503 (``busy``, with Retry-After;
``planning_timeout``). No bins due is not an error: 200 with an empty plan and a ``notice``. Plans
are solved one at a time in a worker process (:mod:`gateway.routes.worker`), so the gateway keeps
serving meanwhile, and cached per query and registry state for ``cache_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time as _time
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
    parse_date,
    parse_depot,
    parse_positive,
    parse_threshold,
)
from gateway.routes.planner import PlanSettings
from gateway.routes.source import BinSource, GatewayBinSource
from gateway.routes.worker import PlannerTimeout, SolverProcess, shared_solver

__all__ = ["MAX_QUEUED", "PLAN_PARAMS", "PLAN_PATH", "PlanDefaults", "PlanRoutes", "routes_for_gateway",
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


def _busy(settings: PlanSettings, retry_after_s: int) -> web.Response:
    """503 ``busy``: the worker has a plan and a full queue; ``Retry-After`` estimates when there is room."""
    return web.json_response(
        {"error": {"code": "busy", "message": f"route planning is busy with {MAX_QUEUED + 1} other plans; "
                   f"retry in {retry_after_s} s", **_round_fields(settings)}},
        status=503, headers={"Retry-After": str(retry_after_s)})


def _registry_stamp(source: BinSource) -> tuple[tuple[Any, ...], ...] | None:
    """What the registry says about the bins (id, zone, place, revoked, last change): part of the cache
    key, so a revoked or moved bin is not served from a plan made before (whoever changed it: this
    gateway's API or a ``civicedge device`` command). None for a source without a registry."""
    if not isinstance(source, GatewayBinSource):
        return None
    if isinstance(source.registry, Registry):
        devices = source.registry.list()
    else:
        if not (Path(source.registry) / "devices.sqlite").is_file():
            return None  # the plan itself says the registry is missing (503 bin_data)
        try:
            registry = Registry(Path(source.registry), create=False)
        except GatewayError:
            return None
        try:
            devices = registry.list()
        finally:
            registry.close()
    return tuple((d.id, d.kind, d.zone, d.lat, d.lon, d.revoked, d.updated_at) for d in devices)


class _PlanEndpoint:
    """State of one mounted endpoint: defaults, source, the planning worker, its queue and a small cache."""

    def __init__(self, source: BinSource, defaults: PlanDefaults, clock: Callable[[], float],
                 solver: SolverProcess) -> None:
        self.source = source
        self.defaults = defaults
        self.clock = clock
        self.solver = solver
        self.lock = asyncio.Lock()
        self.cache: dict[tuple[Any, ...], tuple[float, Plan, str | None]] = {}
        self.inflight: dict[tuple[Any, ...], asyncio.Task[tuple[Plan, str | None]]] = {}

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
            capacity_l=parse_positive("capacity", query["capacity"], maximum=MAX_CAPACITY_L)
            if "capacity" in query else None,
            threshold=parse_threshold(query["threshold"]) if "threshold" in query else None,
        )

    def _solve(self, settings: PlanSettings) -> tuple[Plan, str | None]:
        """Read the bins (in a thread: SQLite) and plan them in the worker process."""
        return self.solver.plan(self.source.load(settings.round_start), settings)

    async def _solve_and_cache(self, key: tuple[Any, ...], settings: PlanSettings) -> tuple[Plan, str | None]:
        async with self.lock:  # one plan at a time; the queue is the tasks waiting here
            cached = self.cache.get(key)
            if cached is not None and cached[0] > self.clock():
                return cached[1], cached[2]
            plan, notice = await asyncio.to_thread(self._solve, settings)
            self.cache = {k: v for k, v in self.cache.items() if v[0] > self.clock()}
            self.cache[key] = (self.clock() + self.defaults.cache_s, plan, notice)
            return plan, notice

    def _retry_after(self) -> int:
        """Seconds until the queue has room, roughly: the time limits of the plans ahead, plus a few seconds each."""
        return max(1, math.ceil(sum(self.defaults.time_limit_s + 2 for _ in self.inflight)))

    async def plan(self, settings: PlanSettings) -> tuple[Plan, str | None] | int:
        """The plan (cached, joined to the same plan in progress, or queued), or the Retry-After seconds when
        the queue is full."""
        stamp = await asyncio.to_thread(_registry_stamp, self.source)
        key = (repr(settings), stamp)  # settings are frozen dataclasses: their repr names every value
        cached = self.cache.get(key)
        if cached is not None and cached[0] > self.clock():
            return cached[1], cached[2]
        task = self.inflight.get(key)
        if task is None:
            if len(self.inflight) > MAX_QUEUED:
                return self._retry_after()
            task = asyncio.ensure_future(self._solve_and_cache(key, settings))
            self.inflight[key] = task
            task.add_done_callback(lambda _t: self.inflight.pop(key, None))
        # shielded: a client that goes away does not cancel the plan others wait for (or the cache)
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Cancel queued plans and stop the worker (for the app's cleanup)."""
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.to_thread(self.solver.close)

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        settings: PlanSettings | None = None
        try:
            fmt = query.pop("format", "json")
            if fmt not in FORMATS:
                raise InvalidInputError("format", fmt, "expected one of " + ", ".join(FORMATS))
            settings = self.settings(query)
            outcome = await self.plan(settings)
            if isinstance(outcome, int):
                logger.info("routes plan request refused: %s plans queued", len(self.inflight))
                return _busy(settings, outcome)
            plan, notice = outcome
            return _answer(plan, notice, fmt, settings.timing())
        except RoutesError as exc:
            logger.info("routes plan request refused: %s", exc.message)
            return _error(exc, settings)
        except PlannerTimeout as exc:
            return web.json_response({"error": {"code": "planning_timeout", "message": str(exc),
                                                **_round_fields(settings)}}, status=503)
        except (GatewayError, web.HTTPException):
            raise  # the app's middleware answers these (e.g. 503 backend_unavailable)
        except Exception:  # a defect, not bad input (inputs are bounded where parsed): log it, answer JSON
            logger.exception("routes plan request %r failed", request.query_string)
            return web.json_response({"error": {"code": "internal", "message": "planning failed unexpectedly; "
                                                "the gateway log has the details",
                                                **_round_fields(settings)}}, status=500)


def _answer(plan: Plan, notice: str | None, fmt: str, timing: Timing) -> web.Response:
    """The 200 answer in ``fmt``; times estimated with ``timing`` (the [routes] speed and service time)."""
    if fmt == "csv":
        return web.Response(text=render(plan, "csv", notice, timing), content_type="text/csv", charset="utf-8")
    body: dict[str, Any] = plan_to_geojson(plan, timing) if fmt == "geojson" else plan_to_dict(plan, timing)
    if notice is not None:
        (body["properties"] if fmt == "geojson" else body)["notice"] = notice
    return web.Response(text=json.dumps(body, ensure_ascii=False), content_type=FORMATS[fmt], charset="utf-8")


class PlanRoutes(list[web.RouteDef]):
    """The endpoint's route definitions, plus :meth:`close` for the app's ``on_cleanup``."""

    def __init__(self, routes: list[web.RouteDef], endpoint: _PlanEndpoint) -> None:
        super().__init__(routes)
        self._endpoint = endpoint

    async def close(self, app: web.Application | None = None) -> None:
        """Cancel queued plans and stop the planning worker (a later plan would start a new one)."""
        await self._endpoint.close()


def routes_handlers(
    source: BinSource,
    defaults: PlanDefaults | None = None,
    *,
    clock: Callable[[], float] = _time.time,
    solver: SolverProcess | None = None,
) -> PlanRoutes:
    """Return the route definitions of the collection-plan API, to pass to ``app.add_routes``.

    Plans are solved in a separate worker process (OR-Tools holds the GIL while it searches), one at
    a time; up to :data:`MAX_QUEUED` more wait, further requests get 503 ``busy`` with ``Retry-After``.
    Add ``routes.close`` to the app's ``on_cleanup`` to stop the worker with the app (it is a daemon
    process, stopped at the latest when the gateway process exits).

    Args:
        source: Where bins come from (e.g. :class:`gateway.routes.source.GatewayBinSource`).
        defaults: Plan settings; query parameters override depot, vehicles, capacity, threshold.
        clock: Unix-time clock (for ``date=today`` and the cache).
        solver: The planning worker (default: the process-wide one, :func:`gateway.routes.worker.shared_solver`).
    """
    endpoint = _PlanEndpoint(source, defaults or PlanDefaults(), clock, solver or shared_solver())
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
    source = GatewayBinSource(config.storage.path, registry if registry is not None else config.registry_dir)
    return routes_handlers(source, defaults, clock=clock)
