"""``civicedge routes plan`` against a real gateway data directory: outputs and every bad input."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.routes import cli

from osrm_fake import closed_port
from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(120)
DEPOT = "52.37,4.89"


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CityData]:
    """Twelve bins: six full, two filling fast, three low, one tipped over (read-only for the tests)."""
    data = CityData(tmp_path_factory.mktemp("city"))
    for i in range(12):
        data.add_device(f"bin-{i:02d}", zone=f"z{i % 3}", lat=f"52.{370 + 3 * i}", lon=f"4.{890 + 2 * (i % 5)}")
    for i in range(6):
        data.windows(f"bin-{i:02d}", T0 - 8 * WINDOW_S, [90] * 8)
    for i in (6, 7):
        data.windows(f"bin-{i:02d}", T0 - 24 * WINDOW_S, [10 + 10 * (k // 4) for k in range(24)])
    for i in (8, 9, 10):
        data.windows(f"bin-{i:02d}", T0 - 8 * WINDOW_S, [20] * 8)
    data.windows("bin-11", T0 - 8 * WINDOW_S, [30] * 8, tilt=1)
    data.alarm("bin-11", T0 - 2 * 3600, "tip")
    yield data
    data.close()


def plan_args(city: CityData, *extra: str) -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", DEPOT, "--db", str(city.db_path),
            "--time-limit", "0.3", *extra]


def test_json_plan(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city), capsys)
    assert code == 0, err
    doc = json.loads(out)
    stops = [s for r in doc["routes"] for s in r["stops"]]
    ids = {s["bin_id"] for s in stops}
    assert ids == {f"bin-{i:02d}" for i in range(8)} | {"bin-11"}
    by_id = {s["bin_id"]: s for s in stops}
    assert by_id["bin-11"]["reason"] == "tip" and by_id["bin-11"]["seq"] == 1
    assert by_id["bin-06"]["reason"] == "predicted" and by_id["bin-00"]["reason"] == "full"
    assert by_id["bin-03"]["zone"] == "z0"
    assert "9 stops" in err


def test_csv_to_file_and_geojson(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "crew.csv"
    code, out, err = run_cli(plan_args(city, "--format", "csv", "--out", str(out_file), "--vehicles", "2",
                                   "--capacity", "1000"), capsys)
    assert code == 0 and out == "" and str(out_file) in err
    rows = [r for r in csv.DictReader(io.StringIO(out_file.read_text())) if r["kind"] == "stop"]
    assert len(rows) == 9 and {r["vehicle"] for r in rows} == {"1", "2"}
    code, out, _ = run_cli(plan_args(city, "--format", "geojson", "--threshold", "95%"), capsys)
    assert code == 0
    fc = json.loads(out)
    # at 95 % only the two fast fillers (predicted to reach it) and the tipped bin are due
    assert sorted(f["properties"]["bin_id"] for f in fc["features"] if f["properties"]["kind"] == "stop") == \
        ["bin-06", "bin-07", "bin-11"]


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--depot", "52.37;4.89", "expected LAT,LON"),
    ("--depot", "north gate", "expected LAT,LON"),
    ("--depot", "4.89,185", "outside -180..180"),
    ("--depot", "95,4", "outside -90..90"),
    ("--date", "23/11/2026", "expected YYYY-MM-DD"),
    ("--date", "2026-02-30", "not a calendar date"),
    ("--vehicles", "0", "positive"),
    ("--vehicles", "2.5", "whole number"),
    ("--capacity", "lots", "not a number"),
    ("--threshold", "1.2", "(0, 1]"),
    # QA: said "(or 1%..100%)" though 0.5% is accepted
    ("--threshold", "0%", "must be in (0, 1] as a fraction, or in (0%, 100%] as a percentage"),
    ("--threshold", "100.5%", "or in (0%, 100%] as a percentage"),
    ("--start", "25:00", "HH:MM"),
    ("--tz", "Mars/Olympus", "IANA"),
    ("--vehicles", "100000", "invalid vehicles '100000': must be at most 200"),
    ("--time-limit", "1e10", "invalid time limit '1e10': must be at most 300"),
    ("--date", "9999-12-31", "must be between 2000-01-01 and 2099-12-31"),
    ("--date", "0001-01-01", "must be between 2000-01-01 and 2099-12-31"),
    ("--days-to-next", "100000000", "must be at most 366"),
    ("--capacity", "1e308", "invalid capacity '1e308': must be at most 1000000"),
    ("--bin-volume", "1e308", "invalid bin volume '1e308': must be at most 100000"),
    # ASCII only, as the rest of the API: other scripts' digits and '_' are not read as numbers
    ("--vehicles", "\uff11", "invalid vehicles '\uff11': not a number"),
    ("--vehicles", "1_0", "invalid vehicles '1_0': not a number"),
    ("--capacity", "1_000", "invalid capacity '1_000': not a number"),
    ("--capacity", "\u0661\u0660\u0660\u0660", "not a number"),
    ("--threshold", "\uff10.5", "invalid threshold"),
    ("--threshold", "\uff18\uff10%", "invalid threshold"),
    ("--depot", "\uff15\uff12,4.89", "expected LAT,LON"),
    ("--date", "\u0662\u0660\u0662\u0666-12-05", "expected YYYY-MM-DD"),
    ("--start", "\uff10\uff16:00", "HH:MM"),
    ("--days-to-next", "\uff11", "not a number"),
    ("--time-limit", "\uff11", "not a number"),
    ("--bin-volume", "2_40", "not a number"),
])
def test_bad_input_exit_2(city: CityData, capsys: pytest.CaptureFixture[str], flag: str, value: str,
                          needle: str) -> None:
    argv = plan_args(city)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert out == ""
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("civicedge routes plan: invalid ")  # one line, no traceback


def test_a_depot_starting_with_a_minus_sign(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    """QA: `--depot -33.9,-70.6` fails in argparse ("expected one argument"); the error shows the
    `--depot=-33.9,-70.6` form, and that form is read."""
    argv = plan_args(city)
    i = argv.index("--depot")
    with pytest.raises(SystemExit) as info:
        run_cli(argv[:i] + ["--depot", "-33.9,-70.6"] + argv[i + 2:], capsys)
    assert info.value.code == 2
    assert "--depot=-33.9,-70.6" in capsys.readouterr().err
    code, out, err = run_cli(argv[:i] + ["--depot=-33.9,-70.6"] + argv[i + 2:], capsys)
    assert code == 0, err
    assert json.loads(out)["depot"] == {"lat": -33.9, "lon": -70.6}


def test_thresholds_below_one_percent_are_accepted() -> None:
    """The error's range (0%, 100%] is what is accepted: 0.5% and 0.01% are thresholds."""
    from gateway.routes.parsing import parse_threshold

    assert parse_threshold("0.5%") == pytest.approx(0.005) and parse_threshold("0.01%") == pytest.approx(0.0001)
    assert parse_threshold("100%") == 1.0 and parse_threshold(" 1e-7 ") == pytest.approx(1e-7)


