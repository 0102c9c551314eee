"""Scenario input the loader refuses with one clear line (the integrator QA's list): files that are not
UTF-8, timelines that cannot work, durations without a unit or out of bounds, misleading messages;
and the simulator CLI's ``--speed``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.resources import load_policy
from hil.scenarios import BadDurationError, ScenarioError, UnknownBoardError, UnknownKeyError, load_scenario
from hil.scenarios.checks import StoredData, check_eps
from hil.scenarios.loader import parse_scenario
from hil.sim.cli import _speed
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli

REPO = Path(__file__).resolve().parents[2]

BASE = """
name = "b"
start = "2026-11-21T20:00:00Z"
duration = "20m"
[[boards]]
board = "streetlight-esp32"
ids = ["sl-b-1"]
link = "uart"
[expect]
reports_min = 1
"""


def _doc(top: dict[str, Any] | None = None, **board: Any) -> dict[str, Any]:
    doc = tomllib.loads(BASE)
    doc.update(top or {})
    doc["boards"][0].update(board)
    return doc


def _error(doc: dict[str, Any], kind: type[ScenarioError] = ScenarioError) -> ScenarioError:
    with pytest.raises(kind) as info:
        parse_scenario(doc, base=REPO)
    return info.value


# 1. encodings

@pytest.mark.parametrize("data,words", [
    (b"\xff\xfe n\x00a\x00", "UTF-16 byte-order mark"),
    (b'name = "x" # \xe9clairage\n', "not UTF-8 text (line 1, column 14: byte 0xe9 at offset 13, é in Windows-1252?)"),
])
def test_a_scenario_file_that_is_not_utf8_is_refused(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert words in str(info.value) and "save the scenario file as UTF-8" in str(info.value)
    assert info.value.details["path"] == str(path)


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_scenario(path).name == "b"
    stim = tmp_path / "stim.toml"
    stim.write_bytes(b"\xef\xbb\xbf[set]\nlight = 4\n")
    path.write_text(BASE.replace('link = "uart"', 'link = "uart"\nstimuli = "stim.toml"'))
    assert load_scenario(path).boards[0].stimuli_doc["set"] == {"light": 4}


def test_a_stimuli_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    (tmp_path / "stim.toml").write_bytes(b"[set]\nlight = 4 # \xe9\n")
    path = tmp_path / "s.toml"
    path.write_text(BASE.replace('link = "uart"', 'link = "uart"\nstimuli = "stim.toml"'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "not UTF-8" in str(info.value) and info.value.details["key"] == "stimuli"


def test_validate_and_run_exit_2_with_one_line_and_a_junit_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_bytes(b'\xff\xfe name="x"\n')
    junit = tmp_path / "j.xml"
    for args in (["validate", str(bad)], ["run", str(bad), "--junit", str(junit), "--workdir", str(tmp_path / "w")]):
        proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr
    assert 'name="input"' in junit.read_text() and "not UTF-8" in junit.read_text()


# 2. timelines that cannot work

@pytest.mark.parametrize("board,words", [
    ({"stimuli": {"at": [{"time": "+1m", "every": "1ms", "pir": "pulse 2s"}]}}, "is too often: the shortest repeat is 100 ms"),
    ({"stimuli": {"at": [{"time": "+1m", "every": "2s", "pir": "pulse 2s"}]}}, "next one starts before it ends"),
    ({"stimuli": {"at": [{"time": "+1m", "every": "500ms", "light": 5}]}}, "too often"),
    ({"faults": [{"time": "+1m", "fault": "clock_skew +99999999d"}]}, "beyond the 365 d"),
    ({"faults": [{"time": "+1m", "fault": "clock_skew -400d"}]}, "beyond the 365 d"),
    ({"faults": [{"time": "+1m", "every": "10s", "fault": "power_loss off 30s"}]}, "no more often than every 40 s"),
    ({"faults": [{"time": "+1m", "every": "5m", "fault": "drop uart 10m"}]}, "next one starts before it ends"),
    ({"faults": [{"time": "+1m", "every": "1m", "fault": "corrupt uart 0.1 for 1m"}]}, "not less than its repeat"),
])
def test_timelines_that_cannot_work_are_refused(board: dict[str, Any], words: str) -> None:
    assert words in str(_error(_doc(**board)))


def test_workable_timelines_still_pass() -> None:
    parse_scenario(_doc(stimuli={"at": [{"time": "+1m", "every": "3s", "pir": "pulse 2s"}]},
                        faults=[{"time": "+1m", "every": "5m", "fault": "drop uart 4m"},
                                {"time": "+2m", "every": "40s", "until": "+5m", "fault": "power_loss off 30s"},
                                {"time": "+3m", "fault": "clock_skew -300d"}]), base=REPO)


@pytest.mark.parametrize("start", ["1969-12-31T23:00:00Z", "1970-01-01T00:00:00Z", "2023-12-31T23:59:59Z",
                                   "2100-01-01T00:00:00Z"])
def test_a_start_the_firmware_takes_for_an_unset_clock_is_refused(start: str) -> None:
    err = _error(_doc({"start": start}), BadDurationError)
    assert err.details["key"] == "start" and "2024-01-01" in str(err)


def test_a_start_of_2024_01_01_is_accepted() -> None:
    parse_scenario(_doc({"start": "2024-01-01T00:00:00Z"}), base=REPO)


# 3. durations

@pytest.mark.parametrize("value,words", [(600, "has no unit"), ("600", "has no unit"), (1.5, "has no unit"),
                                         ("99999d", "longer than the 7 d"), ("8d", "longer than the 7 d"),
                                         (True, "not a duration"), ("soon", "not a duration")])
def test_duration_needs_a_unit_and_a_sane_bound(value: Any, words: str) -> None:
    err = _error(_doc({"duration": value}), BadDurationError)
    assert words in str(err) and err.details["key"] == "duration"


def test_by_needs_a_unit_too() -> None:
    doc = _doc()
    doc["expect"]["fields"] = [{"field": "lvl", "op": ">=", "value": 0, "by": 600}]
    assert "has no unit" in str(_error(doc, BadDurationError))


def test_a_week_is_accepted() -> None:
    assert parse_scenario(_doc({"duration": "7d"}), base=REPO).duration_ms == 7 * 86_400_000


# 4. messages

def test_a_directory_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)


def test_a_board_file_that_is_not_utf8_is_not_an_unknown_board(tmp_path: Path) -> None:
    (tmp_path / "odd.toml").write_bytes(b'name = "\xe9"\n')
    path = tmp_path / "s.toml"
    path.write_text(BASE.replace('board = "streetlight-esp32"', 'board = "odd.toml"'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert not isinstance(info.value, UnknownBoardError)
    assert "not UTF-8" in str(info.value) and "unknown board" not in str(info.value)
    path.write_text(BASE.replace('board = "streetlight-esp32"', 'board = "nosuch"'))
    with pytest.raises(UnknownBoardError, match="unknown board"):
        load_scenario(path)


def test_stimuli_pointing_at_a_directory_is_named_as_such() -> None:
    err = _error(_doc(stimuli="."))
    assert "is a directory" in str(err) and "not found" not in str(err)


def test_a_name_from_the_file_name_says_so(tmp_path: Path) -> None:
    path = tmp_path / "my weird!name.toml"
    path.write_text(BASE.replace('name = "b"\n', ""))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "file name 'my weird!name.toml'" in str(info.value) and 'set name = "..."' in str(info.value)


def test_a_typo_for_time_is_an_unknown_key() -> None:
    err = _error(_doc(stimuli={"at": [{"tme": "+1m", "pir": "pulse 2s"}]}), UnknownKeyError)
    assert "unknown key 'tme'" in str(err) and "did you mean 'time'" in str(err)
    io = BoardIo({"io": {"pir": {"pin": 27}}})
    with pytest.raises(StimulusError, match="unknown key 'tme'"):
        load_stimuli('[[at]]\ntme = "+1m"\npir = "pulse 2s"\n', io, 0)
    with pytest.raises(StimulusError, match="unknown stimulus 'smell'"):  # with a time: the stimulus is named
        load_stimuli('[[at]]\ntime = "+1m"\nsmell = 1\n', io, 0)


# 5. eps_per_day_max with nothing released

def test_eps_with_nothing_released_fails_saying_why() -> None:
    sc = load_scenario("night-with-pedestrians")
    result = check_eps(sc, StoredData([], [], []), load_policy())
    assert not result.passed
    assert "not shown" in result.message and "release" in result.message


# 6. sim --speed

@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "fast", "-1", "x", "NaN"])
def test_sim_speed_refuses_non_finite_and_unknown_words(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="finite number"):
        _speed(text)


def test_sim_speed_accepts_numbers_max_and_paused() -> None:
    assert _speed("30") == 30.0 and _speed("0") == 0.0 and _speed("max") == 0.0 and _speed("paused") is None


def test_sim_up_speed_nan_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "sim", "up", "--board", "streetlight-esp32",
                           "--speed", "nan"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--speed" in proc.stderr and "Traceback" not in proc.stderr
