"""``GET /api/routes/plan`` served by aiohttp from a real report store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.routes.model import Depot
from gateway.routes.source import GatewayBinSource
from gateway.routes.web import PlanDefaults, routes_for_gateway, routes_handlers

from routes_helpers import T0
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(60)
NOW = T0 - 3 * 3600  # 03:00 UTC on the plan day: "today" is 2026-11-23


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path)
    for i in range(6):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        # Up to 30 min before the round start: the last window before it, T0 - WINDOW_S, is left for
        # tests to add a newer reading (a second report for a stored period would not be stored).
        data.windows(f"bin-{i}", T0 - 6 * WINDOW_S, [90 if i < 4 else 20] * 5)
    yield data
    data.close()


async def client_for(city: CityData, defaults: PlanDefaults) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    source = GatewayBinSource(city.db_path, city.registry_dir)
    app.add_routes(routes_handlers(source, defaults, clock=lambda: float(NOW)))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(city: CityData) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    c = await client_for(city, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0))
    yield c
    await c.close()


async def test_today_json(client: "TestClient[web.Request, web.Application]") -> None:
    resp = await client.get("/api/routes/plan")
    assert resp.status == 200 and resp.content_type == "application/json"
    doc = await resp.json()
    assert doc["date"] == "2026-11-23"
    assert sorted(s["bin_id"] for r in doc["routes"] for s in r["stops"]) == ["bin-0", "bin-1", "bin-2", "bin-3"]


async def test_geojson_and_csv(client: "TestClient[web.Request, web.Application]") -> None:
    resp = await client.get("/api/routes/plan", params={"date": "2026-11-23", "format": "geojson"})
    assert resp.status == 200 and resp.content_type == "application/geo+json"
    fc = json.loads(await resp.text())
    assert fc["type"] == "FeatureCollection" and any(f["geometry"]["type"] == "LineString" for f in fc["features"])
    resp = await client.get("/api/routes/plan", params={"format": "csv", "vehicles": "2", "capacity": "500"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    lines = (await resp.text()).strip().splitlines()
    assert lines[0].startswith("vehicle,stop,bin_id") and sum(",stop," in line for line in lines[1:]) == 4


async def test_overrides_and_no_bins_due(client: "TestClient[web.Request, web.Application]") -> None:
    resp = await client.get("/api/routes/plan", params={"threshold": "0.95"})
    doc = await resp.json()
    assert resp.status == 200
    assert doc["routes"] == [] and doc["stops"] == 0
    assert "no bins due" in doc["notice"]
    resp = await client.get("/api/routes/plan", params={"threshold": "0.1", "depot": "52.40,4.90"})
    doc = await resp.json()
    assert doc["stops"] == 6 and doc["depot"] == {"lat": 52.40, "lon": 4.90}


@pytest.mark.parametrize(("params", "status", "code", "field"), [
    ({"date": "tomorrowish"}, 400, "bad_input", "date"),
    ({"depot": "here"}, 400, "bad_input", "depot"),
    ({"vehicles": "-1"}, 400, "bad_input", "vehicles"),
    ({"vehicles": "5000"}, 400, "bad_input", "vehicles"),
    ({"vehicles": "100000"}, 400, "bad_input", "vehicles"),
    ({"date": "9999-12-31"}, 400, "bad_input", "date"),
    ({"date": "0001-01-01"}, 400, "bad_input", "date"),
    ({"capacity": "1e308"}, 400, "bad_input", "capacity"),
    ({"capacity": "inf"}, 400, "bad_input", "capacity"),
    ({"threshold": "1e308%"}, 400, "bad_input", "threshold"),
    ({"format": "kml"}, 400, "bad_input", "format"),
    ({"capacity": "100"}, 422, "capacity", None),  # the smallest allowed, less than one bin's load
    ({"capacity": "99"}, 400, "bad_input", "capacity"),
    ({"capacity": "10.000"}, 400, "bad_input", "capacity"),  # German 10 000 L, not 10 L
])
async def test_errors(client: "TestClient[web.Request, web.Application]", params: dict[str, str], status: int, code: str, field: str | None) -> None:
    resp = await client.get("/api/routes/plan", params=params)
    assert resp.status == status
    err = (await resp.json())["error"]
    assert err["code"] == code and err["message"]
    if field is not None:
        assert err["field"] == field and err["param"] == field


@pytest.mark.parametrize("name", ["lid", "zone", "osrm_timeout_s", "osrm", "bin_volumes"])
async def test_unknown_parameter_is_named_in_param(client: "TestClient[web.Request, web.Application]",
                                                   name: str) -> None:
    """``param`` names the unknown parameter, as everywhere in the API (it said "query parameter")."""
    resp = await client.get("/api/routes/plan", params={name: "centre"})
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["code"] == "bad_input" and err["param"] == name
    assert err["field"] == "query parameter" and err["value"] == name and "allowed:" in err["message"]


async def test_capacity_error_names_its_param(client: "TestClient[web.Request, web.Application]") -> None:
    resp = await client.get("/api/routes/plan", params={"capacity": "100", "date": "2026-11-23"})
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["code"] == "capacity" and err["param"] == "capacity" and err["message"]
    assert err["capacity_l"] == 100.0 and err["bin_id"].startswith("bin-") and err["load_l"] > 100


@pytest.mark.parametrize(("params", "param"), [
    ({"vehicles": "\uff11"}, "vehicles"),                   # full-width 1
    ({"vehicles": "\u0661"}, "vehicles"),                   # Arabic-Indic 1
    ({"vehicles": "1_0"}, "vehicles"),
    ({"depot": "\uff15\uff12,4.89"}, "depot"),             # full-width 52
    ({"depot": "52.37,\u0664.89"}, "depot"),
    ({"depot": "52.37,4.89\u3000"}, "depot"),               # ideographic space
    ({"capacity": "1_000"}, "capacity"),
    ({"capacity": "\uff11\uff10\uff10\uff10"}, "capacity"),
    ({"threshold": "\uff10.5"}, "threshold"),
    ({"threshold": "\uff18\uff10%"}, "threshold"),
    ({"threshold": "0.5_0"}, "threshold"),
    ({"date": "\u0662\u0660\u0662\u0666-12-05"}, "date"),   # Arabic-Indic 2026
    ({"date": "\uff12\uff10\uff12\uff16-11-23"}, "date"),
])
async def test_numbers_and_dates_are_ascii(client: "TestClient[web.Request, web.Application]",
                                           params: dict[str, str], param: str) -> None:
    """docs/api.md: numbers and dates are ASCII (``limit=１`` is refused, not read as 1)."""
    resp = await client.get("/api/routes/plan", params=params)
    assert resp.status == 400, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "bad_input" and err["param"] == param
    if param == "date":
        assert "expected YYYY-MM-DD" in err["message"]


async def test_ascii_numbers_still_accepted(client: "TestClient[web.Request, web.Application]") -> None:
    resp = await client.get("/api/routes/plan", params={"vehicles": " 2 ", "capacity": "1e4", "threshold": "85%",
                                                        "depot": "+52.37 , 4.89", "date": "2026-11-23"})
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert doc["vehicles"] == 2 and doc["capacity_l"] == 10000 and doc["threshold"] == pytest.approx(0.85)


async def test_a_tiny_threshold_is_not_shown_as_zero_percent(city: CityData) -> None:
    """The no-bins-due notice names the threshold: 0.0001 is 0.01%, not "0%"."""
    from gateway.routes.errors import percent

    assert percent(0.0001) == "0.01%" and percent(0.8) == "80%" and percent(0.57) == "57%"
    # QA: 1e-7 was "1e-05%"; plain decimal notation, 6 significant digits
    assert percent(1e-7) == "0.00001%" and percent(1.5e-9) == "0.00000015%" and percent(0.07) == "7%"
    assert percent(1.0) == "100%" and percent(0.123456789) == "12.3457%"
    for i in range(6):
        city.windows(f"bin-{i}", T0 - WINDOW_S, [0])  # every bin emptied
    c = await client_for(city, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0))
    try:
        resp = await c.get("/api/routes/plan", params={"threshold": "0.0001", "date": "2026-11-23"})
        doc = await resp.json()
        assert resp.status == 200 and doc["stops"] == 0
        assert "at or above 0.01%" in doc["notice"] and "0%" not in doc["notice"].replace("0.01%", "")
    finally:
        await c.close()


async def test_unknown_bin_volume_ids_are_warned_in_the_answer(city: CityData) -> None:
    """A mistyped id in the bin-volumes CSV: the plan is made, its warnings name the id (also with no bin due)."""
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, bin_volumes_l={"bin-0": 660.0, "nope": 240.0})
    c = await client_for(city, defaults)
    try:
        doc = await (await c.get("/api/routes/plan", params={"date": "2026-11-23"})).json()
        assert doc["stops"] == 4 and any("nope" in w and "bin-0" not in w for w in doc["warnings"])
        doc = await (await c.get("/api/routes/plan", params={"date": "2026-11-23", "threshold": "1"})).json()
        assert doc["stops"] == 0 and "notice" in doc and any("nope" in w for w in doc["warnings"])
    finally:
        await c.close()


async def test_unknown_bin_volume_ids_are_logged_at_warning_once(city: CityData,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """QA: every uncached plan request logged the same WARNING; now once per distinct set of ids
    (INFO after that), while every answer still carries it in `warnings`."""
    import logging

    caplog.set_level(logging.INFO, logger="gateway.routes.planner")

    def warned(level: int, needle: str) -> int:
        return sum(1 for r in caplog.records if r.levelno == level and "not registered bins" in r.getMessage()
                   and needle in r.getMessage())

    volumes = {"bin-0": 660.0, "typo-once-a": 240.0}
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, bin_volumes_l=volumes, cache_s=0)
    c = await client_for(city, defaults)
    try:
        for threshold in ("0.8", "0.85", "1"):  # uncached requests, the last with no bin due
            doc = await (await c.get("/api/routes/plan", params={"date": "2026-11-23", "threshold": threshold})).json()
            assert any("typo-once-a" in w for w in doc["warnings"]), threshold
    finally:
        await c.close()
    assert warned(logging.WARNING, "typo-once-a") == 1 and warned(logging.INFO, "typo-once-a") == 2
    # another set of unknown ids (the file was edited) is warned again
    c = await client_for(city, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=0,
                                            bin_volumes_l={**volumes, "typo-once-b": 240.0}))
    try:
        assert (await c.get("/api/routes/plan", params={"date": "2026-11-23"})).status == 200
    finally:
        await c.close()
    assert warned(logging.WARNING, "typo-once-b") == 1


async def test_today_beyond_the_date_range_is_bad_input(city: CityData) -> None:
    """A (simulated) clock past 2099: 400 naming the date, not an overflow while planning "tomorrow"."""
    app = web.Application()
    app.add_routes(routes_handlers(GatewayBinSource(city.db_path, city.registry_dir),
                                   PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0),
                                   clock=lambda: 4102444800.0 - 3600))  # 2099-12-31 23:00 UTC
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/api/routes/plan")).status == 200
        resp = await c.get("/api/routes/plan", params={"date": "tomorrow"})
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["param"] == "date" and "2100-01-01" in err["message"]


class _BrokenSource:
    """A bin source with a defect: raises something that is not a RoutesError."""

    def load(self, as_of: object) -> list[object]:
        raise OverflowError("int too big to convert")


async def test_unexpected_failure_answers_json_not_a_bare_500(caplog: pytest.LogCaptureFixture) -> None:
    app = web.Application()
    app.add_routes(routes_handlers(_BrokenSource(), PlanDefaults(depot=Depot(52.37, 4.89))))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        with caplog.at_level("ERROR", logger="gateway.routes.web"):
            resp = await c.get("/api/routes/plan", params={"date": "2026-11-23"})
        assert resp.status == 500 and resp.content_type == "application/json"
        err = (await resp.json())["error"]
        assert err["code"] == "internal" and "int too big" not in err["message"]
    assert any(r.exc_info and r.exc_info[0] is OverflowError for r in caplog.records)  # traceback kept in the log


async def test_no_depot_configured_and_unreadable_store(city: CityData, tmp_path: Path) -> None:
    c = await client_for(city, PlanDefaults(time_limit_s=0))
    try:
        resp = await c.get("/api/routes/plan")
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "depot"
    finally:
        await c.close()
    app = web.Application()
    app.add_routes(routes_handlers(GatewayBinSource(tmp_path / "gone.sqlite", city.registry_dir),
                                   PlanDefaults(depot=Depot(52.0, 4.0))))
    async with TestClient(TestServer(app)) as c2:
        resp = await c2.get("/api/routes/plan")
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "bin_data"


async def test_cached_until_expiry(city: CityData) -> None:
    c = await client_for(city, PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, cache_s=600))
    try:
        first = await (await c.get("/api/routes/plan")).json()
        city.windows("bin-5", T0 - WINDOW_S, [100])  # new data, but the cached plan is served
        second = await (await c.get("/api/routes/plan")).json()
        assert first == second
        fresh = await (await c.get("/api/routes/plan", params={"threshold": "0.81"})).json()  # another plan: not cached
        assert fresh["stops"] == first["stops"] + 1  # bin-5 at 100% is due in it
    finally:
        await c.close()


async def test_mounted_in_the_gateway_web_app(city: CityData, tmp_path: Path) -> None:
    """The endpoint inside the web engineer's app (its middlewares), configured from gateway.toml."""
    from gateway.config import load_config
    from gateway.resources import load_policy
    from gateway.storage import ReportQueries
    from gateway.web.app import create_app

    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n'
                        '[routes]\ndepot = "52.37,4.89"\nvehicles = 1\ntime_limit_s = 0\n')
    cfg = load_config(cfg_path)
    queries = ReportQueries(cfg.storage.path)
    app = create_app(store=queries, registry=city.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=None, extra_routes=routes_for_gateway(cfg, city.registry))
    try:
        async with TestClient(TestServer(app)) as c:
            resp = await c.get("/api/routes/plan", params={"date": "2026-11-23"})
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
            assert doc["vehicles"] == 1 and doc["stops"] == 4
            resp = await c.get("/api/routes/plan", params={"date": "someday"})
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "date"
    finally:
        queries.close()