def test_osrm_timeout_bounded(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(plan_args(city, "--osrm", "http://127.0.0.1:1", "--osrm-timeout", "1e308"), capsys)
    assert code == 2 and "invalid osrm timeout '1e308': must be at most 300" in err


@pytest.mark.parametrize("extra", [[], ["--matrix", "roads.csv"]])
def test_osrm_timeout_without_osrm_exit_2(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str]) -> None:
    """Refused as ``[routes] osrm_timeout_s`` without ``osrm`` is, instead of being silently ignored."""
    (tmp_path / "roads.csv").write_text("id,depot\ndepot,0\n")
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n[routes]\ndepot = "{DEPOT}"\n')
    for source in (["--db", str(city.db_path)], ["--config", str(cfg)]):
        argv = ["routes", "plan", "--date", "2026-11-23", "--depot", DEPOT, *source, *extra, "--osrm-timeout", "5"]
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "", err
        assert err.startswith("civicedge routes plan: invalid osrm timeout '5': applies only with --osrm")


def test_osrm_timeout_flag_applies_to_the_configured_osrm(tmp_path: Path) -> None:
    from gateway.routes.distances import OsrmTable

    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-1"\n\n[routes]\nosrm = "http://osrm.local:5000"\nosrm_timeout_s = 3\n')
    parser = argparse.ArgumentParser(prog="civicedge")
    cli.register(parser.add_subparsers(dest="command"))

    def distances(*flags: str) -> OsrmTable:
        d = cli._defaults(parser.parse_args(["routes", "plan", "--config", str(cfg), *flags])).distances
        assert isinstance(d, OsrmTable)
        return d

    assert (distances().base_url, distances().timeout_s) == ("http://osrm.local:5000", 3)
    assert (distances("--osrm-timeout", "5").base_url, distances("--osrm-timeout", "5").timeout_s) == \
        ("http://osrm.local:5000", 5)  # the flag wins over the key (it was ignored)
    assert (distances("--osrm", "http://other:1").base_url, distances("--osrm", "http://other:1").timeout_s) == \
        ("http://other:1", 3)


