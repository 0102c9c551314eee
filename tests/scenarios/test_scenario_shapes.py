"""Stimuli, faults and expectations of the wrong shape, and unknown keys inside them, are
ScenarioErrors naming the file and the dotted key (never a traceback, never silently dropped)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.boards import load_board
from hil.scenarios import ScenarioError, UnknownKeyError, load_scenario
from hil.scenarios.loader import toml_text
from hil.sim.errors import StimulusError
from hil.sim.stimuli import BoardIo, load_stimuli

REPO = Path(__file__).resolve().parents[2]

SCENARIO = """
name = "t"
duration = "20m"
start = "2026-11-21T20:00:00Z"
[[boards]]
board = "streetlight-esp32"
{board}
[boards.stimuli]
{stimuli}
[expect]
reports_min = 1
{expect}
"""


def write(tmp_path: Path, *, stimuli: str = "", board: str = "", expect: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(stimuli=stimuli, board=board, expect=expect))
    return path


def error(path: Path) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return info.value


@pytest.mark.parametrize(("stimuli", "where", "expected"), [
    ('at = { time = "+1m", pir = "pulse 2s" }', "boards[1].stimuli.at:", "must be an array of tables"),
    ("set = 4", "boards[1].stimuli.set:", "must be a table of stimulus = value"),
    ("at = [1, 2]", "boards[1].stimuli.at[1]:", "must be a table"),
    ("set = { light = { v = 3 } }", "boards[1].stimuli.set.light:", "must be a number, string or boolean"),
    ('at = [{ time = "+1m", pir = { on = 1 } }]', "boards[1].stimuli.at[1].pir:", "must be a number"),
    ('at = [{ time = "+1m", fault = 5 }]', "boards[1].stimuli.at[1].fault:", "fault line"),
    ('set = { "pin:x" = 1 }', "boards[1].stimuli.set.pin:x:", "needs a GPIO number"),
])
def test_inline_stimuli_of_the_wrong_shape(tmp_path: Path, stimuli: str, where: str, expected: str) -> None:
    err = error(write(tmp_path, stimuli=stimuli))
    assert type(err) is ScenarioError
    assert where in str(err) and expected in str(err)
    assert err.details["path"] == str(tmp_path / "s.toml")


def test_unknown_inline_stimuli_section_is_an_unknown_key(tmp_path: Path) -> None:
    err = error(write(tmp_path, stimuli="sett = { light = 3 }"))
    assert isinstance(err, UnknownKeyError)
    assert err.details["key"] == "sett" and "boards[1].stimuli: unknown key(s) sett" in str(err)


def test_a_stimuli_file_is_refused_like_the_simulator_refuses_it(tmp_path: Path) -> None:
    stimuli = tmp_path / "night.toml"
    stimuli.write_text("[sett]\nlight = 3\n")
    with pytest.raises(StimulusError, match="unknown sections"):  # what `civicedge sim up --stimuli` says
        load_stimuli(stimuli, BoardIo(load_board("streetlight-esp32").to_device_config()), 0)
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(stimuli="", board='stimuli = "night.toml"', expect="")
                    .replace("[boards.stimuli]\n", ""))
    err = error(path)
    assert isinstance(err, UnknownKeyError) and err.details["key"] == "sett"
    assert str(stimuli) in str(err) and err.details["path"] == str(stimuli)
    stimuli.write_text("at = 7\n")
    err = error(path)
    assert f"boards[1].stimuli (file {stimuli}).at: must be an array of tables" in str(err)
    assert err.details["path"] == str(stimuli)


def test_unquoted_toml_time_in_a_timeline_is_read_as_the_simulator_reads_it(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, stimuli='at = [{ time = 2026-11-21T20:05:00Z, pir = "pulse 2s" }]'))
    assert '"time" = "2026-11-21T20:05:00+00:00"' in sc.boards[0].stimuli_toml


def test_toml_text_refuses_wrong_shapes_with_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="stimuli.set: must be a table"):
        toml_text({"set": 4})
    with pytest.raises(ScenarioError, match=r"stimuli.at\[1\]: must be a table"):
        toml_text({"at": ["x"]})


def test_a_typo_in_a_fault_entry_names_the_unknown_key(tmp_path: Path) -> None:
    err = error(write(tmp_path, board='faults = [{ tme = "+5m", fault = "reset" }]'))
    assert isinstance(err, UnknownKeyError) and err.details["key"] == "tme"
    assert "boards[1].faults[1]: unknown key(s) tme" in str(err)


@pytest.mark.parametrize(("faults", "expected"), [
    ('{ time = "+5m", fault = "reset" }', "boards[1].faults: must be an array of tables"),
    ('["reset"]', "boards[1].faults[1]: must be a table"),
    ('[{ fault = "reset" }]', "needs 'time' and 'fault' (missing: time)"),
    ('[{ time = "+5m", fault = ["reset", 3] }]', "boards[1].faults[1].fault: must be a fault line"),
])
def test_fault_entries_of_the_wrong_shape(tmp_path: Path, faults: str, expected: str) -> None:
    assert expected in str(error(write(tmp_path, board=f"faults = {faults}")))


def test_expect_fields_as_a_table_asks_for_an_array_of_tables(tmp_path: Path) -> None:
    err = error(write(tmp_path, expect='fields = { field = "lux", op = ">=", value = 1, by = "+5m" }'))
    assert "expect.fields: must be an array of tables" in str(err) and err.details["key"] == "fields"


@pytest.mark.parametrize("stimuli", ['at = { time = "+1m", pir = "pulse 2s" }', "set = 4", "at = [1, 2]",
                                     "sett = { light = 3 }"])
def test_validate_cli_exits_2_without_a_traceback(tmp_path: Path, stimuli: str) -> None:
    path = write(tmp_path, stimuli=stimuli)
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "validate", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "boards[1].stimuli" in proc.stderr
