"""The plan endpoint's queue: joining, per-client limits, clients that leave, close() and worker death.

Small cities and time limits of 0 or 1 s, so each test takes a few seconds (the worker's spawn included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.routes.model import BinStatus, Depot
from gateway.routes.source import StaticBinSource
from gateway.routes.web import PlanDefaults, PlanRoutes, routes_handlers
from gateway.routes.worker import SolverProcess

from routes_helpers import DAY, T0, scattered_bins

pytestmark = pytest.mark.timeout(90)
NOW = T0 - 3 * 3600
PATH = "/api/routes/plan"


class CountingSource:
    """Real bins (a :class:`StaticBinSource`); counts the plans that read them, optionally slowly."""

    def __init__(self, bins: list[BinStatus], delay_s: float = 0.0) -> None:
        self.inner = StaticBinSource(tuple(bins))
        self.delay_s = delay_s
        self.loads = 0
        self.lock = threading.Lock()

    def load(self, as_of: datetime) -> list[BinStatus]:
        with self.lock:
            self.loads += 1
        time.sleep(self.delay_s)
        return self.inner.load(as_of)


@pytest.fixture
def solver() -> Iterator[SolverProcess]:
    proc = SolverProcess()
    yield proc
    proc.close()


@pytest.fixture
def source() -> CountingSource:
    return CountingSource(scattered_bins(30, seed=5, full_share=0.8))


class Served:
    def __init__(self, server: TestServer, routes: PlanRoutes) -> None:
        self.server, self.routes = server, routes

    def url(self, **params: str) -> str:
        return str(self.server.make_url(PATH).with_query(params))


async def serve(source: CountingSource, solver: SolverProcess, time_limit_s: float = 1) -> Served:
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), vehicles=3, capacity_l=60000, time_limit_s=time_limit_s)
    routes = routes_handlers(source, defaults, clock=lambda: float(NOW), solver=solver,
                             client_key=lambda r: r.headers.get("X-Client", "anon"))
    app = web.Application()
    app.add_routes(routes)
    app.on_shutdown.append(routes.close)
    server = TestServer(app)
    await server.start_server()
    return Served(server, routes)


@pytest.fixture
async def served(source: CountingSource, solver: SolverProcess) -> AsyncIterator[Served]:
    s = await serve(source, solver)
    yield s
    await s.server.close()


async def _get(http: aiohttp.ClientSession, url: str, client: str, timeout_s: float | None = None
               ) -> tuple[int, dict[str, object], dict[str, str]]:
    async with http.get(url, headers={"X-Client": client},
                        timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def _drop(http: aiohttp.ClientSession, url: str, client: str, after_s: float) -> None:
    """A request whose client gives up (closes the connection) after ``after_s``."""
    with pytest.raises(asyncio.TimeoutError):
        await _get(http, url, client, timeout_s=after_s)


async def test_the_same_query_is_joined_not_solved_twice(served: Served, source: CountingSource) -> None:
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(_get(http, served.url(), f"c{i}") for i in range(4)))
    assert [a[0] for a in answers] == [200] * 4
    assert source.loads == 1 and len({str(a[1]["routes"]) for a in answers}) == 1


async def test_one_uncached_plan_per_client(served: Served, source: CountingSource) -> None:
    """One client cannot fill the queue with distinct queries (4 took every slot). Test fails before."""
    async with aiohttp.ClientSession() as http:
        first = asyncio.ensure_future(_get(http, served.url(depot="52.37,4.89"), "a"))
        await asyncio.sleep(0.3)
        status, body, headers = await _get(http, served.url(depot="52.38,4.89"), "a")
        assert status == 429 and body["error"]["code"] == "too_many_plans"  # type: ignore[index]
        assert int(headers["Retry-After"]) >= 1
        joined = await _get(http, served.url(depot="52.37,4.89"), "a")  # its own query again: joined
        other = await _get(http, served.url(depot="52.38,4.89"), "b")  # another client is not held up
        assert (await first)[0] == joined[0] == other[0] == 200
    assert source.loads == 2


async def test_a_client_that_leaves_does_not_stop_its_plan_which_is_cached(served: Served,
                                                                          source: CountingSource) -> None:
    async with aiohttp.ClientSession() as http:
        await _drop(http, served.url(), "a", after_s=0.4)
        await asyncio.sleep(1.5)  # the 1 s search ends meanwhile
        t = time.monotonic()
        status, body, _ = await _get(http, served.url(), "b")
    assert status == 200 and body["stops"] and source.loads == 1
    # from the cache, not a second search: source.loads == 1 above says so; this bound only catches a hang
    assert time.monotonic() - t < 10.0


async def test_a_queued_plan_is_cancelled_when_its_clients_leave(served: Served, source: CountingSource) -> None:
    """A plan behind another, whose only client closed its connection, never runs. Test fails before
    (it ran, so dropped requests kept the planner busy)."""
    async with aiohttp.ClientSession() as http:
        first = asyncio.ensure_future(_get(http, served.url(depot="52.37,4.89"), "a"))
        await asyncio.sleep(0.3)
        await _drop(http, served.url(depot="52.38,4.89"), "b", after_s=0.3)
        await asyncio.sleep(0.6)  # the endpoint notices the closed connection
        assert (await first)[0] == 200
        await asyncio.sleep(0.5)
    endpoint = served.routes._endpoint
    assert source.loads == 1 and not endpoint.inflight and not endpoint.waiters and not endpoint.client_waits


async def test_close_answers_waiting_requests_and_starts_no_worker(solver: SolverProcess) -> None:
    """close() while a plan still reads its bins: the request gets 503 planner_stopped and no worker is
    started after close() (one was, and stayed alive). Test fails before."""
    slow = CountingSource(scattered_bins(30, seed=5, full_share=0.8), delay_s=1.0)
    served = await serve(slow, solver)
    try:
        async with aiohttp.ClientSession() as http:
            req = asyncio.ensure_future(_get(http, served.url(), "a"))
            await asyncio.sleep(0.4)
            await served.routes.close()
            status, body, headers = await req
            assert status == 503 and body["error"]["code"] == "planner_stopped"  # type: ignore[index]
            assert "Retry-After" in headers
            await asyncio.sleep(1.2)  # the bins are read by now
            assert solver.pid is None and solver.started == 0
            status, body, _ = await _get(http, served.url(), "b")
            assert status == 503 and body["error"]["code"] == "planner_stopped"  # type: ignore[index]
    finally:
        await served.server.close()


async def test_a_worker_that_dies_is_503_planner_restarted_without_traceback(
        served: Served, solver: SolverProcess, caplog: pytest.LogCaptureFixture) -> None:
    """Was 500 internal, logged at ERROR with a traceback. Test fails before."""
    async with aiohttp.ClientSession() as http:
        assert (await _get(http, served.url(threshold="0.5"), "a"))[0] == 200  # worker started and warm
        req = asyncio.ensure_future(_get(http, served.url(), "a"))
        await asyncio.sleep(0.6)
        assert solver.pid is not None
        os.kill(solver.pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="gateway.routes"):
            status, body, headers = await req
        assert status == 503 and body["error"]["code"] == "planner_restarted"  # type: ignore[index]
        assert int(headers["Retry-After"]) >= 1 and "exit code None" not in body["error"]["message"]  # type: ignore[index]
        records = [r for r in caplog.records if r.name == "gateway.routes.web"]
        assert records and all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
        assert "SIGKILL" in records[0].getMessage()
        assert (await _get(http, served.url(), "a"))[0] == 200  # the next plan starts a new worker


def test_forwarded_exception_records_carry_the_traceback_once(solver: SolverProcess) -> None:
    """A worker record with an exception: the gateway's formatter prints the message once, then the
    traceback (exc_text was the whole formatted record, so the message came twice)."""
    from gateway.routes.worker import _Collect

    collect = _Collect()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("gateway.routes.planner").makeRecord(
            "gateway.routes.planner", logging.ERROR, __file__, 1, "planning %s failed", ("x",), __import__("sys").exc_info())
    collect.emit(record)
    text = logging.Formatter("%(levelname)s %(message)s").format(collect.records[0])
    assert text.count("planning x failed") == 1 and text.splitlines()[1].startswith("Traceback")
    assert "ValueError: boom" in text


def test_worker_log_records_reach_the_gateway_loggers(solver: SolverProcess, caplog: pytest.LogCaptureFixture) -> None:
    """Records logged while the worker plans are handled by this process's loggers."""
    bins = scattered_bins(10, seed=2, full_share=1.0)
    settings = PlanDefaults(depot=Depot(52.37, 4.89), vehicles=2, capacity_l=60000, time_limit_s=0,
                            bin_volumes_l={"nope": 100.0}).settings_for(DAY)
    with caplog.at_level(logging.INFO, logger="gateway.routes"):
        solver.plan(bins, settings)
    assert any(r.name.startswith("gateway.routes.") and "nope" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
