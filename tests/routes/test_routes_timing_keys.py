"""``[routes]`` speed_kmh, service_s and max_route_km: read from gateway.toml by `routes plan --config` and
by the gateway's ``/api/routes/plan`` (its CSV, JSON and GeoJSON times), refused with the key named."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.routes.config import load_plan_defaults, parse_plan_defaults
from gateway.routes.errors import InvalidInputError
from gateway.routes.web import routes_for_gateway

from routes_helpers import DAY, T0, run_cli
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path / "city")
    for i in range(3):  # 3.3 km apart: a leg takes minutes, so each speed gives other etas
        data.add_device(f"bin-{i}", lat=f"52.{370 + 30 * i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def gateway_toml(city: CityData, routes: str) -> Path:
    path = city.root.parent / "gateway.toml"
    path.write_text(f'[gateway]\nid = "gw-t"\ndata_dir = "{city.root}"\n\n'
                    f'[routes]\ndepot = "52.37,4.89"\ntime_limit_s = 0\nvehicles = 1\n{routes}')
    return path


def offsets_s(rows: list[dict[str, str]]) -> list[tuple[str, int, float]]:
    """(kind, cumulative_m, seconds after the round start) of each route row of a crew CSV."""
    start = datetime.fromisoformat(rows[0]["round_start"])
    return [(r["kind"], int(r["cumulative_m"]), (datetime.fromisoformat(r["eta"]) - start).total_seconds())
            for r in rows if r["kind"] in ("start", "stop", "return")]


def assert_times(rows: list[dict[str, str]], metres_per_s: float, service_s: float) -> None:
    """Each eta is the distance so far at that speed plus the service time of the bins emptied before (etas are
    whole minutes, cut down)."""
    route = offsets_s(rows)
    assert [k for k, _, _ in route] == ["start", "stop", "stop", "stop", "return"], route
    for emptied, (_, metres, seconds) in enumerate(route[:-1]):
        expected = metres / metres_per_s + max(0, emptied - 1) * service_s
        assert expected - 60 < seconds <= expected, (route, emptied)
    _, metres, seconds = route[-1]
    expected = metres / metres_per_s + 3 * service_s
    assert expected - 60 < seconds <= expected, route


def test_keys_are_read_and_reach_the_plan_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[routes]\ndepot = "52.37,4.89"\nspeed_kmh = 36\nservice_s = 0\nmax_route_km = 12.5\n')
    d = load_plan_defaults(cfg)
    assert (d.speed_kmh, d.service_s, d.max_route_km) == (36, 0, 12.5)
    s = d.settings_for(DAY)
    assert (s.timing().speed_kmh, s.timing().service_s) == (36, 0)
    assert s.solver().max_route_m == 12_500


def test_largest_values_accepted() -> None:
    d = parse_plan_defaults({"speed_kmh": 130, "service_s": 3600, "max_route_km": 2000}, base=Path("/"))
    assert (d.speed_kmh, d.service_s, d.max_route_km) == (130, 3600, 2000)


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("speed_kmh", 0, "must be a positive number"),
    ("speed_kmh", 200, "must be at most 130"),
    ("speed_kmh", "fast", "must be a number"),
    ("speed_kmh", True, "must be a number"),
    ("speed_kmh", float("nan"), "must be a positive number"),
    ("service_s", -1, "must be a number >= 0"),
    ("service_s", 7200, "must be at most 3600"),
    ("service_s", "60s", "must be a number"),
    ("max_route_km", 0, "must be a positive number"),
    ("max_route_km", 5000, "must be at most 2000"),
    ("max_route_km", float("inf"), "must be a positive number"),
    ("max_route_km", [80], "must be a number"),
])
def test_bad_values_are_refused_with_the_key_named(key: str, value: object, problem: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_plan_defaults({key: value}, base=Path("/"))
    assert info.value.field == f"routes.{key}"
    assert info.value.message.startswith(f"invalid routes.{key} ") and problem in info.value.message


@pytest.mark.parametrize(("line", "key", "problem"), [
    ("speed_kmh = 0", "routes.speed_kmh", "must be a positive number"),
    ("service_s = 7200", "routes.service_s", "must be at most 3600"),
    ("max_route_km = -inf", "routes.max_route_km", "must be a positive number"),
    ('max_route_km = "80 km"', "routes.max_route_km", "must be a number"),
])
def test_gateway_config_loader_refuses_them(tmp_path: Path, line: str, key: str, problem: str) -> None:
    """`gateway run` / `run --check` refuse the config as for the other [routes] keys."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{tmp_path}"\n\n[routes]\n{line}\n')
    with pytest.raises(ConfigError, match=problem) as info:
        load_config(cfg)
    assert info.value.key == key and info.value.reason == "bad_value"


