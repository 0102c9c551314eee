"""Store reads of the web layer never run on the event loop that ingests and ACKs.

A store whose reads are made deliberately slow (a blocking sleep inside the read, as a long SQLite
query on a large store would block) serves the app; a ticker task counts how often the loop gets
to run during a request, and each read records the thread it ran on. The assertions are relative
or exact (the loop ran while the read was under way, no read ran on the loop's thread, an ACK went out
before the request ended), not absolute times: a bound on the loop's longest wait failed on a loaded
CI machine (0.35 s against 0.25 s) with every read off the loop.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
import io
import logging
import threading
import time
from pathlib import Path
from collections import defaultdict
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import StorageError
from gateway.resources import load_policy
from gateway.storage import ReportQueries
from gateway.web import export, source
from gateway.web.app import create_app, start_http
from gateway.web.opendata import INGEST_LAG_S
from gateway.web.views import DeviceHourAggregate, ReadingView

from .support import ADMIN_TOKEN, NOW, Fleet

T = TypeVar("T")
DELAY_S = 0.5
TICK_S = 0.01


# Every read of the storage read API (the old ones and those the web layer uses now).
READS = ("count_reports", "devices", "latest_per_device", "reports", "readings", "hourly_aggregates", "alarms",
         "changes_since", "last_report_id", "device_ids", "reports_by_id", "readings_page", "device_hourly",
         "hourly_aggregates_of")


class SlowQueries(ReportQueries):
    """The fleet's store, with the reads named in ``slow`` taking ``DELAY_S`` longer (a blocking
    sleep, as a long SQLite query); ``fail`` names reads that raise a StorageError from their
    ``fail_from``-th call on. Records every read as (name, arguments), and the thread it ran on."""

    def __init__(self, path: Path, *, slow: Sequence[str] = (), fail: Sequence[str] = (), fail_from: int = 1) -> None:
        super().__init__(path)
        self.slow = set(slow)
        self.fail = set(fail)
        self.fail_from = fail_from
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.threads: set[int] = set()

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def args_of(self, name: str, arg: str) -> list[Any]:
        return [a[arg] for n, a in self.calls if n == name]

    def ran_on_this_thread(self) -> bool:
        """Whether any read so far ran on the calling thread (called on the event loop's: a read there
        blocks ingest and ACKs for as long as it takes)."""
        return threading.get_ident() in self.threads


def _instrumented(name: str) -> Callable[..., Any]:
    def read(self: SlowQueries, *args: Any, **kwargs: Any) -> Any:
        method = getattr(ReportQueries, name)
        self.calls.append((name, dict(inspect.signature(method).bind(self, *args, **kwargs).arguments)))
        self.threads.add(threading.get_ident())
        if name in self.slow:
            time.sleep(DELAY_S)
        if name in self.fail and self.count(name) >= self.fail_from:
            raise StorageError("injected read failure", reason="read_failed")
        return method(self, *args, **kwargs)
    return read


for _name in READS:
    setattr(SlowQueries, _name, _instrumented(_name))


def app_over(fleet: Fleet, store: ReportQueries, clock: Callable[[], float] = lambda: float(NOW)) -> TestClient:
    app = create_app(store=store, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=clock)
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


def hour_groups(readings: Iterable[ReadingView]) -> list[DeviceHourAggregate]:
    """Per device, UTC hour and field: count, sum and end of the values, computed in Python (what
    the store's ``device_hourly`` computes in SQL), ordered by hour, device and field."""
    groups: dict[tuple[int, str, str], list[ReadingView]] = defaultdict(list)
    for r in readings:
        groups[(r.start - r.start % 3600, r.device, r.field)].append(r)
    return [DeviceHourAggregate(hour=hour, device=device, kind=items[0].kind, zone=items[0].zone, field=fname,
                                count=len(items), total=sum(r.value for r in items),
                                until=max(r.start + r.length for r in items))
            for (hour, device, fname), items in sorted(groups.items())]


async def loop_ticks_during(awaitable: Awaitable[T]) -> tuple[T, int, float]:
    """Await ``awaitable`` while a ticker sleeps ``TICK_S`` in a loop; return its result, how many
    times the ticker ran meanwhile, and the longest time the loop kept it waiting."""
    loop = asyncio.get_running_loop()
    ticks, longest = 0, 0.0

    async def ticker() -> None:
        nonlocal ticks, longest
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            longest = max(longest, now - last)
            last = now
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK_S * 3)
    ticks, longest = 0, 0.0
    try:
        result = await awaitable
    finally:
        task.cancel()
    return result, ticks, longest


