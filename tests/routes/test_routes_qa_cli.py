"""QA of `civicedge routes plan` as a waste-operations manager runs it: config errors, --help, the clock."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData


@pytest.mark.parametrize(("text", "needle"), [
    ("[routes\nvehicles = 2\n", "not valid TOML"),
    (None, "No such file"),
])
def test_a_bad_config_file_is_named_as_the_config_file(tmp_path: Path, text: str | None, needle: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "malformed.toml"
    if text is not None:
        cfg.write_text(text)
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89",
                              "--config", str(cfg)], capsys)
    assert code == 5 and out == ""
    assert f"cannot read the config file {cfg}: " in err and needle in err, err
    assert "bin data" not in err, err


def test_help_says_the_config_gives_the_defaults_and_what_the_time_limit_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["routes", "plan", "--help"], capsys)
    text = " ".join(capsys.readouterr().out.split())
    for key, value in (("vehicles", "2"), ("capacity_l", "10000"), ("time_limit_s", "5"), ("threshold", "0.8")):
        assert f"(default: [routes] {key} of --config, else {value})" in text
    assert "(default 2)" not in text and "(default 10000)" not in text and "(default 5)" not in text
    assert "the whole limit is always used" in text and "0 keeps the first solution" in text


def test_today_follows_the_configs_simulated_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's gateway runs on [sim_clock]; `routes plan --config` must plan the demo's day, not the machine's."""
    city = CityData(tmp_path / "data")
    city.add_device("bin-1")
    city.windows("bin-1", T0 - 2 * WINDOW_S, [90, 90])
    city.close()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-t"\ndata_dir = "{tmp_path / "data"}"\n'
                   f"[sim_clock]\nspeed = 1\nvirtual_at = {T0 + 4 * 3600}\nwall_at = {time.time()}\n"
                   '[routes]\ndepot = "52.37,4.89"\ntime_limit_s = 0\n')
    code, out, err = run_cli(["routes", "plan", "--config", str(cfg)], capsys)
    assert code == 0, err
    assert json.loads(out)["date"] == "2026-11-23"


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path / "city")
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def plan_argv(city: CityData, *extra: str) -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89", "--db", str(city.db_path),
            "--time-limit", "0", *extra]


