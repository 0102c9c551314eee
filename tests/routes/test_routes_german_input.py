"""German-locale input (i18n QA): thousands separators in litres, and CSV files as German Excel saves them.

"1.100" (1 100 L, the standard container) was read as 1.1 L and every stop planned with a load of 0 L;
a ';'-separated, decimal-comma or Windows-1252 CSV was refused without saying how to save it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.routes.config import load_bin_volumes, parse_plan_defaults
from gateway.routes.distances import CsvMatrix, Place
from gateway.routes.errors import InvalidInputError, MatrixError

from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(120)
DEPOT = "52.37,4.89"
PLACES = [Place("depot", 52.37, 4.89), Place("bin-00", 52.38, 4.89), Place("bin-01", 52.39, 4.89)]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CityData]:
    """Three bins at 90 % (due), read-only for the tests."""
    data = CityData(tmp_path_factory.mktemp("city"))
    for i in range(3):
        data.add_device(f"bin-{i:02d}", zone="z0", lat=f"52.{370 + 3 * i}", lon="4.890")
        data.windows(f"bin-{i:02d}", T0 - 8 * WINDOW_S, [90] * 8)
    yield data
    data.close()


def plan_args(city: CityData, *extra: str) -> list[str]:
    return ["routes", "plan", "--date", "2026-11-23", "--depot", DEPOT, "--db", str(city.db_path),
            "--time-limit", "0", *extra]


def loads(out: str) -> dict[str, float]:
    return {s["bin_id"]: s["load_l"] for r in json.loads(out)["routes"] for s in r["stops"]}


# --- 1. thousands separators and floors of litre values ---------------------------------------

@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--bin-volume", "1.100", "invalid bin volume '1.100': 1.100 looks like 1100 written with a thousands "
                              "separator; write 1100"),
    ("--capacity", "10.000", "invalid capacity '10.000': 10.000 looks like 10000 written with a thousands "
                             "separator; write 10000"),
    # above the floor as a decimal, still refused: 100.000 is never 100 L with three zero decimals
    ("--capacity", "100.000", "100.000 looks like 100000"),
    ("--capacity", "1.000.000", "write 1000000"),
    ("--bin-volume", "5", "invalid bin volume '5': 5 L is below the minimum of 10 L"),
    ("--bin-volume", "1.1", "1.1 L is below the minimum of 10 L"),
    ("--capacity", "99", "invalid capacity '99': 99 L is below the minimum of 100 L"),
    # review: a sign got past the thousands check (+100.000 planned as 100 L); 0.500 is a decimal, not 0500
    ("--capacity", "+100.000", "+100.000 looks like 100000 written with a thousands separator; write 100000"),
    ("--bin-volume", "+60.000", "write 60000"),
    ("--bin-volume", "0.500", "0.5 L is below the minimum of 10 L"),
])
def test_litre_flags_refuse_thousands_separators_and_tiny_values(
        city: CityData, capsys: pytest.CaptureFixture[str], flag: str, value: str, needle: str) -> None:
    code, out, err = run_cli(plan_args(city, flag, value), capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"civicedge routes plan: invalid {flag[2:].replace('-', ' ')} '{value}': ")
    assert needle in err and err.count("\n") == 1


def test_litre_values_at_the_floors_and_with_a_decimal_point_still_plan(
        city: CityData, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(plan_args(city, "--bin-volume", "10", "--capacity", "100"), capsys)
    assert code == 0, err
    assert loads(out) == {"bin-00": 9.0, "bin-01": 9.0, "bin-02": 9.0}
    code, out, err = run_cli(plan_args(city, "--bin-volume", "1100.0"), capsys)
    assert code == 0, err
    assert loads(out)["bin-00"] == 990.0


@pytest.mark.parametrize(("line", "needle"), [
    # TOML reads 1.100 as the float 1.1: the loader cannot see the text, so it names the guess
    ("bin_volume_l = 1.100", "invalid routes.bin_volume_l 1.1: 1.1 L is below the minimum of 10 L "
                             "(a thousands separator? write 1100)"),
    ("capacity_l = 10.000", "invalid routes.capacity_l 10.0: 10 L is below the minimum of 100 L "
                            "(a thousands separator? write 10000)"),
    ("capacity_l = 50", "invalid routes.capacity_l 50: 50 L is below the minimum of 100 L"),
    ("bin_volume_l = 2.5", "invalid routes.bin_volume_l 2.5: 2.5 L is below the minimum of 10 L (a thousands separator? write 2500)"),
])
def test_config_litres_below_the_floor_exit_2(city: CityData, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              line: str, needle: str) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{city.root}"\n\n[routes]\ndepot = "{DEPOT}"\n{line}\n')
    code, out, err = run_cli(["routes", "plan", "--date", "2026-11-23", "--config", str(cfg)], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"civicedge routes plan: {needle}"), err


@pytest.mark.parametrize(("content", "needle"), [
    ("id,volume_l\nbin-a,1.100\n", "line 2: volume_l '1.100' of 'bin-a': 1.100 looks like 1100 written with a "
                                   "thousands separator; write 1100"),
    ("id,volume_l\nbin-a,8\n", "line 2: volume_l '8' of 'bin-a': 8 L is below the minimum of 10 L"),
    ("id;volume_l\nbin-a;1.100\n", "line 2: volume_l '1.100' of 'bin-a': 1.100 looks like 1100"),
    # a decimal comma is a decimal: 1,100 L is 1.1 L, below the floor (not a thousands separator)
    ("id;volume_l\nbin-a;1,100\n", "line 2: volume_l '1,100' of 'bin-a': 1.1 L is below the minimum of 10 L"),
])
def test_bin_volumes_csv_litres(tmp_path: Path, content: str, needle: str) -> None:
    vols = tmp_path / "v.csv"
    vols.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        load_bin_volumes(vols)
    assert needle in info.value.problem


# --- 2. CSV files as German Excel saves them ----------------------------------------------------

def test_semicolon_bin_volumes_with_decimal_commas_plan(city: CityData, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """German Excel's "CSV (Trennzeichen-getrennt)", but saved as UTF-8 with its byte order mark."""
    vols = tmp_path / "vols.csv"
    vols.write_bytes("\ufeffid;volume_l\r\nbin-00;1100\r\nbin-01;240,5\r\n;\r\n".encode("utf-8"))
    code, out, err = run_cli(plan_args(city, "--bin-volumes", str(vols)), capsys)
    assert code == 0, err
    assert loads(out) == {"bin-00": 990.0, "bin-01": round(0.9 * 240.5, 1), "bin-02": 216.0}


