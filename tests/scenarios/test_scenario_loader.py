"""Scenario files: the shipped examples load, and every kind of mistake gets its specific error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.errors import HilError
from hil.scenarios import (BadDurationError, ScenarioError, UnknownBoardError, UnknownExpectationError,
                           UnknownKeyError, list_examples, load_scenario)
from hil.scenarios.loader import parse_scenario

GOOD = """
name = "t"
duration = "20m"
speed = 60
start = "2026-11-21T20:00:00Z"
[[boards]]
board = "streetlight-esp32"
count = 2
link = "uart"
[boards.stimuli]
set = { light = 4 }
at = [{ time = "+1m", every = "90s", pir = "pulse 2s" }]
[expect]
reports_min = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_shipped_examples_load() -> None:
    names = {p.stem for p in list_examples()}
    assert names == {"night-with-pedestrians", "bin-fills-and-fire", "link-outage", "reboot-storm"}
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name and sc.expect.count() >= 2 and sc.device_ids


def test_good_file_is_read(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.device_ids == ["sl-001", "sl-002"]
    assert sc.duration_ms == 20 * 60_000 and sc.speed == 60.0
    assert sc.boards[0].link == "uart" and sc.boards[0].kind == "streetlight"
    assert '"pir" = "pulse 2s"' in sc.boards[0].stimuli_toml


def test_outage_fault_merges_into_the_timeline() -> None:
    sc = load_scenario("link-outage")
    at = sc.boards[0].stimuli_doc["at"]
    assert {"time": "+10m", "fault": "drop uart 10m"} in at


@pytest.mark.parametrize(("edit", "error", "key"), [
    (lambda t: t.replace('speed = 60', 'speed = 60\ncolour = "red"'), UnknownKeyError, "colour"),
    (lambda t: t.replace('link = "uart"', 'link = "uart"\nled = 1'), UnknownKeyError, "led"),
    (lambda t: t.replace('duration = "20m"', 'duration = "twenty minutes"'), BadDurationError, "duration"),
    (lambda t: t.replace('duration = "20m"', 'duration = "0s"'), BadDurationError, "duration"),
    (lambda t: t.replace('duration = "20m"\n', ''), BadDurationError, "duration"),
    (lambda t: t.replace('start = "2026-11-21T20:00:00Z"', 'start = "tonight"'), BadDurationError, "start"),
    (lambda t: t.replace('board = "streetlight-esp32"', 'board = "lamppost-9000"'), UnknownBoardError, "board"),
    (lambda t: t.replace('reports_min = 1', 'reports_min = 1\nall_good = true'), UnknownExpectationError, "all_good"),
    (lambda t: t.replace('reports_min = 1', 'alarms_within = "soon"\nalarms = ["fire"]'), BadDurationError,
     "expect.alarms_within"),
])
def test_specific_errors(tmp_path: Path, edit, error, key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        load_scenario(write(tmp_path, edit(GOOD)))
    assert info.value.details["key"] == key
    assert isinstance(info.value, ScenarioError) and isinstance(info.value, HilError)
    assert key.split(".")[-1] in str(info.value)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda t: t.replace('link = "uart"', 'link = "lora"'), "link 'lora' not available"),
    (lambda t: t.replace('count = 2', 'count = 0'), "count must be an integer"),
    (lambda t: t.replace('count = 2', 'count = 2\nids = ["a"]'), "either 'ids' or 'count'"),
    (lambda t: t.replace('count = 2', 'ids = ["a", "a"]'), "used twice"),
    (lambda t: t.replace('pir = "pulse 2s"', 'smell = 3'), "unknown stimulus 'smell'"),
    (lambda t: t.replace('set = { light = 4 }', 'set = { distance = 400 }'), "has no 'echo'"),
    (lambda t: t.replace('link = "uart"', 'link = "uart"\nfaults = [{ time = "+1m", fault = "explode" }]'),
     "unknown fault"),
    (lambda t: t.replace('link = "uart"', 'link = "uart"\nfaults = [{ fault = "reset" }]'), "needs 'time'"),
    (lambda t: t.replace('reports_min = 1', 'reports_min = -1'), "reports_min must be"),
    (lambda t: t.replace('reports_min = 1', '[[expect.fields]]\nfield = "lux"\nop = "~"\nvalue = 1\nby = "+1h"'),
     "op must be one of"),
    (lambda t: t.replace('reports_min = 1', '[[expect.fields]]\nfield = "lux"\nop = ">"\nvalue = 1'), "missing by"),
    (lambda t: t.replace('reports_min = 1', '[[expect.fields]]\nfield = "lux"\nop = ">"\nvalue = 1\nby = "+1h"\n'
                                            'device = "nobody"'), "not one of the scenario's boards"),
    (lambda t: t.replace('reports_min = 1', ''), "[expect] is required"),
    (lambda t: t.replace('speed = 60', 'speed = 0'), "speed must be"),
    # below the gateway's [sim_clock] bound: `hil validate` says so, not only `hil run`
    (lambda t: t.replace('speed = 60', 'speed = 0.0001'), "speed must be a number in [0.001, 3600]"),
    (lambda t: t.replace('speed = 60', 'speed = nan'), "speed must be"),
    (lambda t: t.replace('name = "t"', 'name = "two words"'), "name must be"),
    (lambda t: t + '[[boards]]\nboard = "bin-esp32c3"\nlink = "uart"\n', "not available on bin-esp32c3"),
    # wrong units, impossible values, pins and links the board does not have: refused with the unit / what it has
    (lambda t: t.replace('set = { light = 4 }', 'set = { light = -4 }'), "'light' = -4 is outside 0..150000 lux"),
    (lambda t: t.replace('set = { light = 4 }', 'set = { "pin:99" = 1 }'),
     "defines no pin on GPIO 99 (its pins: 0 (recovery), 25 (lamp), 27 (pir), 34 (light), 35 (lamp_current))"),
    (lambda t: t + '[[boards]]\nboard = "bin-esp32c3"\nstimuli = { set = { battery = 3700 } }\n',
     "boards[2].stimuli.set.battery: stimulus 'battery' = 3700 is outside 0..100 %"),
    (lambda t: t + '[[boards]]\nboard = "bin-esp32c3"\nfaults = [{ time = "+1m", fault = "drop uart 1m" }]\n',
     "fault 'drop uart 1m': board bin-esp32c3 has no uart link (its links: ble)"),
    (lambda t: t.replace('pir = "pulse 2s"', 'pri = "pulse 2s"'), "did you mean 'pir'?"),
    (lambda t: t.replace('board = "streetlight-esp32"', 'board = "streetlight-esp33"'),
     "boards[1]: unknown board 'streetlight-esp33' (did you mean 'streetlight-esp32'? boards: bin-esp32c3, "
     "streetlight-esp32)"),
    (lambda t: t.replace('[[boards]]', '[boards]'), "[boards] is one table; write [[boards]]"),
    (lambda t: t.replace('link = "uart"', 'link = "uart"\nfaults = [{ time = "+1m", every = "5s", fault = "reset" }]'),
     "every 5 s is too often: at least every 10 s"),
    (lambda t: t.replace('link = "uart"', 'link = "uart"\nlat = true'), "lat must be decimal degrees, e.g."),
])
def test_invalid_values(tmp_path: Path, edit, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, edit(GOOD)))
    assert fragment in str(info.value)


