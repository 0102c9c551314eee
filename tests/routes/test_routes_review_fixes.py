"""Malformed OSRM URLs are refused up front (exit 2 / ``bad_value routes.osrm``), and a URL the HTTP
client still refuses falls back to great-circle; the far-depot warning is logged at WARNING once per
depot; the swap suggestion keeps the depot's digits; singular wording; the solver's bounds error is
``matrix`` (no ``param``); the solver and the matrix check take whole floats and any integral type."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.routes import web as routes_web
from gateway.routes.distances import MAX_GREAT_CIRCLE_M, OsrmTable, Place, build_matrix, check_matrix
from gateway.routes.errors import InvalidInputError, MatrixError, NoBinsDueError
from gateway.routes.model import Depot
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.selection import SelectionSettings, select_bins
from gateway.routes.solver import SolverSettings, drop_penalty, solve
from gateway.routes.source import GatewayBinSource
from gateway.routes.web import PlanDefaults, routes_handlers

from osrm_fake import FakeOsrm, start_fake_osrm
from routes_helpers import DAY, ROUND_START, T0, make_bin, run_cli
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(120)

MALFORMED = [
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://[zz]:80", "does not appear to be an IPv4 or IPv6 address"),
    ("http://a b:80", "without spaces or control characters"),
    ("http://osrm\x01:80", "without spaces or control characters"),
    ("http://osrm:5000#x", "without a query (?) or fragment (#)"),
    ("http://osrm/x?y=1", "without a query (?) or fragment (#)"),
    ("http://osrm:5000?", "without a query (?) or fragment (#)"),
]
# Passes the constructor's checks, but http.client cannot encode the host ('label empty or too long').
NOT_IDNA = "http://\u00e4..b:80"


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CityData]:
    """One full bin near the depot."""
    data = CityData(tmp_path_factory.mktemp("city"))
    data.add_device("bin-0", lat="52.371", lon="4.89")
    data.windows("bin-0", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def plan_args(city: CityData, *extra: str) -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89", "--db", str(city.db_path),
            "--time-limit", "0", *extra]


def write_config(tmp_path: Path, city: CityData, osrm: str) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n'
                   f'[routes]\ndepot = "52.37,4.89"\nosrm = {json.dumps(osrm)}\n')
    return cfg


@pytest.mark.parametrize(("url", "why"), MALFORMED)
def test_a_malformed_osrm_url_exits_2_naming_the_problem(city: CityData, url: str, why: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--osrm", url), capsys)
    assert code == 2, err
    assert out == "" and why in err and "unreachable" not in err


@pytest.mark.parametrize(("url", "why"), MALFORMED)
def test_a_malformed_routes_osrm_is_bad_value_for_the_config_loader(city: CityData, tmp_path: Path,
                                                                    url: str, why: str) -> None:
    from gateway.config import load_config
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, city, url))
    assert info.value.key == "routes.osrm" and info.value.reason == "bad_value"
    assert why in str(info.value)


def test_run_check_and_the_cli_refuse_an_unclosed_ipv6_url_without_a_traceback(city: CityData,
                                                                               tmp_path: Path) -> None:
    cfg = write_config(tmp_path, city, "http://[::1")
    check = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(cfg), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1, check.stdout + check.stderr  # gateway run's error exit (docs/gateway.md)
    assert "error (bad_value) [routes.osrm]" in check.stderr and "Traceback" not in check.stderr
    plan = subprocess.run([sys.executable, "-m", "hil.cli.main", *plan_args(city, "--osrm", "http://[::1")],
                          capture_output=True, text=True, timeout=60)
    assert plan.returncode == 2, plan.stderr
    assert "Invalid IPv6 URL" in plan.stderr and "Traceback" not in plan.stderr


def test_a_well_formed_ipv6_osrm_url_is_accepted() -> None:
    assert OsrmTable("http://[::1]:5000/osrm/").base_url == "http://[::1]:5000/osrm"


def test_a_url_http_client_refuses_falls_back_to_great_circle_on_the_cli(
        city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--osrm", NOT_IDNA), capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["stops"] == 1 and doc["distance_source"].startswith("great-circle (fallback: OSRM")
    assert "request failed (UnicodeError" in err and "falling back to great-circle" in err


async def test_a_url_http_client_refuses_is_a_200_plan_on_the_api(city: CityData) -> None:
    app = web.Application()
    source = GatewayBinSource(city.db_path, city.registry_dir)
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, distances=OsrmTable(NOT_IDNA, timeout_s=2))
    app.add_routes(routes_handlers(source, defaults, clock=lambda: float(T0 - 3600)))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/routes/plan")
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
    assert doc["stops"] == 1 and doc["distance_source"].startswith("great-circle (fallback")
    assert any("falling back to great-circle" in w for w in doc["warnings"]), doc["warnings"]


async def test_an_invalid_url_built_at_fetch_time_falls_back() -> None:
    # The profile is not part of the checked base URL: a space in it makes http.client raise InvalidURL.
    runner, url = await start_fake_osrm(FakeOsrm())
    places = [Place("depot", 52.37, 4.89), Place("b", 52.38, 4.9)]
    try:
        matrix, source, warnings = await asyncio.to_thread(
            build_matrix, OsrmTable(url, profile="driving car", timeout_s=5), places)
    finally:
        await runner.cleanup()
    assert source.startswith("great-circle (fallback")
    assert matrix[0][1] > 1000
    assert len(warnings) == 1 and "InvalidURL" in warnings[0], warnings


def _far_bins() -> list:
    return [make_bin(f"b{i}", [90] * 3, lat=52.37 + i / 1000, lon=4.89) for i in range(2)]


def test_the_far_depot_warning_is_logged_at_warning_once_per_depot(caplog: pytest.LogCaptureFixture) -> None:
    bins = _far_bins()
    depot = Depot(48.851234, 2.351234)  # Paris, unique to this test (the process remembers depots)
    caplog.set_level(logging.INFO, logger="gateway.routes.planner")
    levels = []
    for _ in range(3):
        caplog.clear()
        plan = plan_collection(bins, PlanSettings(day=DAY, depot=depot, time_limit_s=0))
        assert any("km from the nearest due bin" in w for w in plan.warnings)  # the plan carries it every time
        levels.append([r.levelno for r in caplog.records if "km from the nearest due bin" in r.getMessage()])
    assert levels == [[logging.WARNING], [logging.INFO], [logging.INFO]]
    caplog.clear()
    plan_collection(bins, PlanSettings(day=DAY, depot=Depot(48.861234, 2.351234), time_limit_s=0))
    assert [r.levelno for r in caplog.records if "km from the nearest due bin" in r.getMessage()] \
        == [logging.WARNING]  # another depot is news


def test_the_swap_suggestion_keeps_every_digit_of_the_depot() -> None:
    bins = [make_bin(f"b{i}", [90] * 3, lat=52.37 + i / 1000, lon=4.89) for i in range(2)]
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=Depot(4.891234, 52.370123), time_limit_s=0))
    (warning,) = plan.warnings
    assert warning.startswith("depot 4.891234,52.370123 is ")
    assert "did you mean 52.370123,4.891234 (LAT,LON)?" in warning


def test_one_bin_left_over_is_worded_in_the_singular() -> None:
    bins = [make_bin("b0", [90] * 3, lat=52.371, lon=4.89), make_bin("b1", [90] * 3, lat=52.372, lon=4.89)]
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=Depot(52.37, 4.89), vehicles=1, capacity_l=300,
                                              time_limit_s=0))
    assert len(plan.unserved) == 1
    assert "1 due bin does not fit 1 vehicle of 300 L; plan it on another vehicle or round" in plan.warnings


def test_the_cli_summary_says_1_bin_considered(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(plan_args(city, "--vehicles", "1"), capsys)
    assert code == 0, err
    assert "1 stop on 1 route," in err and ", 1 bin considered," in err


def test_the_solver_bounds_error_is_matrix_without_a_param() -> None:
    with pytest.raises(MatrixError, match="64-bit") as info:
        drop_penalty(200_000, MAX_GREAT_CIRCLE_M, 200)
    exc = info.value
    assert (exc.reason, exc.http_status, exc.exit_code) == ("matrix", 400, 2)
    body = json.loads(routes_web._error(exc).text)["error"]
    assert body["code"] == "matrix" and "param" not in body


def _candidates(n: int) -> list:
    bins = [make_bin(f"b{i}", [90] * 3, lat=52.37 + i / 1000) for i in range(n)]
    sel = SelectionSettings(round_start=ROUND_START, next_round=ROUND_START.replace(day=24))
    return select_bins(bins, sel)[0]


@pytest.mark.parametrize("kind", [float, np.int64, np.float64, np.int32])
def test_the_solver_takes_whole_floats_and_any_integral_type(kind: type) -> None:
    cands = _candidates(3)
    matrix = [[kind(0 if a == b else 1500) for b in range(4)] for a in range(4)]
    sol = solve(cands, matrix, SolverSettings(vehicles=1, capacity_l=10_000, time_limit_s=0))
    assert sorted(i for r in sol.routes for i in r) == [0, 1, 2]
    ints = check_matrix(matrix, "test", 4)
    assert ints[0][1] == 1500 and all(type(v) is int for row in ints for v in row)


@pytest.mark.parametrize("bad", [1500.5, float("nan"), -1.0, True, "1500", float(MAX_GREAT_CIRCLE_M + 1)])
def test_the_solver_refuses_other_values_with_the_same_message(bad: object) -> None:
    cands = _candidates(2)
    matrix: list[list[object]] = [[0, 1500, 1500], [1500, 0, bad], [1500, 1500, 0]]
    with pytest.raises(MatrixError, match=r"distance \[1\]\[2\] = .* is not whole metres from 0 to 20100000"):
        solve(cands, matrix, SolverSettings(vehicles=1, capacity_l=10_000, time_limit_s=0))  # type: ignore[arg-type]


class _FloatDistances:
    """A third-party provider answering whole floats, as a numpy-based one would."""

    description = "float provider"

    def matrix(self, places: Sequence[Place]) -> list[list[float]]:
        return [[0.0 if a == b else 1500.0 for b in places] for a in places]


def test_a_provider_of_whole_floats_plans_with_int_distances() -> None:
    bins = [make_bin(f"b{i}", [90] * 3, lat=52.37 + i / 1000, lon=4.89) for i in range(2)]
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=Depot(52.37, 4.89), time_limit_s=0,
                                              distances=_FloatDistances()))  # type: ignore[arg-type]
    assert plan.distance_source == "float provider"
    assert plan.total_distance_m == 4500 and type(plan.total_distance_m) is int


def _city_with(*extra: tuple[str, float, float, int]) -> list:
    """Ten registered bins around Amsterdam, half full, plus ``extra`` (id, lat, lon, fill)."""
    bins = [make_bin(f"c{i}", [90 if i < 5 else 30] * 3, lat=52.36 + i / 500, lon=4.88 + i / 700) for i in range(10)]
    return bins + [make_bin(b, [fill] * 3, lat=lat, lon=lon) for b, lat, lon, fill in extra]


def test_a_mistyped_bin_that_is_the_only_due_bin_is_not_routed() -> None:
    """It was routed (6 005 km) because 'far' was judged among the day's due bins only. Test fails before."""
    bins = [b for b in _city_with(("typo", -1.37, 4.89, 90)) if b.id == "typo" or b.id >= "c5"]
    with pytest.raises(NoBinsDueError) as info:
        plan_collection(bins, PlanSettings(day=DAY, depot=Depot(52.37, 4.89), time_limit_s=0))
    ((bin_id, reason),) = [s for s in info.value.skipped if s[0] == "typo"]
    assert "from the middle of the registered bins" in reason and "far_bin_km 200 km from both" in reason