@pytest.mark.parametrize("path", [
    "/api/devices", "/healthz", "/api/dashboard", f"/api/readings?from={NOW - 86400}&to={NOW}",
    f"/opendata/readings.csv?from={NOW - 86400}&to={NOW}", "/opendata/ngsi-ld/v1/entities",
])
async def test_the_loop_keeps_running_while_slow_store_reads_serve_a_request(fleet: Fleet, path: str) -> None:
    store = SlowQueries(fleet.store.path, slow=READS)
    try:
        async with app_over(fleet, store) as client:
            async def get() -> int:
                resp = await client.get(path)
                await resp.read()
                return resp.status

            status, ticks, longest = await loop_ticks_during(get())
        assert status == 200 and store.calls
        # Each read blocked its thread for DELAY_S, none the loop's; the loop ran all along (a read on
        # the loop would have let it run not once for DELAY_S or more).
        assert not store.ran_on_this_thread(), store.threads
        assert ticks >= 10, (ticks, longest)
    finally:
        store.close()


async def test_reports_are_acknowledged_while_a_slow_read_is_under_way(fleet: Fleet) -> None:
    store = SlowQueries(fleet.store.path, slow=READS)
    try:
        async with app_over(fleet, store) as client:
            request = asyncio.create_task(client.get("/api/devices"))
            while not store.calls:  # a read is under way
                await asyncio.sleep(0.005)
            acks = len(fleet.acks)
            fleet.feed("sl-01", {"t": "win", "k": "streetlight", "w": NOW, "l": 900, "m": {"lux": 20}})
            while len(fleet.acks) == acks:
                assert not request.done(), "the request ended before the report was acknowledged"
                await asyncio.sleep(0.005)
            assert not request.done()  # ACKed (so committed) while the slow read still ran
            resp = await request
            assert resp.status == 200
    finally:
        store.close()


async def test_healthz_probes_the_store_without_computing_the_fleet(fleet: Fleet) -> None:
    store = SlowQueries(fleet.store.path, slow=["changes_since"])
    try:
        async with app_over(fleet, store) as client:
            resp = await client.get("/healthz")
            body = await resp.json()
            assert body["checks"]["devices"] == 6
            assert store.count("changes_since") == 0 and store.count("last_report_id") == 1
            # While the first fleet snapshot is computed (slowly), /healthz still answers at once.
            devices = asyncio.create_task(client.get("/api/devices"))
            while store.count("changes_since") == 0:
                await asyncio.sleep(0.005)
            resp = await client.get("/healthz")
            assert resp.status == 200 and not devices.done()
            assert (await devices).status == 200
    finally:
        store.close()


async def test_the_fleet_is_read_once_then_only_what_was_stored_since(fleet: Fleet) -> None:
    store = SlowQueries(fleet.store.path, slow=["changes_since"])
    try:
        async with app_over(fleet, store) as client:
            # Concurrent requests share one refresh.
            answers = await asyncio.gather(*(client.get("/api/devices") for _ in range(4)))
            assert [r.status for r in answers] == [200] * 4
            # One read of the whole store for both fleets: the published one up to its mark's bound (all
            # of the fixture's, received at 11:59:55), then the operators' from that bound on.
            watermark = store.last_report_id()
            assert store.args_of("changes_since", "after_id") == [0, watermark]
            assert store.args_of("changes_since", "upto") == [watermark, None]
            store.slow.clear()
            await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": NOW, "l": 900, "m": {"lux": 70}})
            data = await (await client.get("/api/devices/sl-01")).json()
            assert data["latest"]["lux"] == 70  # the new report is there at once
            assert store.args_of("changes_since", "after_id")[2:] == [watermark]
    finally:
        store.close()