@pytest.mark.parametrize(("line", "needle"), [
    ('depot = "52.37"', "invalid routes.depot '52.37': expected LAT,LON"),
    ('tz = "Mars/Olympus"', "invalid routes.tz 'Mars/Olympus': not an IANA"),
    ('start = "25:00"', "invalid routes.start '25:00': expected HH:MM"),
    ('threshold = 2', "invalid routes.threshold 2: must be in (0, 1]"),
    ('threshold = "\uff18\uff10%"', "invalid routes.threshold '\uff18\uff10%'"),
    ('capacity_l = 0', "invalid routes.capacity_l 0: must be a positive number"),
    ('bin_volumes = "vols.csv"', "invalid routes.bin_volumes "),
])
def test_config_errors_name_the_routes_key(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           line: str, needle: str) -> None:
    """docs/routes.md: a wrong [routes] key exits 2 naming routes.<key>."""
    (tmp_path / "vols.csv").write_text("id,volume_l\nbin-00,lots\n")
    cfg = tmp_path / "gateway.toml"
    depot = "" if line.startswith("depot") else f'depot = "{DEPOT}"\n'
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n[routes]\n{depot}{line}\n')
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("civicedge routes plan: " + needle), err


def test_config_values_above_the_bounds_exit_2(city: CityData, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n'
                   f'[routes]\ndepot = "{DEPOT}"\nvehicles = 100000\n')
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert code == 2 and out == "" and "invalid routes.vehicles 100000: must be at most 200" in err


