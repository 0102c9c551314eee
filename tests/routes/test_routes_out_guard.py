"""``routes plan --out FILE`` never replaces stored data: the gateway's files and SQLite databases are refused
even with --force, another existing file without --force, before planning and on a planning failure too
(nothing is written, exit 2). Before, the store was replaced by the plan or by the error JSON."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData


@pytest.fixture
def city(tmp_path: Path) -> Iterator[CityData]:
    data = CityData(tmp_path / "city")
    for i in range(3):
        data.add_device(f"bin-{i}", lat=f"52.{370 + i}", lon="4.89")
        data.windows(f"bin-{i}", T0 - 4 * WINDOW_S, [90] * 4)
    yield data
    data.close()


def plan_argv(city: CityData, *extra: str, fmt: str = "json") -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89", "--db", str(city.db_path),
            "--time-limit", "0", "--format", fmt, *extra]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_report_store_is_refused_also_when_planning_fails(city: CityData, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The brief's case: `--config g.toml --out data/reports.sqlite` ended rc 3 with the store a 489-byte JSON."""
    cfg = tmp_path / "g.toml"
    cfg.write_text('[gateway]\nid = "gw-test"\ndata_dir = "city"\n[registry]\npath = "city/registry"\n')
    before = digest(city.db_path)
    for extra in ((), ("--force",), ("--date", "2000-01-01"), ("--vehicles", "nope")):  # plan, no bins, bad input
        argv = ["routes", "plan", "--depot", "52.37,4.89", "--config", str(cfg), "--time-limit", "0",
                "--out", str(city.db_path), *extra]
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "", err
        assert err == (f"civicedge routes plan: error (gateway_file): {city.db_path} is the report store; routes "
                       "plan never writes over the gateway's own files, not even with --force: give another file "
                       "name\n")
        assert digest(city.db_path) == before


def test_gateway_files_and_databases_are_refused_even_with_force(city: CityData, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    key = next((city.registry_dir / "keys").iterdir())
    sym = tmp_path / "plan.json"
    sym.symlink_to(city.registry_dir / "devices.sqlite")
    copy = tmp_path / "old-store.sqlite"
    sqlite3.connect(copy).execute("CREATE TABLE t (x)").connection.commit()
    cases = [(city.registry_dir / "devices.sqlite", "gateway_file", "is the device registry"),
             (sym, "gateway_file", "is the device registry"),
             (key, "gateway_file", "is the device keys directory"),
             (city.db_path.with_name("reports.sqlite-wal"), "gateway_file", "is the report store's write-ahead log"),
             (city.root / "retention.json", "gateway_file", "is the gateway's retention settings"),
             (copy, "sqlite_file", "is an SQLite database")]
    for target, reason, what in cases:
        existed = target.exists()
        before = digest(target) if existed else None
        code, out, err = run_cli(plan_argv(city, "--out", str(target), "--force"), capsys)
        assert code == 2 and out == ""
        assert err.startswith(f"civicedge routes plan: error ({reason}): {target} {what}"), err
        assert target.exists() == existed and (digest(target) if existed else None) == before


def test_another_existing_file_needs_force(city: CityData, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("depot keys are in the blue box\n")
    for extra in ((), ("--date", "2000-01-01")):  # a plan, and the error file of a failure
        code, _, err = run_cli(plan_argv(city, "--out", str(notes), *extra), capsys)
        assert code == 2 and err == (f"civicedge routes plan: error (exists): {notes} exists and is not an earlier "
                                     "plan (JSON, GeoJSON or CSV); give a new file name, or --force to replace it\n")
        assert notes.read_text() == "depot keys are in the blue box\n"
    code, _, err = run_cli(plan_argv(city, "--out", str(notes), "--force"), capsys)
    assert code == 0, err
    assert json.loads(notes.read_text())["date"] == "2026-11-23"


@pytest.mark.parametrize("fmt", ["json", "geojson", "csv"])
def test_an_earlier_plan_or_failure_is_replaced_without_force(city: CityData, tmp_path: Path, fmt: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"plan.{fmt}"
    out.write_text("")
    assert run_cli(plan_argv(city, "--out", str(out), fmt=fmt), capsys)[0] == 0
    plan = out.read_text()
    # yesterday's plan, then a failure over it, then a plan over the failure; and another format over it
    code, _, err = run_cli(plan_argv(city, "--out", str(out), "--vehicles", "nope", fmt=fmt), capsys)
    assert code == 2 and "now says: no plan (bad_input)" in err
    assert out.read_text() != plan and "nope" in out.read_text()
    assert run_cli(plan_argv(city, "--out", str(out), fmt=fmt), capsys)[0] == 0
    again = out.read_text()  # the plan again (solver_s may differ)
    assert "nope" not in again and again.splitlines()[0] == plan.splitlines()[0] and len(again) > 200
    other = "csv" if fmt != "csv" else "json"
    assert run_cli(plan_argv(city, "--out", str(out), fmt=other), capsys)[0] == 0


def test_help_mentions_force(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(["routes", "plan", "--help"], capsys)
    text = " ".join(capsys.readouterr().out.split())
    assert "--force" in text and "earlier plan" in text and "SQLite databases are always refused" in text