def test_gateway_config_loader_accepts_them(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{tmp_path}"\n\n'
                   "[routes]\nspeed_kmh = 30\nservice_s = 90\nmax_route_km = 80\n")
    assert load_config(cfg).id == "gw-1"


def test_cli_plans_with_the_configured_speed_service_time_and_longest_route(
        city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_toml(city, "speed_kmh = 36\nservice_s = 600\n")
    argv = ["routes", "plan", "--date", "2026-11-23", "--config", str(cfg), "--format", "csv"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert_times(list(csv.DictReader(io.StringIO(out))), 10.0, 600)  # 36 km/h is 10 m/s

    code, out, err = run_cli([*argv, "--speed", "72", "--service-time", "0"], capsys)  # the flags win
    assert code == 0, err
    assert_times(list(csv.DictReader(io.StringIO(out))), 20.0, 0)

    cfg = gateway_toml(city, "max_route_km = 7\n")  # to bin-1 and back is 6.7 km
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert all(r["distance_m"] <= 7000 for r in doc["routes"]) and [u["bin_id"] for u in doc["unserved"]] == ["bin-2"]
    assert "routes of at most 7 km" in err
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg),
                              "--max-route-km", "2000"], capsys)
    assert code == 0, err
    assert json.loads(out)["unserved"] == []


@pytest.mark.parametrize(("line", "key"), [("speed_kmh = 500", "speed_kmh"), ("service_s = -5", "service_s"),
                                           ("max_route_km = 0", "max_route_km")])
def test_cli_refuses_a_bad_key_naming_it(city: CityData, line: str, key: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = gateway_toml(city, line + "\n")
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert code != 0 and out == ""
    assert f"routes.{key}" in err, err


def test_help_names_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["routes", "plan", "--help"], capsys)
    text = " ".join(capsys.readouterr().out.split())
    for key, value in (("speed_kmh", "25"), ("service_s", "60"), ("max_route_km", "no limit")):
        assert f"(default: [routes] {key} of --config, else {value})" in text


async def test_api_answers_with_the_configured_times(city: CityData) -> None:
    """The gateway's CSV (and JSON, GeoJSON) carry the times of its [routes] speed_kmh and service_s."""
    cfg = load_config(gateway_toml(city, "speed_kmh = 36\nservice_s = 600\n"))
    app = web.Application()
    app.add_routes(routes_for_gateway(cfg, city.registry, clock=lambda: float(T0 - 3 * 3600)))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/routes/plan", params={"format": "csv"})
        assert resp.status == 200, await resp.text()
        assert_times(list(csv.DictReader(io.StringIO(await resp.text()))), 10.0, 600)
        resp = await client.get("/api/routes/plan")
        doc = await resp.json()
        assert (doc["speed_kmh"], doc["service_s"]) == (36, 600)
        stops = doc["routes"][0]["stops"]
        assert stops[0]["eta"] != stops[1]["eta"]
        resp = await client.get("/api/routes/plan", params={"format": "geojson"})
        props = json.loads(await resp.text())["properties"]
        assert (props["speed_kmh"], props["service_s"]) == (36, 600)
        # nothing due: the CSV's 'none' row says why, as the CLI's file does
        resp = await client.get("/api/routes/plan", params={"format": "csv", "threshold": "0.95"})
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert [r["kind"] for r in rows] == ["none"] and "none of 3 bins" in rows[0]["note"], rows
