"""The API's plan cache follows the registry: a revoked or moved bin is not served from a plan made
before the change (QA LOW: up to 5 minutes)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.registry import Registry
from gateway.routes.model import BinStatus, Depot
from gateway.routes.source import GatewayBinSource
from gateway.routes.web import CLIENT_PLANS_PER_WINDOW, PlanDefaults, routes_handlers

from routes_helpers import T0
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(60)
NOW = T0 - 3 * 3600


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    for i in range(4):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 6 * WINDOW_S, [90] * 5)
    yield data
    data.close()


def _stops(doc: dict) -> dict[str, tuple[float, float]]:  # type: ignore[type-arg]
    return {s["bin_id"]: (s["lat"], s["lon"]) for r in doc["routes"] for s in r["stops"]}


async def _client(source: GatewayBinSource) -> TestClient:  # type: ignore[type-arg]
    routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=300),
                             clock=lambda: float(NOW))
    app = web.Application()
    app.add_routes(routes)
    app.on_cleanup.append(routes.close)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def _plan(client: TestClient) -> dict[str, tuple[float, float]]:  # type: ignore[type-arg]
    resp = await client.get("/api/routes/plan")
    assert resp.status == 200, await resp.text()
    return _stops(await resp.json())


@pytest.mark.parametrize(("source_kind", "changer_kind"), [
    ("gateway's own", "gateway's own"),  # the admin API's changes
    ("directory", "another process's"),  # the registry opened from its directory, changed by the CLI
    ("gateway's own", "another process's"),  # the gateway's open Registry, changed by the CLI
])
async def test_revoked_and_moved_bins_are_not_served_from_the_cache(city: CityData, source_kind: str,
                                                                    changer_kind: str) -> None:
    """Whoever changes the registry, through whichever connection, the next plan sees it. Test fails before
    (the first two cases; the third fails with a change marker that only counts the gateway's own changes)."""
    source = GatewayBinSource(city.db_path, city.registry if source_kind == "gateway's own" else city.registry_dir)
    client = await _client(source)
    other = None if changer_kind == "gateway's own" else Registry(city.registry_dir)
    changer = other or city.registry
    try:
        first = await _plan(client)
        assert sorted(first) == ["bin-0", "bin-1", "bin-2", "bin-3"]
        assert await _plan(client) == first  # unchanged registry: the cached plan
        changer.revoke("bin-1")
        changer.move("bin-2", lat="52.3800", lon="4.9100")
        after = await _plan(client)
        assert sorted(after) == ["bin-0", "bin-2", "bin-3"]
        changer.retire("bin-3")
        assert sorted(await _plan(client)) == ["bin-0", "bin-2"]
        assert after["bin-2"] == (52.38, 4.91)
    finally:
        if other is not None:
            other.close()
        await client.close()


@pytest.mark.parametrize("source_kind", ["gateway's own", "directory"])
async def test_added_and_rekinded_bins_by_another_connection_are_not_served_from_the_cache(
        city: CityData, source_kind: str) -> None:
    """A bin added by another Registry, and a kind changed by hand in the database file (no API changes a
    kind), are seen by the next request although the gateway's own connection changed nothing."""
    source = GatewayBinSource(city.db_path, city.registry if source_kind == "gateway's own" else city.registry_dir)
    client = await _client(source)
    other = Registry(city.registry_dir)
    try:
        assert sorted(await _plan(client)) == ["bin-0", "bin-1", "bin-2", "bin-3"]
        other.add("bin-9", kind="bin", zone="centre", lat="52.3750", lon="4.8950")
        city.windows("bin-9", T0 - 6 * WINDOW_S, [90] * 5)
        assert sorted(await _plan(client)) == ["bin-0", "bin-1", "bin-2", "bin-3", "bin-9"]
        with sqlite3.connect(city.registry_dir / "devices.sqlite") as conn:
            conn.execute("UPDATE devices SET kind='streetlight' WHERE id='bin-3'")
        conn.close()
        assert sorted(await _plan(client)) == ["bin-0", "bin-1", "bin-2", "bin-9"]
    finally:
        other.close()
        await client.close()


async def test_a_move_by_the_cli_in_another_process_is_seen_by_the_next_request(city: CityData) -> None:
    """``civicedge gateway devices move`` run as its own process while the gateway holds its registry open."""
    client = await _client(GatewayBinSource(city.db_path, city.registry))
    try:
        assert (await _plan(client))["bin-0"] == (52.37, 4.89)
        proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "devices", "move", "bin-0",
                               "--registry", str(city.registry_dir), "--location", "52.3610,4.8810"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (await _plan(client))["bin-0"] == (52.361, 4.881)
    finally:
        await client.close()


async def test_the_registry_directory_replaced_on_disk_is_read_again(city: CityData, tmp_path: Path) -> None:
    """A registry restored from a copy (a new devices.sqlite file) is not taken for the one the cache saw."""
    client = await _client(GatewayBinSource(city.db_path, city.registry_dir))
    try:
        assert sorted(await _plan(client)) == ["bin-0", "bin-1", "bin-2", "bin-3"]
        db = city.registry_dir / "devices.sqlite"
        copy = tmp_path / "restored.sqlite"
        shutil.copyfile(db, copy)
        with sqlite3.connect(copy) as conn:
            conn.execute("DELETE FROM devices WHERE id='bin-2'")
        conn.close()
        os.replace(copy, db)
        assert sorted(await _plan(client)) == ["bin-0", "bin-1", "bin-3"]
    finally:
        await client.close()


@dataclass
class _CountingSource(GatewayBinSource):
    """The gateway's real source, counting the plans it is read for (one read per uncached plan)."""

    loads: int = 0

    def load(self, as_of: datetime) -> list[BinStatus]:
        self.loads += 1
        return super().load(as_of)


async def test_a_fast_simulated_clock_neither_expires_the_cache_nor_trips_the_client_limit(city: CityData) -> None:
    """Under ``[sim_clock]`` at 30x, a 5-minute cache lasted 10 real seconds: a dashboard (or a few tabs of
    it at one address) asking every 20 s made a new plan each time and got 429 too_many_plans at the 11th
    request, though nothing had changed. The cache is timed in real seconds, as the per-client limit.
    Test fails before."""
    real = [1000.0]  # the real (monotonic) clock, stepped by the test
    source = _CountingSource(city.db_path, city.registry)
    routes = routes_handlers(source, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=300),
                             clock=lambda: NOW + 30 * (real[0] - 1000.0), timer=lambda: real[0])
    app = web.Application()
    app.add_routes(routes)
    app.on_cleanup.append(routes.close)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for _ in range(CLIENT_PLANS_PER_WINDOW + 2):  # 12 requests over 220 real s (110 simulated minutes)
            resp = await client.get("/api/routes/plan")
            assert resp.status == 200, await resp.text()
            real[0] += 20.0
        assert source.loads == 1  # one plan, served from the cache since
        real[0] += 300.0  # 5 real minutes after the plan was made: planned again
        assert (await client.get("/api/routes/plan")).status == 200
        assert source.loads == 2
    finally:
        await client.close()


