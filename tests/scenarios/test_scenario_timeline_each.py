"""`hil validate` checks each `set` value, `at` entry and `faults` entry of a board on its own and reports
every mistake, each named by its dotted key (boards[1].faults[2]), with a did-you-mean for a fault kind.
Before, only the first was reported, as `boards[1]: stimuli/faults: ...`, and `resett` had no hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.scenarios import ScenarioError, ScenarioErrors, UnknownKeyError, load_scenario

REPO = Path(__file__).resolve().parents[2]

SCENARIO = """
name = "multi"
duration = "40m"
speed = 60
start = "2026-11-21T23:40:00Z"
[[boards]]
board = "streetlight-esp32"
count = 2
link = "uart"
faults = [{{ time = "+10m", fault = "drop uart 10m" }}, {{ time = "+15m", fault = "{fault2}" }},
          {{ time = "+20m", fault = "{fault3}" }}]
[boards.stimuli]
set = {{ light = {light}, lamp_current = "auto" }}
at = [{{ time = "+30s", every = "120s", pir = "pulse 2s" }}, {{ time = "+20m", {at2} = true }}]
[expect]
reports_min = 1
"""


def write(tmp_path: Path, *, fault2: str = "reset", fault3: str = "clock_skew +30s", light: int = 4,
          at2: str = "lamp_failed") -> Path:
    path = tmp_path / "multi.toml"
    path.write_text(SCENARIO.format(fault2=fault2, fault3=fault3, light=light, at2=at2))
    return path


def test_the_unchanged_scenario_is_valid(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path)).boards[0].ids == ("sl-001", "sl-002")


def test_every_timeline_mistake_is_reported_with_its_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path, fault2="resett", fault3="clock_skew banana", light=-4, at2="lamp_fail")
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    errors = info.value.errors
    assert [str(e).split(":")[0] for e in errors] == ["boards[1].stimuli.set.light", "boards[1].stimuli.at[2]",
                                                      "boards[1].faults[2]", "boards[1].faults[3]"]
    assert [e.details["key"] for e in errors] == ["stimuli", "stimuli", "faults", "faults"]
    assert [e.details["where"] for e in errors] == ["boards[1].stimuli.set.light", "boards[1].stimuli.at[2]",
                                                    "boards[1].faults[2]", "boards[1].faults[3]"]
    assert "'light' = -4 is outside 0..150000 lux" in str(errors[0])
    assert "unknown stimulus 'lamp_fail' (did you mean 'lamp_failed'?" in str(errors[1])
    assert str(errors[2]).startswith("boards[1].faults[2]: unknown fault 'resett' (did you mean 'reset'? one of ")
    assert "clock_skew needs +/-DURATION (e.g. +30s, -2m), got 'banana'" in str(errors[3])
    assert "stimuli/faults" not in str(info.value) and info.value.details["count"] == 4


def test_fixing_one_leaves_the_others_reported(tmp_path: Path) -> None:
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(write(tmp_path, fault2="resett", fault3="clock_skew banana"))
    assert [e.details["where"] for e in info.value.errors] == ["boards[1].faults[2]", "boards[1].faults[3]"]
    with pytest.raises(ScenarioError) as one:
        load_scenario(write(tmp_path, fault3="clock_skew banana"))
    assert not isinstance(one.value, ScenarioErrors)
    assert str(one.value).startswith("boards[1].faults[3]: clock_skew needs")


def test_a_bad_link_name_and_a_link_the_group_lacks_are_both_reported(tmp_path: Path) -> None:
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(write(tmp_path, fault2="drop uarts 10s", fault3="drop ble 1m"))
    first, second = info.value.errors
    assert str(first).startswith("boards[1].faults[2]: unknown link 'uarts' for drop (did you mean 'uart'? links: "
                                 "uart, ble, all)")
    assert str(second).startswith("boards[1].faults[3]: fault 'drop ble 1m' at '+20m' would do nothing")


def test_a_timing_mistake_of_one_entry_does_not_hide_another_entrys(tmp_path: Path) -> None:
    # faults[2] every 5 s is too often (timeline check), faults[3] does not parse (simulator's parser)
    path = write(tmp_path, fault3="corrupt ble 0.01")
    path.write_text(path.read_text().replace('{ time = "+15m", fault = "reset" }',
                                             '{ time = "+15m", every = "5s", fault = "reset" }'))
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    first, second = info.value.errors
    assert str(first).startswith("boards[1].faults[2]: fault reset at +15 min every 5 s is too often")
    assert str(second).startswith("boards[1].faults[3]: corrupt acts on UART bytes only (link uart or all), not ble")


def test_a_typo_in_an_at_entry_is_an_unknown_key_named_by_its_place(tmp_path: Path) -> None:
    path = write(tmp_path, fault2="resett")
    path.write_text(path.read_text().replace('{ time = "+30s", every', '{ tme = "+30s", every'))
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    typo, fault = info.value.errors
    assert isinstance(typo, UnknownKeyError) and typo.details["key"] == "tme"
    assert str(typo).startswith("boards[1].stimuli.at[1]: unknown key 'tme' (did you mean 'time'?")
    assert str(fault).startswith("boards[1].faults[2]: unknown fault 'resett'")


def test_hil_validate_lists_them_all(tmp_path: Path) -> None:
    path = write(tmp_path, fault2="resett", fault3="clock_skew banana", at2="lamp_fail")
    run = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "validate", str(path)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "3 errors:" in out, out
    for line in ("1. boards[1].stimuli.at[2]: unknown stimulus 'lamp_fail'",
                 "2. boards[1].faults[2]: unknown fault 'resett' (did you mean 'reset'?",
                 "3. boards[1].faults[3]: clock_skew needs +/-DURATION"):
        assert line in out, out