def test_bin_volumes_flag(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vols = tmp_path / "vols.csv"
    vols.write_text("id,volume_l\nbin-00,1100\n")
    code, out, err = run_cli(plan_args(city, "--bin-volumes", str(vols)), capsys)
    assert code == 0, err
    loads = {s["bin_id"]: s["load_l"] for r in json.loads(out)["routes"] for s in r["stops"]}
    assert loads["bin-00"] == 990.0 and loads["bin-01"] == 216.0  # 90 % of 1100 L, of the default 240 L
    vols.write_text("id,litres\n")
    code, _, err = run_cli(plan_args(city, "--bin-volumes", str(vols)), capsys)
    assert code == 2 and "id,volume_l" in err
    vols.write_text("id,volume_l\nbin-00,1_100\n")
    code, _, err = run_cli(plan_args(city, "--bin-volumes", str(vols)), capsys)
    assert code == 2 and "line 2: volume_l '1_100' of 'bin-00': not a number" in err


def test_bin_volumes_naming_unknown_bins_warn(city: CityData, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped id would quietly fall back to 240 L: the plan is made, stderr names the unknown ids."""
    vols = tmp_path / "vols.csv"
    vols.write_text("id,volume_l\nbin-00,1100\nnope,240\nbin-O1,660\n")
    code, out, err = run_cli(plan_args(city, "--bin-volumes", str(vols)), capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning: bin volumes")]
    assert len(warned) == 1 and "bin-O1, nope" in warned[0] and "bin-00" not in warned[0]
    assert any("bin-O1, nope" in w for w in json.loads(out)["warnings"])


def test_unwritable_out_and_bare_group(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(plan_args(city, "--out", str(tmp_path / "no" / "such" / "dir.json")), capsys)
    assert code == 2 and "invalid out" in err
    code, out, _ = run_cli(["routes"], capsys)
    assert code == 2 and "plan" in out


def test_no_bins_due_exit_3(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--date", "2026-11-10"), capsys)  # before any report
    assert code == 3 and out == ""
    assert "no bins due on 2026-11-10" in err


def test_capacity_smaller_than_one_bin_exit_4(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--capacity", "100"), capsys)
    assert code == 4 and out == ""
    assert "capacity 100 L is smaller than bin" in err


def test_no_depot_anywhere_exit_2(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["routes", "plan", "--db", str(city.db_path)], capsys)
    assert code == 2 and "invalid depot" in err and "[routes] depot" in err


def test_missing_db_exit_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["routes", "plan", "--depot", DEPOT, "--db", str(tmp_path / "none.sqlite")], capsys)
    assert code == 5 and "none.sqlite" in err


def test_bad_matrix_file_exit_2(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = tmp_path / "m.csv"
    matrix.write_text("id,depot\ndepot,0\n")
    code, _, err = run_cli(plan_args(city, "--matrix", str(matrix)), capsys)
    assert code == 2 and "missing: bin-" in err


def test_unreachable_osrm_falls_back_with_warning(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--osrm", f"http://127.0.0.1:{closed_port()}", "--osrm-timeout", "2"),
                         capsys)
    assert code == 0
    assert "warning:" in err and "unreachable" in err and "great-circle" in err
    assert json.loads(out)["distance_source"].startswith("great-circle (fallback")


def test_config_file_points_at_the_store(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n'
                   f'[routes]\ndepot = "{DEPOT}"\nvehicles = 1\ntime_limit_s = 0\n')
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["stops"] == 9 and doc["vehicles"] == 1 and doc["depot"] == {"lat": 52.37, "lon": 4.89}
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg), "--vehicles", "3"], capsys)
    assert code == 0 and json.loads(out)["vehicles"] == 3  # flags override [routes]
    cfg.write_text("[gateway]\nbogus = 1\n")
    code, _, err = run_cli(["routes", "plan", "--depot", DEPOT, "--config", str(cfg)], capsys)
    assert code == 5 and "bogus" in err


def test_console_script_end_to_end(city: CityData, tmp_path: Path) -> None:
    out = tmp_path / "plan.geojson"
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", *plan_args(city, "--format", "geojson",
                                                                           "--out", str(out))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["type"] == "FeatureCollection"
    bad = subprocess.run([sys.executable, "-m", "hil.cli.main", "routes", "plan", "--depot", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid depot" in bad.stderr


def test_planning_from_a_config_reads_a_data_directory_it_cannot_write(
        city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a read-only mount: root passes access(W_OK), so an ordinary user's answer is emulated.
    real_access = os.access

    def access(p: "str | os.PathLike[str]", mode: int, **kw: object) -> bool:
        inside = Path(p) == city.root or city.root in Path(p).parents
        return real_access(p, mode) and not (inside and mode & os.W_OK)

    monkeypatch.setattr(os, "access", access)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n[routes]\ndepot = "{DEPOT}"\n')
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert code == 0, err
    assert json.loads(out)["routes"]