def test_excel_grouped_numbers_and_trailing_empty_cells_in_a_semicolon_file(tmp_path: Path) -> None:
    """Review: Excel's '1.100,5' (thousands points with a decimal comma) was 'not a number', and the empty
    cells Excel writes when its used range is wider made the header wrong."""
    (tmp_path / "v.csv").write_text("id;volume_l;\nbin-a;1.100,5;\nbin-b;240;;\n", encoding="utf-8")
    assert load_bin_volumes(tmp_path / "v.csv") == {"bin-a": 1100.5, "bin-b": 240.0}
    path = tmp_path / "m.csv"
    path.write_text("id;depot;bin-00;bin-01;\ndepot;0;1.200,4;2500;\nbin-00;1300;0;900;\nbin-01;2.400;800;0;\n",
                    encoding="utf-8")
    with pytest.raises(MatrixError) as info:  # a grouped number without a decimal comma stays ambiguous
        CsvMatrix(path)
    assert "2.400 looks like 2400" in info.value.problem
    path.write_text("id;depot;bin-00;bin-01;\ndepot;0;1.200,4;2500;\nbin-00;1300;0;900;\nbin-01;2400;800;0;\n",
                    encoding="utf-8")
    assert CsvMatrix(path).matrix(PLACES) == [[0, 1200, 2500], [1300, 0, 900], [2400, 800, 0]]


def test_a_byte_order_mark_counts_as_a_column_after_line_1() -> None:
    from gateway.routes.csv_text import CsvTextError, decode_csv_bytes

    with pytest.raises(CsvTextError) as info:
        decode_csv_bytes("id,volume_l\n\ufeffbin,\xfc".encode("utf-8")[:-2] + b"\xfc")
    assert "line 2, column 6 has byte 0xfc" in str(info.value)


def test_semicolon_bin_volumes_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_text('id;volume_l\n"bin;a";660\nbin-b;"1100,0"\n', encoding="utf-8")
    defaults = parse_plan_defaults({"bin_volumes": "v.csv"}, base=tmp_path)
    assert defaults.bin_volumes_l == {"bin;a": 660.0, "bin-b": 1100.0}


@pytest.mark.parametrize(("content", "needle"), [
    # a comma file keeps its rules: a decimal comma is an extra cell, not a decimal
    ("id,volume_l\nbin-a,240,5\n", "line 2: expected id,volume_l"),
    # a ';' row in a ';' file with a cell too many is named with ';'
    ("id;volume_l\nbin-a;240;5\n", "line 2: expected id;volume_l"),
    ("id;litres\nbin-a;240\n", "first row must be the header id,volume_l or id;volume_l"),
    # a ';' header whose first cell is not id is not read as ';'-separated: the separator is named
    ("ID;volume_l\nbin-a;240\n", "(this file separates cells with ';' (semicolon): its first cell must then be id)"),
])
def test_semicolon_bin_volumes_errors(tmp_path: Path, content: str, needle: str) -> None:
    vols = tmp_path / "v.csv"
    vols.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        load_bin_volumes(vols)
    assert needle in info.value.problem


