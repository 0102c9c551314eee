"""docs/routes.md's ``[routes]`` example loads as written, and a bin in alarm without a fill reading
is planned as full without inventing a reading (``fill_now`` null / empty, ``load_assumed``)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from gateway.routes.config import load_plan_defaults
from gateway.routes.distances import CsvMatrix

from routes_helpers import T0, run_cli
from routes_store import WINDOW_S, CityData

pytestmark = pytest.mark.timeout(120)
DOC = Path(__file__).resolve().parents[2] / "docs" / "routes.md"


def _doc_routes_toml() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    (block,) = [b for b in blocks if b.lstrip().startswith("[routes]")]
    return block


def test_the_documented_routes_table_loads_with_the_real_config_loader(tmp_path: Path) -> None:
    from gateway.config import load_config

    block = _doc_routes_toml()
    files = dict(re.findall(r'^(matrix|bin_volumes) = "([^"]+)"', block, flags=re.M))
    assert set(files) == {"matrix", "bin_volumes"}
    (tmp_path / files["matrix"]).write_text("id,depot,bin-01\ndepot,0,1200\nbin-01,1250,0\n")
    (tmp_path / files["bin_volumes"]).write_text("id,volume_l\nbin-01,1100\n")
    (tmp_path / "data").mkdir()
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text('[gateway]\nid = "gw-doc"\ndata_dir = "data"\n\n' + block)
    cfg = load_config(cfg_path)  # the gateway's loader: `run --check` refused the example before
    assert cfg.source is not None
    defaults = load_plan_defaults(cfg_path)
    assert isinstance(defaults.distances, CsvMatrix)
    assert (defaults.vehicles, defaults.capacity_l, defaults.bin_volumes_l) == (3, 60000, {"bin-01": 1100.0})
    assert defaults.depot is not None and (defaults.depot.lat, defaults.depot.lon) == (52.37, 4.89)


@pytest.fixture
def city(tmp_path: Path) -> CityData:
    data = CityData(tmp_path)
    data.add_device("bin-fire", lat="52.371", lon="4.89")
    data.add_device("bin-full", lat="52.372", lon="4.89")
    data.alarm("bin-fire", T0 - 3600, "fire")  # a fire alarm, never a fill reading
    data.windows("bin-full", T0 - 4 * WINDOW_S, [90] * 4)
    return data


def test_a_bin_in_alarm_without_a_reading_reports_no_fill_now(city: CityData,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    base = ["routes", "plan", "--date", "2026-11-23", "--depot", "52.37,4.89", "--db", str(city.db_path),
            "--time-limit", "0"]
    try:
        code, out, err = run_cli(base, capsys)
        assert code == 0, err
        stops = {s["bin_id"]: s for r in json.loads(out)["routes"] for s in r["stops"]}
        fire = stops["bin-fire"]
        assert fire["reason"] == "fire" and fire["fill_now"] is None and fire["load_assumed"] is True
        assert fire["expected_fill"] == 1.0 and fire["load_l"] == 240.0  # still planned as full
        assert stops["bin-full"]["fill_now"] == 0.9 and stops["bin-full"]["load_assumed"] is False
        code, out, err = run_cli(base + ["--format", "csv"], capsys)
        assert code == 0, err
        rows = {r["bin_id"]: r for r in csv.DictReader(io.StringIO(out))}
        assert rows["bin-fire"]["fill_now_pct"] == "" and rows["bin-fire"]["expected_fill_pct"] == "100"
        assert rows["bin-full"]["fill_now_pct"] == "90"
        code, out, err = run_cli(base + ["--format", "geojson"], capsys)
        assert code == 0, err
        props = [f["properties"] for f in json.loads(out)["features"] if f["properties"].get("bin_id") == "bin-fire"]
        assert props and props[0]["fill_now"] is None
    finally:
        city.close()