def test_missing_stimuli_file_and_unknown_scenario(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="stimuli file 'nope.toml' not found"):
        load_scenario(write(tmp_path, GOOD.replace('[boards.stimuli]\nset = { light = 4 }\nat = [{ time = "+1m", '
                                                   'every = "90s", pir = "pulse 2s" }]', 'stimuli = "nope.toml"')))
    with pytest.raises(ScenarioError, match="no scenario file"):
        load_scenario(tmp_path / "absent.toml")
    with pytest.raises(ScenarioError, match="not TOML"):
        load_scenario(write(tmp_path, "name = "))


def test_parse_scenario_rejects_board_list_of_non_tables() -> None:
    with pytest.raises(ScenarioError, match="must be a table"):
        parse_scenario({"name": "x", "duration": "1m", "boards": ["streetlight-esp32"], "expect": {"no_loss": True}})


def test_lat_lon_may_be_toml_numbers(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD.replace('link = "uart"', 'link = "uart"\nlat = 52.37\nlon = 4.9')))
    assert (sc.boards[0].lat, sc.boards[0].lon) == ("52.37", "4.9")


@pytest.mark.parametrize(("lat", "lon", "expected"), [
    ("-0.00001", "0.0001", ("-0.00001", "0.0001")),  # repr() writes these as -1e-05 and 0.0001
    ("0.000001", "-1e-7", ("0.000001", "-0.0000001")),
    ("0", "-180", ("0", "-180")),  # integers
])
def test_small_lat_lon_numbers_are_written_in_plain_decimal(tmp_path: Path, lat: str, lon: str,
                                                            expected: tuple[str, str]) -> None:
    sc = load_scenario(write(tmp_path, GOOD.replace('link = "uart"', f'link = "uart"\nlat = {lat}\nlon = {lon}')))
    assert (sc.boards[0].lat, sc.boards[0].lon) == expected


def test_non_finite_lat_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"boards\[1\]: lat must be a finite decimal number, got nan"):
        load_scenario(write(tmp_path, GOOD.replace('link = "uart"', 'link = "uart"\nlat = nan')))


def test_the_file_format_example_in_the_docs_loads(tmp_path: Path) -> None:
    """docs/scenarios.md's "File format" example, copied as a new integrator would: it must validate
    (it once set stimuli twice and expected a value from a board it did not have)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    section = doc.split("## File format", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    scenario = load_scenario(write(tmp_path, example))
    assert scenario.name == "link-outage" and [list(g.ids) for g in scenario.boards] == [["sl-out-1"]]
    assert list(scenario.expect.alarms) == ["lamp_fail"] and scenario.expect.fields[0].device == "sl-out-1"
