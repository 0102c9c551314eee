"""``[routes]`` table of gateway.toml: defaults for the CLI and the API, each key validated."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.routes.config import PlanDefaults, load_plan_defaults, parse_plan_defaults
from gateway.routes.distances import CsvMatrix, GreatCircle, OsrmTable
from gateway.routes.errors import BinDataError, InvalidInputError, MatrixError
from gateway.routes.model import Depot

from routes_helpers import DAY

FULL = """
[gateway]
id = "gw-1"
data_dir = "{data}"

[routes]
depot = "52.3700,4.8900"
vehicles = 3
capacity_l = 60000
threshold = "85%"
bin_volume_l = 1100
start = "05:30"
tz = "Europe/Amsterdam"
days_to_next_round = 2
time_limit_s = 0
matrix = "roads.csv"
"""


def test_full_table_and_gateway_loader_accepts_it(tmp_path: Path) -> None:
    (tmp_path / "roads.csv").write_text("id,depot\ndepot,0\n")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(FULL.format(data=tmp_path / "data"))
    assert load_config(cfg).id == "gw-1"  # the gateway's own loader does not refuse [routes]
    d = load_plan_defaults(cfg)
    assert d.depot == Depot(52.37, 4.89) and d.vehicles == 3 and d.capacity_l == 60000
    assert d.threshold == pytest.approx(0.85) and d.bin_volume_l == 1100 and d.start == time(5, 30)
    assert str(d.tz) == "Europe/Amsterdam" and d.days_to_next_round == 2 and d.time_limit_s == 0
    assert isinstance(d.distances, CsvMatrix) and d.distances.path == tmp_path / "roads.csv"
    s = d.settings_for(DAY)
    assert s.round_start.isoformat() == "2026-11-23T05:30:00+01:00"
    assert d.settings_for(DAY, vehicles=9, depot=Depot(1.0, 2.0)).vehicles == 9


def test_absent_table_gives_builtin_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gateway]\nid = "x"\n')
    d = load_plan_defaults(cfg)
    assert d == PlanDefaults(distances=d.distances) and isinstance(d.distances, GreatCircle)
    with pytest.raises(InvalidInputError) as info:
        d.settings_for(DAY)
    assert info.value.field == "depot"


def test_osrm_setting() -> None:
    d = parse_plan_defaults({"osrm": "http://osrm.local:5000", "osrm_timeout_s": 3}, base=Path("/"))
    assert isinstance(d.distances, OsrmTable) and d.distances.timeout_s == 3


@pytest.mark.parametrize(("table", "field"), [
    ({"depot": "north"}, "routes.depot"),
    ({"depot": "52.37"}, "routes.depot"),
    ({"depot": "\uff15\uff12,4.89"}, "routes.depot"),  # full-width digits
    ({"depot": [52.0, 4.0]}, "routes.depot"),
    ({"vehicles": 2.5}, "routes.vehicles"),
    ({"vehicles": True}, "routes.vehicles"),
    ({"vehicles": 0}, "routes.vehicles"),
    ({"capacity_l": "big"}, "routes.capacity_l"),
    ({"threshold": 2}, "routes.threshold"),
    ({"threshold": "\uff18\uff10%"}, "routes.threshold"),
    ({"start": "6am"}, "routes.start"),
    ({"start": "\uff10\uff16:00"}, "routes.start"),
    ({"tz": "Nowhere/Else"}, "routes.tz"),
    ({"time_limit_s": -1}, "routes.time_limit_s"),
    ({"vehicles": 100_000}, "routes.vehicles"),
    ({"time_limit_s": 1e10}, "routes.time_limit_s"),
    ({"capacity_l": 1e308}, "routes.capacity_l"),
    ({"bin_volume_l": 1e308}, "routes.bin_volume_l"),
    ({"days_to_next_round": 100_000_000}, "routes.days_to_next_round"),
    ({"osrm": "http://osrm.local:5000", "osrm_timeout_s": 1e308}, "routes.osrm_timeout_s"),
    ({"osrm_timeout_s": 30}, "routes.osrm_timeout_s"),  # nothing to time out without osrm
    ({"colour": "green"}, "routes.colour"),
    ({"matrix": "a.csv", "osrm": "http://x"}, "routes.osrm"),
])
def test_bad_keys(table: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_plan_defaults(table, base=Path("/"))
    assert info.value.field == field
    assert info.value.message.startswith(f"invalid {field} ")  # what `routes plan` prints names the key


def test_largest_values_accepted() -> None:
    d = parse_plan_defaults({"vehicles": 200, "time_limit_s": 300, "capacity_l": 1_000_000, "bin_volume_l": 100_000,
                             "days_to_next_round": 366}, base=Path("/"))
    assert (d.vehicles, d.time_limit_s, d.capacity_l, d.bin_volume_l, d.days_to_next_round) == \
        (200, 300, 1_000_000, 100_000, 366)


@pytest.mark.parametrize(("line", "key", "bound"), [
    ("vehicles = 100000", "routes.vehicles", "at most 200"),
    ("time_limit_s = 1e10", "routes.time_limit_s", "at most 300"),
])
def test_gateway_config_loader_refuses_values_above_the_bounds(tmp_path: Path, line: str, key: str,
                                                               bound: str) -> None:
    """`gateway run --check` refuses them (the dashboard would otherwise plan with them on every load)."""
    from gateway.errors import ConfigError

    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\ndata_dir = "{tmp_path}"\n\n[routes]\n{line}\n')
    with pytest.raises(ConfigError, match=bound) as info:
        load_config(cfg)
    assert info.value.key == key and info.value.reason == "bad_value"


def test_missing_matrix_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(MatrixError):
        parse_plan_defaults({"matrix": "absent.csv"}, base=tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[routes\n")
    with pytest.raises(BinDataError):
        load_plan_defaults(bad)
    with pytest.raises(BinDataError):
        load_plan_defaults(tmp_path / "absent.toml")


def test_bin_volumes_csv(tmp_path: Path) -> None:
    vols = tmp_path / "bin-volumes.csv"
    vols.write_text("id,volume_l\nbin-a,1100\nbin-b, 660\n")
    d = parse_plan_defaults({"bin_volumes": "bin-volumes.csv", "bin_volume_l": 120}, base=tmp_path)
    assert d.bin_volumes_l == {"bin-a": 1100.0, "bin-b": 660.0}
    from gateway.routes.planner import plan_collection
    from routes_helpers import make_bin
    plan = plan_collection([make_bin("bin-a", [100, 100]), make_bin("bin-c", [100, 100], lat=52.38)],
                           d.settings_for(DAY, depot=Depot(52.37, 4.89)))
    loads = {s.candidate.bin.id: s.candidate.load_l for r in plan.routes for s in r.stops}
    assert loads == {"bin-a": 1100.0, "bin-c": 120.0}
    # bin-b is in the file but not among the bins: planned anyway, with a warning naming it
    assert [w for w in plan.warnings if "bin volumes" in w] == [
        "bin volumes name 1 id(s) that are not registered bins (or are revoked or retired), their volume is not used: bin-b"]
    with pytest.raises(InvalidInputError) as info:  # routes.bin_volumes named, as the other keys
        parse_plan_defaults({"bin_volumes": "absent.csv"}, base=tmp_path)
    assert info.value.field == "routes.bin_volumes"


def test_bin_volumes_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    """QA: Excel's "CSV UTF-8" starts with a BOM; it was refused as "first row must be the header"."""
    vols = tmp_path / "bin-volumes.csv"
    vols.write_bytes(b"\xef\xbb\xbfid,volume_l\r\nbin-a,1100\r\nbin-b,660\r\n")
    d = parse_plan_defaults({"bin_volumes": "bin-volumes.csv"}, base=tmp_path)
    assert d.bin_volumes_l == {"bin-a": 1100.0, "bin-b": 660.0}