def test_windows_1252_bin_volumes_name_line_column_and_what_to_do(tmp_path: Path) -> None:
    """German Excel's plain "CSV" is Windows-1252: it was a raw codec message with no position."""
    vols = tmp_path / "v.csv"
    vols.write_bytes("id;volume_l\nbin-a;240\nMüllplatz-1;1100\n".encode("cp1252"))
    with pytest.raises(InvalidInputError) as info:
        load_bin_volumes(vols, field="routes.bin_volumes")
    assert info.value.field == "routes.bin_volumes"
    assert info.value.problem == ("not UTF-8 text: line 3, column 2 has byte 0xfc ('ü' in Windows-1252); "
                                  "saved as Windows-1252? save as CSV UTF-8")


def test_utf16_bin_volumes_are_named(tmp_path: Path) -> None:
    vols = tmp_path / "v.csv"
    vols.write_bytes("id,volume_l\nbin-a,240\n".encode("utf-16"))
    with pytest.raises(InvalidInputError) as info:
        load_bin_volumes(vols)
    assert "UTF-16 byte order mark" in info.value.problem and "save as CSV UTF-8" in info.value.problem


def test_semicolon_matrix_with_decimal_commas(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfid;depot;bin-00;bin-01\r\ndepot;0;1200,4;2500\r\n"
                     b"bin-00;1300;0;900,6\r\nbin-01;2400,5;800;0\r\n")
    assert CsvMatrix(path).matrix(PLACES) == [[0, 1200, 2500], [1300, 0, 901], [2400, 800, 0]]


@pytest.mark.parametrize(("content", "problem"), [
    # in a ';' file a dot between groups of three digits is a thousands separator, not 1.5 m
    ("id;depot;a\ndepot;0;1.500\na;1;0\n", "line 2, column 'a': 1.500 looks like 1500 written with a thousands "
                                          "separator; write 1500"),
    ("id;depot;a\ndepot;0;1,5,0\na;1;0\n", "line 2, column 'a': '1,5,0' is not a number"),
    ("id;depot;a\ndepot;0;1\na;1\n", "line 3: 1 distances for 2 columns"),
    # the comma file's rules are unchanged: a decimal comma there is a cell too many
    ("id,depot,a\ndepot,0,1\na,1,0,5\n", "line 3: 3 distances for 2 columns"),
    ("ID;depot;a\ndepot;0;1\na;1;0\n", "header row names no place ids (this file separates cells with ';'"),
])
def test_semicolon_matrix_errors(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MatrixError) as info:
        CsvMatrix(path)
    assert problem in info.value.problem


def test_windows_1252_matrix_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes("id;depot;Straße-1\ndepot;0;12\nStraße-1;21;0\n".encode("cp1252"))
    with pytest.raises(MatrixError) as info:
        CsvMatrix(path)
    assert info.value.problem == ("not UTF-8 text: line 1, column 14 has byte 0xdf ('ß' in Windows-1252); "
                                  "saved as Windows-1252? save as CSV UTF-8")


def test_semicolon_matrix_plans_from_the_command_line(city: CityData, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ids = ["depot", "bin-00", "bin-01", "bin-02"]
    rows = [";".join(["id", *ids])] + [";".join([a, *("0" if a == b else "1234,4" for b in ids)]) for a in ids]
    path = tmp_path / "m.csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    code, out, err = run_cli(plan_args(city, "--matrix", str(path)), capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["distance_source"].startswith("CSV matrix") and plan["total_distance_m"] % 1234 == 0


@pytest.mark.parametrize(("text", "key", "needle"), [
    ("bin_volume_l = 1.100\n", "routes.bin_volume_l", "(a thousands separator? write 1100)"),
    ("capacity_l = 10.000\n", "routes.capacity_l", "(a thousands separator? write 10000)"),
    ('bin_volumes = "v.csv"\n', "routes.bin_volumes", "1.100 looks like 1100 written with a thousands separator"),
])
def test_gateway_config_check_refuses_thousands_separators(tmp_path: Path, text: str, key: str, needle: str) -> None:
    """``civicedge gateway run`` / ``run --check`` validate [routes] with the same rules (bad_value)."""
    (tmp_path / "v.csv").write_text("id;volume_l\nbin-a;1.100\n", encoding="utf-8")
    path = tmp_path / "gateway.toml"
    path.write_text("[http]\nenabled = false\n[routes]\n" + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.reason, info.value.key) == ("bad_value", key)
    assert needle in str(info.value)


def test_gateway_config_accepts_a_semicolon_bin_volumes_file(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_bytes("\ufeffid;volume_l\r\nbin-a;1100\r\nbin-b;240,5\r\n".encode("utf-8"))
    path = tmp_path / "gateway.toml"
    path.write_text('[http]\nenabled = false\n[routes]\nbin_volumes = "v.csv"\nbin_volume_l = 1100\n')
    load_config(path)  # raises ConfigError when refused
    assert parse_plan_defaults({"bin_volumes": "v.csv"}, base=tmp_path).bin_volumes_l == {"bin-a": 1100.0,
                                                                                          "bin-b": 240.5}
