"""`hil validate` refuses what `hil run` would fail on: registry values (the registry's own rules),
faults that never fire or cannot complete, unknown alarm codes and fields, wrong types."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hil.scenarios import ScenarioError
from hil.scenarios.loader import parse_scenario

REPO = Path(__file__).resolve().parents[2]

BASE = """
name = "v"
start = "2026-11-21T20:00:00Z"
duration = "10m"
[[boards]]
board = "streetlight-esp32"
ids = ["sl-v-1"]
link = "uart"
[expect]
reports_min = 1
"""


def _doc(**board: Any) -> dict[str, Any]:
    doc = tomllib.loads(BASE)
    doc["boards"][0].update(board)
    return doc


def _error(doc: dict[str, Any]) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc, base=REPO)
    return info.value


def test_base_is_valid() -> None:
    assert parse_scenario(_doc(), base=REPO).device_ids == ["sl-v-1"]


@pytest.mark.parametrize("key,value", [("lon", "abc"), ("lat", "95.0"), ("lon", "-180.5"), ("zone", "a/b")])
def test_registry_refusals_are_validate_errors(key: str, value: str) -> None:
    err = _error(_doc(**{key: value}))
    assert err.details["key"] == key and "registry" in str(err) and value in str(err)


def test_validate_cli_exits_2_for_a_bad_lon(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace('link = "uart"', 'link = "uart"\nlon = "abc"'))
    for args in (["validate", str(bad)], ["run", str(bad), "--workdir", str(tmp_path / "w")]):
        proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "lon" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fault,words", [
    ({"time": "+10s", "every": "1ms", "until": "+4m", "fault": "reset"}, "too often"),
    ({"time": "+10s", "every": "2s", "fault": "power_loss"}, "too often"),
    ({"time": "+10s", "every": "10ms", "fault": "drop uart 1s"}, "too often"),
    ({"time": "+3h", "fault": "reset"}, "never fires"),
    ({"time": "2026-11-21T19:00:00Z", "fault": "reset"}, "before the scenario's start"),
    ({"time": "+5m", "every": "1m", "until": "+2m", "fault": "reset"}, "before time"),
])
def test_faults_that_cannot_work_are_refused(fault: dict[str, str], words: str) -> None:
    assert words in str(_error(_doc(faults=[fault])))


def test_reasonable_fault_storm_is_accepted() -> None:
    parse_scenario(_doc(faults=[{"time": "+1m", "every": "2m", "until": "+9m", "fault": "reset"}]), base=REPO)


@pytest.mark.parametrize("expect,key", [
    ({"alarms": ["lamp_fial"]}, "alarms"),
    ({"eps_per_day_max": ["moton"]}, "eps_per_day_max"),
    ({"fields": [{"field": "lvll", "op": ">=", "value": 1, "by": "+5m"}]}, "field"),
    ({"alarms_within": "+5m"}, "alarms_within"),
])
def test_unknown_expectation_names_are_refused(expect: dict[str, Any], key: str) -> None:
    doc = _doc()
    doc["expect"] = expect
    assert _error(doc).details["key"] == key


def test_known_names_of_another_kind_are_accepted() -> None:
    # a bin's alarm expected from a streetlight is a valid expectation (it fails when run)
    doc = _doc()
    doc["expect"] = {"alarms": ["fire", "lamp_fail"], "eps_per_day_max": ["mot"],
                     "fields": [{"field": "lvl", "op": ">=", "value": 1, "by": "+5m"}]}
    assert parse_scenario(doc, base=REPO).expect.count() == 4


def test_boards_of_the_wrong_type_says_so() -> None:
    doc = _doc()
    doc["boards"] = "x"
    err = _error(doc)
    assert "must be a list" in str(err) and "str" in str(err)