def test_out_never_keeps_yesterdays_plan_looking_current(city: CityData, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """QA: a cron job handed drivers yesterday's crews.csv on a day with nothing due (exit 3) or an error."""
    out = tmp_path / "crews.csv"
    code, _, err = run_cli(plan_argv(city, "--format", "csv", "--out", str(out)), capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {(r["date"], r["round_start"]) for r in rows} == {("2026-11-23", "2026-11-23T06:00:00+00:00")}
    assert {r["kind"] for r in rows} == {"start", "stop", "return"}

    code, _, err = run_cli(plan_argv(city, "--format", "csv", "--out", str(out), "--date", "2026-11-24",
                                     "--threshold", "1"), capsys)
    assert code == 3 and "no bins due on 2026-11-24" in err and f"written to {out}" in err
    (row,) = csv.DictReader(io.StringIO(out.read_text()))
    assert row["kind"] == "none" and row["date"] == "2026-11-24" and row["bin_id"] == ""
    assert row["note"].startswith("no bins due on 2026-11-24")

    code, _, err = run_cli(plan_argv(city, "--format", "csv", "--out", str(out), "--date", "2026-11-25",
                                     "--capacity", "100"), capsys)
    assert code == 4, err
    (row,) = csv.DictReader(io.StringIO(out.read_text()))
    assert row["kind"] == "error" and row["date"] == "2026-11-25" and "no plan: " in row["note"]
    assert "capacity" in row["note"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city", "crews.csv"]  # no temporary file left


@pytest.mark.parametrize("fmt", ["json", "geojson"])
def test_json_and_geojson_outs_say_the_day_and_why_there_is_no_plan(city: CityData, tmp_path: Path, fmt: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"plan.{fmt}"
    code, _, _ = run_cli(plan_argv(city, "--format", fmt, "--out", str(out)), capsys)
    assert code == 0
    doc = json.loads(out.read_text())
    head = doc["properties"] if fmt == "geojson" else doc
    assert head["date"] == "2026-11-23" and head["round_start"] == "2026-11-23T06:00:00+00:00"
    code, _, _ = run_cli(plan_argv(city, "--format", fmt, "--out", str(out), "--threshold", "1"), capsys)
    assert code == 3
    doc = json.loads(out.read_text())
    head = doc["properties"] if fmt == "geojson" else doc
    assert head["date"] == "2026-11-23" and head["notice"].startswith("no bins due on 2026-11-23")
    code, _, _ = run_cli(plan_argv(city, "--format", fmt, "--out", str(out), "--vehicles", "0"), capsys)
    assert code == 2
    doc = json.loads(out.read_text())
    head = doc["properties"] if fmt == "geojson" else doc
    assert head["date"] is None and head["error"]["code"] == "bad_input"  # the command line was not understood
    if fmt == "geojson":
        assert doc["features"] == []


def test_an_unwritable_out_exits_2_and_leaves_nothing(city: CityData, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing-dir" / "crews.csv"
    code, _, err = run_cli(plan_argv(city, "--format", "csv", "--out", str(out)), capsys)
    assert code == 2 and "invalid out" in err and not out.parent.exists()


def test_crew_csv_has_the_depot_legs_times_and_what_the_plan_leaves_out(city: CityData, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """QA (drivers): no depot row or return leg, no times, warnings and unserved bins missing from the CSV."""
    city.add_device("bin-silent", lat="52.373", lon="4.89")  # registered, never reported: skipped
    code, out, err = run_cli(plan_argv(city, "--format", "csv", "--vehicles", "1", "--capacity", "500",
                                       "--speed", "36", "--service-time", "120"), capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    kinds = [r["kind"] for r in rows]
    assert kinds == ["start", "stop", "stop", "return", "unserved", "skipped", "warning"], kinds
    start, first, second, back = rows[:4]
    assert start["bin_id"] == back["bin_id"] == "depot" and start["eta"] == "2026-11-23T06:00+00:00"
    assert int(back["leg_m"]) > 0 and int(back["cumulative_m"]) == int(back["route_distance_m"]) \
        == int(second["cumulative_m"]) + int(back["leg_m"])
    # 36 km/h is 10 m/s; 120 s at each bin emptied before
    def eta_s(row: dict[str, str]) -> float:
        return (datetime.fromisoformat(row["eta"]) - datetime.fromisoformat(start["eta"])).total_seconds()
    assert abs(eta_s(first) - int(first["cumulative_m"]) / 10) < 60
    assert abs(eta_s(second) - (int(second["cumulative_m"]) / 10 + 120)) < 60
    assert abs(eta_s(back) - (int(back["cumulative_m"]) / 10 + 240)) < 60
    assert rows[4]["bin_id"].startswith("bin-") and "not planned" in rows[4]["note"]
    assert rows[5]["bin_id"] == "bin-silent" and "no fill reading" in rows[5]["note"]
    assert "do not fit 1 vehicle" in rows[6]["note"] or "does not fit 1 vehicle" in rows[6]["note"]

    code, out, _ = run_cli(plan_argv(city, "--format", "geojson", "--vehicles", "1", "--capacity", "500"), capsys)
    props = json.loads(out)["properties"]
    assert props["unserved"] == 1 and props["skipped"][0]["bin_id"] == "bin-silent"
    assert any("not fit" in w for w in props["warnings"]) and props["speed_kmh"] == 25.0
    code, out, _ = run_cli(plan_argv(city, "--vehicles", "1", "--capacity", "500"), capsys)
    route = json.loads(out)["routes"][0]
    assert route["start"] == "2026-11-23T06:00+00:00" and route["duration_min"] >= 2 and route["return_leg_m"] > 0
    assert [s["eta"] for s in route["stops"]] == sorted(s["eta"] for s in route["stops"])


def test_max_route_km_leaves_bins_beyond_it_unserved(city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_argv(city, "--max-route-km", "0.3"), capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert all(r["distance_m"] <= 300 for r in doc["routes"]) and [u["bin_id"] for u in doc["unserved"]] == ["bin-2"]
    assert "routes of at most 0.3 km" in err
    code, _, err = run_cli(plan_argv(city, "--max-route-km", "0"), capsys)
    assert code == 2 and "invalid max route" in err


@pytest.mark.parametrize(("flag", "value"), [("--speed", "0"), ("--speed", "200"), ("--service-time", "-1"),
                                             ("--service-time", "7200")])
def test_timing_flags_are_bounded(city: CityData, flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(plan_argv(city, f"{flag}={value}"), capsys)
    assert code == 2 and "invalid" in err, err