async def test_fields_removed_by_retention_leave_the_snapshot_within_a_minute(fleet: Fleet) -> None:
    clock = [float(NOW)]
    async with app_over(fleet, fleet.queries, clock=lambda: clock[0]) as client:
        data = await (await client.get("/api/devices/sl-01")).json()
        assert "mot" in data["latest"]
        await fleet.ingest.run_in_store(fleet.store.apply_retention, {("streetlight", "mot"): 1}, NOW + 10 * 86400)
        clock[0] += 61
        data = await (await client.get("/api/devices/sl-01")).json()
        assert "mot" not in data["latest"] and "lux" in data["latest"]


async def test_the_csv_is_read_one_utc_day_at_a_time_and_matches_every_reading(fleet: Fleet) -> None:
    store = SlowQueries(fleet.store.path)
    since, until = NOW - 2 * 86400 - 3600, NOW + 1  # three UTC days, the first one partly; to rounds down to NOW
    try:
        async with app_over(fleet, store, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 11:00 complete
            resp = await client.get(f"/opendata/readings.csv?from={since}&to={until}")
            assert resp.status == 200 and resp.content_type == "text/csv"
            text = await resp.text()
    finally:
        store.close()
    slices = [(a["start"], a["end"]) for n, a in store.calls if n == "device_hourly"]
    assert slices == [(since, NOW - NOW % 86400 - 86400), (NOW - NOW % 86400 - 86400, NOW - NOW % 86400),
                      (NOW - NOW % 86400, NOW)]
    # Same rows as aggregating every value the published devices released in their value reports (not
    # the alarms': the fixture's fire alarm carries a temperature) in one go, in Python.
    published = {"sl-01", "sl-02", "bin-01", "bin-02"}
    fields = sorted({f for k in load_policy()["kinds"].values() for f in k["fields"]})
    reports = fleet.queries.reports(start=since - 86400, end=until)
    assert any(r.type == "alarm" and r.m for r in reports)
    value_reports = {(r.device, r.w, r.l) for r in reports if r.type != "alarm"}
    readings = [ReadingView(r.device, r.kind, r.zone, r.field, r.w, r.l, r.value)
                for f in fields for r in fleet.queries.readings(field=f, start=since, end=until)
                if r.device in published and (r.device, r.w, r.l) in value_reports]
    assert text == export.rows_to_csv(export.device_hour_rows(hour_groups(readings), load_policy()))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) > 50 and {r["device"] for r in rows} == published
    assert text.count("hour,device,kind") == 1