async def test_a_cached_plan_is_rendered_once_per_format_and_never_after_a_change(city: CityData) -> None:
    """A cached answer is the text rendered for the first request (a 4,000-stop JSON took ~10 ms a request);
    a registry change still gives a new plan, rendered anew."""
    routes = routes_handlers(GatewayBinSource(city.db_path, city.registry),
                             PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=300),
                             clock=lambda: float(NOW))
    app = web.Application()
    app.add_routes(routes)
    app.on_cleanup.append(routes.close)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        texts = {}
        for fmt in ("json", "csv", "geojson"):
            first = await client.get("/api/routes/plan", params={"format": fmt})
            again = await client.get("/api/routes/plan", params={"format": fmt})
            assert first.status == again.status == 200
            assert first.content_type == again.content_type
            texts[fmt] = await first.text()
            assert await again.text() == texts[fmt]
        assert len(routes._endpoint.bodies) == 3  # one plan, three formats
        assert "bin-1" in texts["csv"] and "bin-1" in texts["geojson"]
        city.registry.move("bin-1", lat="52.3900", lon="4.9200")
        moved = await (await client.get("/api/routes/plan", params={"format": "csv"})).text()
        assert moved != texts["csv"] and "52.39" in moved
    finally:
        await client.close()


def test_the_registry_version_moves_with_every_change_and_never_repeats_inside_a_transaction(city: CityData) -> None:
    """The cache key's marker: stable while nothing changes, moved by this connection's and another's
    commits, and a one-off value while a write transaction (which may roll back) is open."""
    reg = city.registry
    other = Registry(city.registry_dir)
    try:
        start = reg.version
        assert reg.version == start
        other.move("bin-0", lat="52.3650", lon="4.8900")
        after_other = reg.version
        assert after_other != start and reg.version == after_other
        reg.move("bin-0", lat="52.3660", lon="4.8900")
        after_own = reg.version
        assert after_own not in (start, after_other)
        reg._conn.execute("BEGIN IMMEDIATE")  # as _commit_with_key does around a key file write
        try:
            reg._conn.execute("UPDATE devices SET zone='north' WHERE id='bin-1'")
            inside = {reg.version, reg.version}
        finally:
            reg._conn.execute("ROLLBACK")
        assert len(inside) == 2 and reg.version not in inside | {after_own}
    finally:
        other.close()