@pytest.mark.parametrize(("content", "needle"), [
    ("bin,litres\nbin-a,100\n", "header"),
    # a ';' export is read when its header is id;volume_l (test_routes_german_input); otherwise the separator is named
    ("Id;volume_l\nbin-a;100\n", "header id,volume_l or id;volume_l (this file separates cells with ';' (semicolon)"),
    ("\ufeffId;volume_l\nbin-a;100\n", "';' (semicolon): its first cell must then be id"),
    ("id\tvolume_l\nbin-a\t100\n", "separates cells with a tab"),
    ("id,volume_l\nbin-a\n", "expected id,volume_l"),
    ("id,volume_l\nbin-a,-3\n", "positive"),
    ("id,volume_l\nbin-a,big\n", "not a number"),
    ("id,volume_l\nbin-a,\uff11\uff11\uff10\uff10\n", "not a number"),  # full-width digits
    ("id,volume_l\nbin-a,1_100\n", "line 2: volume_l '1_100' of 'bin-a': not a number"),
    ("id,volume_l\nbin-a,1e308\n", "at most 100000"),
    ("id,volume_l\nbin-a,100\nbin-a,200\n", "duplicate"),
])
def test_bad_bin_volumes(tmp_path: Path, content: str, needle: str) -> None:
    vols = tmp_path / "v.csv"
    vols.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        parse_plan_defaults({"bin_volumes": str(vols)}, base=tmp_path)
    assert needle in str(info.value)