def test_far_bin_km_plans_a_real_bin_farther_away_and_0_turns_the_check_off() -> None:
    """A real bin 210 km away was skipped for ever, with no way to plan it. Test fails before."""
    bins = _city_with(("remote", 52.37 + 210 / 111.2, 4.89, 90))
    depot = Depot(52.37, 4.89)
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=depot, time_limit_s=0))
    assert [s[0] for s in plan.skipped if "middle" in s[1]] == ["remote"]
    for km in (300.0, 0.0):
        plan = plan_collection(bins, PlanSettings(day=DAY, depot=depot, time_limit_s=0, far_bin_km=km))
        assert "remote" in {s.candidate.bin.id for r in plan.routes for s in r.stops}


def test_far_bin_km_is_a_routes_key_and_a_flag(tmp_path: Path) -> None:
    from gateway.routes.config import ROUTES_KEYS, parse_plan_defaults

    assert "far_bin_km" in ROUTES_KEYS
    assert parse_plan_defaults({"far_bin_km": 0}, base=tmp_path).far_bin_km == 0
    assert parse_plan_defaults({}, base=tmp_path).far_bin_km == 200
    for bad, needle in ((-1, "must be"), (30000, "at most"), ("200", "must be a number")):
        with pytest.raises(InvalidInputError, match=needle) as info:
            parse_plan_defaults({"far_bin_km": bad}, base=tmp_path)
        assert info.value.field == "routes.far_bin_km"
