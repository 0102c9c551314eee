"""Huge distances never reach OR-Tools' 64-bit integers: a matrix CSV refuses them (exit 2 / 400
``matrix`` / ``run --check``), an OSRM table holding them falls back to great-circle, and the solver
checks its own sums. Also: an OSRM URL with an invalid port is refused up front."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.routes.distances import MAX_DISTANCE_M, MAX_GREAT_CIRCLE_M, CsvMatrix, Place
from gateway.routes.errors import MatrixError, counted
from gateway.routes.model import Depot
from gateway.routes.planner import PlanSettings, plan_collection
from gateway.routes.solver import MAX_SOLVER_SUM, SolverSettings, drop_penalty, solve
from gateway.routes.selection import SelectionSettings, select_bins
from gateway.routes.source import GatewayBinSource
from gateway.routes.web import PlanDefaults, routes_handlers

from osrm_fake import FakeOsrm, start_fake_osrm
from routes_helpers import DAY, ROUND_START, T0, make_bin, run_cli
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(120)
DEPOT = "52.37,4.89"
HUGE = ["1e300", "9223372036854775807", "1e15", "1000001"]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CityData]:
    """Three full bins near the depot."""
    data = CityData(tmp_path_factory.mktemp("city"))
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{371 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def write_matrix(path: Path, cell: str) -> Path:
    """A matrix of the depot and bin-0..2 whose bin-0 -> bin-1 cell (line 3, column bin-1) is ``cell``."""
    ids = ["depot", "bin-0", "bin-1", "bin-2"]
    lines = ["id," + ",".join(ids)]
    for a in ids:
        cells = ["0" if a == b else ("%s" % cell if (a, b) == ("bin-0", "bin-1") else "1500") for b in ids]
        lines.append(a + "," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def plan_args(city: CityData, *extra: str) -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", DEPOT, "--db", str(city.db_path),
            "--time-limit", "0", *extra]


@pytest.mark.parametrize("cell", HUGE)
def test_a_huge_matrix_cell_exits_2_naming_line_and_column(
        city: CityData, tmp_path: Path, cell: str, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = write_matrix(tmp_path / "roads.csv", cell)
    code, out, err = run_cli(plan_args(city, "--matrix", str(matrix)), capsys)
    assert code == 2, err
    assert out == ""
    assert "line 3, column 'bin-1'" in err and "1,000 km" in err and "Traceback" not in err


def test_the_cli_subprocess_refuses_1e300_without_a_traceback(city: CityData, tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path / "roads.csv", "1e300")
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", *plan_args(city, "--matrix", str(matrix))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    assert "line 3, column 'bin-1'" in proc.stderr


def test_the_largest_allowed_cell_plans(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = write_matrix(tmp_path / "roads.csv", str(MAX_DISTANCE_M))
    code, out, err = run_cli(plan_args(city, "--matrix", str(matrix)), capsys)
    assert code == 0, err
    assert json.loads(out)["stops"] == 3


@pytest.mark.parametrize("cell", ["1e300", "1e15"])
def test_run_check_refuses_a_routes_matrix_with_a_huge_cell(city: CityData, tmp_path: Path, cell: str) -> None:
    write_matrix(tmp_path / "roads.csv", cell)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n'
                   '[routes]\ndepot = "52.37,4.89"\nmatrix = "roads.csv"\n')
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(cfg), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # gateway run's error exit (docs/gateway.md)
    assert "error (bad_value) [routes.matrix]" in proc.stderr, proc.stderr
    assert "line 3, column 'bin-1'" in proc.stderr and "Traceback" not in proc.stderr
    write_matrix(tmp_path / "roads.csv", "2000")  # the same config with a sane matrix passes
    ok = subprocess.run([sys.executable, "-m", "hil.cli.main", "gateway", "run", "--config", str(cfg), "--check"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr


class _HugeDistances:
    """A third-party distance provider (the Python API allows any) that answers 1e15 m between bins."""

    description = "custom huge provider"

    def matrix(self, places: Sequence[Place]) -> list[list[int]]:
        return [[0 if a == b else 10 ** 15 for b in places] for a in places]


async def test_the_api_answers_400_matrix_for_an_unusable_matrix(city: CityData) -> None:
    app = web.Application()
    source = GatewayBinSource(city.db_path, city.registry_dir)
    defaults = PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, distances=_HugeDistances())
    app.add_routes(routes_handlers(source, defaults, clock=lambda: float(T0 - 3600)))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/routes/plan")
        assert resp.status == 400, await resp.text()
        err = (await resp.json())["error"]
        assert err["code"] == "matrix" and "custom huge provider" in err["message"]
        # the error names the plan asked for, so the dashboard can tell whether its round has started
        assert err["date"] == "2026-11-23" and err["round_start"] == "2026-11-23T06:00:00+00:00"


@pytest.mark.parametrize("value", [1e300, 9223372036854775807, 1e15])
async def test_an_osrm_table_with_huge_distances_falls_back_to_great_circle(
        city: CityData, value: float, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeOsrm(off_diagonal=value)
    runner, url = await start_fake_osrm(fake)
    try:
        app = web.Application()
        source = GatewayBinSource(city.db_path, city.registry_dir)
        from gateway.routes.distances import OsrmTable

        defaults = PlanDefaults(depot=Depot(52.37, 4.89), time_limit_s=0, distances=OsrmTable(url, timeout_s=5))
        app.add_routes(routes_handlers(source, defaults, clock=lambda: float(T0 - 3600)))
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/api/routes/plan")
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
    finally:
        await runner.cleanup()
    assert fake.requests, "the fake OSRM was asked"
    assert doc["stops"] == 3 and doc["distance_source"].startswith("great-circle (fallback: OSRM")
    assert any("1,000 km" in w and "falling back to great-circle" in w for w in doc["warnings"]), doc["warnings"]
    assert doc["total_distance_m"] < 10_000


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://127.0.0.1:port"])
def test_an_osrm_url_with_an_invalid_port_exits_2(city: CityData, url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--osrm", url), capsys)
    assert code == 2, err
    assert "invalid port" in err and "unreachable" not in err


def test_a_routes_osrm_url_with_an_invalid_port_is_refused_by_the_config_loader(city: CityData,
                                                                              tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.errors import ConfigError

    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n[routes]\nosrm = "http://osrm:99999"\n')
    with pytest.raises(ConfigError, match="invalid port") as info:
        load_config(cfg)
    assert info.value.key == "routes.osrm" and info.value.reason == "bad_value"


def test_plural_and_singular_in_the_summary(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(plan_args(city, "--vehicles", "1"), capsys)
    assert code == 0, err
    assert "3 stops on 1 route," in err
    assert (counted(1, "stop"), counted(0, "route"), counted(2, "route")) == ("1 stop", "0 routes", "2 routes")


def test_the_solver_refuses_distances_it_cannot_sum() -> None:
    bins = [make_bin(f"b{i}", [90] * 3, lat=52.37 + i / 1000) for i in range(3)]
    sel = SelectionSettings(round_start=ROUND_START, next_round=ROUND_START.replace(day=24))
    cands, _ = select_bins(bins, sel)
    for huge in (10 ** 15, MAX_GREAT_CIRCLE_M + 1, 10 ** 300):
        matrix = [[0 if a == b else huge for b in range(4)] for a in range(4)]
        with pytest.raises(MatrixError, match="whole metres"):
            solve(cands, matrix, SolverSettings(vehicles=2, capacity_l=10_000, time_limit_s=0))
    # the longest distances there are (half the Earth) still solve, with an in-range objective
    far = [[0 if a == b else MAX_GREAT_CIRCLE_M for b in range(4)] for a in range(4)]
    sol = solve(cands, far, SolverSettings(vehicles=2, capacity_l=10_000, time_limit_s=0))
    assert sorted(i for r in sol.routes for i in r) == [0, 1, 2]
    # the penalty bound: fine for a city, refused where the 64-bit objective could overflow
    assert drop_penalty(5000, MAX_GREAT_CIRCLE_M, 200) * 100 * 5000 < MAX_SOLVER_SUM
    with pytest.raises(MatrixError, match="64-bit"):
        drop_penalty(200_000, MAX_GREAT_CIRCLE_M, 200)


def test_a_csv_matrix_of_the_python_api_refuses_a_huge_cell(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match=r"line 3, column 'bin-1'.*1,000 km"):
        CsvMatrix(write_matrix(tmp_path / "m.csv", "1e300"))


def test_a_swapped_depot_warns_and_suggests_lat_lon(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--depot", "4.89,52.37", "--db",
                          str(city.db_path), "--time-limit", "0"], capsys)
    assert code == 0, err  # a warning, not an error
    doc = json.loads(out)
    (warning,) = [w for w in doc["warnings"] if "depot" in w]
    assert "look swapped" in warning and "52.37,4.89" in warning
    assert "warning: depot 4.89,52.37 is" in err and "look swapped" in err
    # the right depot: no warning
    code, out, err = run_cli(plan_args(city), capsys)
    assert code == 0 and not [w for w in json.loads(out)["warnings"] if "depot" in w]


def test_a_far_depot_that_is_not_swapped_warns_without_suggesting_a_swap() -> None:
    bins = [make_bin(f"b{i}", [90] * 3, lat=52.37 + i / 1000, lon=4.89) for i in range(2)]
    plan = plan_collection(bins, PlanSettings(day=DAY, depot=Depot(48.85, 2.35), time_limit_s=0))  # Paris
    (warning,) = plan.warnings
    assert "km from the nearest due bin" in warning and "swapped" not in warning
    near = plan_collection(bins, PlanSettings(day=DAY, depot=Depot(52.0, 4.5), time_limit_s=0))  # ~50 km
    assert near.warnings == ()