def test_a_registry_file_that_gets_an_old_inode_back_is_not_taken_for_the_old_one(
        city: CityData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: a devices.sqlite replaced twice may get the first file's inode back, and an unchanged file
    just opened always has the same version, so (dev, ino, version) repeated the first file's stamp and
    its cached plan was served. The stamp also counts the opens. Test fails before."""
    from gateway.routes import web as routes_web

    stamp = routes_web._RegistryStamp(GatewayBinSource(city.db_path, city.registry_dir))
    inodes = iter([1, 2, 1])  # file A, then B, then C on A's inode

    class _Os:  # the stamp's view of the file system: the registry file's inode as the sequence says
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def stat(path: object) -> os.stat_result:
            real = list(os.stat(path))  # type: ignore[arg-type]
            real[1] = next(inodes)
            return os.stat_result(real)

    monkeypatch.setattr(routes_web, "os", _Os())
    try:
        a, b, c = stamp(), stamp(), stamp()
    finally:
        stamp.close()
    assert a is not None and a != b and a != c and b != c


async def test_expired_plans_and_idle_clients_are_let_go_without_waiting_for_a_new_plan(city: CityData) -> None:
    """Review: expired plans (and their rendered texts) and every client that ever started a plan stayed
    in memory until the next uncached plan, or for good. Test fails before."""
    real = [1000.0]
    routes = routes_handlers(GatewayBinSource(city.db_path, city.registry),
                             PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=300),
                             clock=lambda: float(NOW), timer=lambda: real[0])
    app = web.Application()
    app.add_routes(routes)
    app.on_cleanup.append(routes.close)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert (await client.get("/api/routes/plan")).status == 200
        endpoint = routes._endpoint
        [old_key] = endpoint.cache
        assert endpoint.bodies and list(endpoint.client_starts) == ["127.0.0.1"]
        endpoint.client_starts["203.0.113.9"] = deque([real[0]])  # another client, one plan an hour ago
        real[0] += 3600.0  # an hour later: the plan expired, both clients' windows are over
        # The next request goes through the cache (a new plan for another query): the old plan, its texts and
        # the idle client go.
        city.registry.move("bin-1", lat="52.3900", lon="4.9200")
        assert (await client.get("/api/routes/plan", params={"vehicles": "3"})).status == 200
        assert (await client.get("/api/routes/plan", params={"vehicles": "3"})).status == 200
        assert old_key not in endpoint.cache and len(endpoint.cache) == 1
        live = {id(v[1]) for v in endpoint.cache.values()}
        assert all(plan_id in live for plan_id, _fmt in endpoint.bodies)
        assert list(endpoint.client_starts) == ["127.0.0.1"] and len(endpoint.client_starts["127.0.0.1"]) == 1
    finally:
        await client.close()