def test_a_bad_routes_table_is_refused_when_the_config_is_loaded(city: CityData, tmp_path: Path) -> None:
    """The loader validates [routes] with the planner's own parser, so `run --check` refuses it too."""
    from gateway.config import load_config
    from gateway.errors import ConfigError

    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n[routes]\nvehicles = "many"\n')
    with pytest.raises(ConfigError, match="routes.vehicles 'many': must be a whole number") as info:
        load_config(cfg_path)
    assert info.value.key == "routes.vehicles" and info.value.reason == "bad_value"


async def test_served_by_the_running_gateway(tmp_path: Path) -> None:
    """``Gateway.start()`` mounts the endpoint with the [routes] defaults of its gateway.toml."""
    import aiohttp

    from gateway.config import load_config
    from gateway.service import Gateway

    data = CityData(tmp_path / "data")
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90 if i else 30] * 4)
    data.close()
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text('[gateway]\nid = "gw-routes"\ndata_dir = "data"\n[http]\nport = 0\n\n'
                        '[routes]\ndepot = "52.37,4.89"\ntime_limit_s = 0\n')
    gw = Gateway(load_config(cfg_path))
    await gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{gw.http_port}/api/routes/plan",
                                params={"date": "2026-11-23"}) as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
    finally:
        await gw.stop()
    assert sorted(s["bin_id"] for r in doc["routes"] for s in r["stops"]) == ["bin-1", "bin-2"]


async def test_a_repeated_parameter_is_refused_in_the_gateway(city: CityData) -> None:
    """docs/routes.md: mounted in the gateway's web app, `?vehicles=2&vehicles=3` is 400 `bad_parameter`
    from its middleware (which copy would apply is not obvious), before the planner runs."""
    from gateway.resources import load_policy
    from gateway.storage.queries import ReportQueries
    from gateway.web.app import create_app

    queries = ReportQueries(city.db_path)
    extra = routes_handlers(GatewayBinSource(city.db_path, city.registry_dir),
                            PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0), clock=lambda: float(NOW))
    app = create_app(store=queries, registry=city.registry, policy=load_policy(), metrics_registry=None,
                     admin_token=None, clock=lambda: float(NOW), extra_routes=extra)
    async with TestClient(TestServer(app)) as c:
        resp = await c.get("/api/routes/plan?vehicles=2&date=2026-11-23&vehicles=3")
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert (err["code"], err["param"]) == ("bad_parameter", "vehicles") and "given 2 times" in err["message"]
        resp = await c.get("/api/routes/plan?vehicles=2&date=2026-11-23")
        assert resp.status == 200, await resp.text()
    queries.close()