async def test_a_store_failure_before_the_csv_starts_is_a_json_503(fleet: Fleet) -> None:
    store = SlowQueries(fleet.store.path, fail=["device_hourly"])
    try:
        async with app_over(fleet, store, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 12:05: the CSV shows the fixture
            resp = await client.get(f"/opendata/readings.csv?from={NOW - 2 * 86400}&to={NOW}")
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "backend_unavailable"
    finally:
        store.close()


@pytest.mark.parametrize("coding", ["gzip", "identity"])  # the test client asks for gzip unless told
async def test_a_store_failure_during_the_csv_cuts_the_transfer_off(
        fleet: Fleet, caplog: pytest.LogCaptureFixture, coding: str) -> None:
    store = SlowQueries(fleet.store.path, fail=["device_hourly"], fail_from=2)
    try:
        async with app_over(fleet, store, clock=lambda: float(NOW + INGEST_LAG_S)) as client:  # 12:05: the CSV shows the fixture
            resp = await client.get(f"/opendata/readings.csv?from={NOW - 2 * 86400}&to={NOW}",
                                    headers={"Accept-Encoding": coding})
            assert resp.headers.get("Content-Encoding", "identity") == coding
            assert resp.status == 200  # the first day was sent
            with caplog.at_level(logging.ERROR, logger="gateway.web.opendata"):
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()  # no complete-looking CSV with days missing
            assert any("readings.csv cut off" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


async def test_healthz_says_when_the_store_does_not_answer_in_time(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "HEALTH_TIMEOUT_S", DELAY_S / 5)
    store = SlowQueries(fleet.store.path, slow=["last_report_id"])
    try:
        async with app_over(fleet, store) as client:
            resp = await client.get("/healthz")
            body = await resp.json()
            assert resp.status == 503 and body["reasons"] == ["store not answering"]
    finally:
        store.close()


@pytest.mark.parametrize("slow", [False, True])
async def test_healthz_without_a_registry_reads_the_store_once(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch, slow: bool) -> None:
    """Without a registry the device ids, read from the store, are the probe: no second read."""
    monkeypatch.setattr(source, "HEALTH_TIMEOUT_S", DELAY_S / 5)
    store = SlowQueries(fleet.store.path, slow=["device_ids"] if slow else [])
    app = create_app(store=store, registry=None, policy=load_policy(), metrics_registry=fleet.metrics.registry,
                     admin_token=None, clock=lambda: float(NOW))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            resp = await client.get("/healthz")
            body = await resp.json()
        if slow:
            assert resp.status == 503 and body["reasons"] == ["store not answering"]
        else:
            assert resp.status == 200 and body["checks"]["devices"] == 4  # the devices that reported
        assert [name for name, _ in store.calls] == ["device_ids"]
    finally:
        store.close()


class _WaitingQueries(SlowQueries):
    """A store whose second and later day reads wait until ``gone`` is set (the client has hung up)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gone = threading.Event()

    def device_hourly(self, *args: Any, **kwargs: Any) -> Any:
        if self.count("device_hourly") >= 1:
            assert self.gone.wait(10), "the test never hung up"
        return super().device_hourly(*args, **kwargs)


def _server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.WARNING or r.exc_info is not None]


async def test_a_client_that_stops_reading_the_csv_ends_it_quietly(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """``curl ... | head -c 100``: the export stops at its next write, with no ERROR and no traceback."""
    caplog.set_level(logging.DEBUG)
    store = _WaitingQueries(fleet.store.path)
    app = create_app(store=store, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW + INGEST_LAG_S))  # 12:05: the CSV shows the fixture
    server = await start_http(app, host="127.0.0.1", port=0, shutdown_timeout_s=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /opendata/readings.csv?from={NOW - 5 * 86400}&to={NOW} HTTP/1.1\r\n"
                     "Host: 127.0.0.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"hour,device" in await asyncio.wait_for(reader.read(100), timeout=5)
        writer.transport.abort()  # hang up mid-export
        await asyncio.sleep(0.2)  # the server sees the connection go
        store.gone.set()
    finally:
        await server.stop()  # waits for the handler to finish
        store.close()
    assert store.count("device_hourly") == 2  # the day being read when it hung up, then no more
    assert _server_errors(caplog) == []


async def test_head_of_the_csv_sends_headers_only(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """``curl -I``: no body after the headers (HTTP forbids one) and no store read for it."""
    caplog.set_level(logging.DEBUG)
    store = SlowQueries(fleet.store.path)
    app = create_app(store=store, registry=fleet.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: float(NOW))
    server = await start_http(app, host="127.0.0.1", port=0)
    try:
        for query, status in ((f"from={NOW - 2 * 86400}&to={NOW}", 200), ("from=tomorrow", 400)):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"HEAD /opendata/readings.csv?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status}".encode()), head
            assert body == b"", body[:100]
            if status == 200:
                assert b"Content-Type: text/csv" in head
    finally:
        await server.stop()
        store.close()
    assert store.count("device_hourly") == 0
    assert _server_errors(caplog) == []
