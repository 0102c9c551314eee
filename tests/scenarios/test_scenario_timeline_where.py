"""Every timeline mistake of a board is reported and located (review 2, items 5 and 6).

Before: a `faults` entry without its `fault` key stopped the check of the board's `set` values, `at`
entries and other faults (only it was reported); a fault on a link the group lacks and the timeline
checks (until before time, a fault after the end, a reset every 5 s) had no details['where']."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenarios import ScenarioError, ScenarioErrors, load_scenario
from hil.scenarios.loader import list_examples

HEAD = """
name = "where"
start = "2026-11-21T20:00:00Z"
duration = "40m"
speed = 60
[[boards]]
board = "streetlight-esp32"
ids = ["sl-w-1"]
link = "uart"
faults = [{faults}]
[boards.stimuli]
set = {{ light = {light}, lamp_current = "auto", pir = {pir} }}
at = [{at}]
[expect]
reports_min = 1
"""
GOOD_AT = '{ time = "+30s", every = "120s", pir = "pulse 2s" }'


def write(tmp_path: Path, *, faults: str = '{ time = "+5m", fault = "reset" }', light: str = "4",
          pir: str = "0", at: str = GOOD_AT) -> Path:
    path = tmp_path / "where.toml"
    path.write_text(HEAD.format(faults=faults, light=light, pir=pir, at=at))
    return path


def located(exc: ScenarioError) -> list[tuple[str | None, str]]:
    errors = exc.errors if isinstance(exc, ScenarioErrors) else [exc]
    return [(e.details.get("where"), str(e).split(":")[0]) for e in errors]


def test_the_base_scenario_is_valid(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path)).boards[0].ids == ("sl-w-1",)


def test_a_faults_entry_missing_its_fault_does_not_hide_the_other_mistakes(tmp_path: Path) -> None:
    path = write(tmp_path, faults='{ time = "+10m" }, { time = "+5m", fault = "bogus" }', light='"dark"', pir="7")
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    errors = info.value.errors
    # in the board's order: set values, at entries, then faults by index (a shape error in its place)
    assert [where for where, _ in located(info.value)] == [
        "boards[1].stimuli.set.light", "boards[1].stimuli.set.pir", "boards[1].faults[1]", "boards[1].faults[2]"]
    assert all(where == head for where, head in located(info.value))
    assert "needs 'time' and 'fault' (missing: fault)" in str(errors[2])
    assert "unknown fault 'bogus'" in str(errors[3])
    assert "needs a number, got 'dark'" in str(errors[0]) and "got 7" in str(errors[1])
    assert info.value.details["count"] == 4


def test_a_bad_fault_shape_between_good_and_bad_entries_keeps_each_error_at_its_entry(tmp_path: Path) -> None:
    # faults[2] fails the shape check and is left out of the parsed timeline: the entries after it
    # must still be checked as themselves, not as their neighbour
    faults = ('{ time = "+1m", fault = "reset" }, { time = "+2m", fault = 5 }, { time = "+90m", fault = "reset" }, '
              '{ time = "+3m", fault = "drop ble 1m" }')
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(write(tmp_path, faults=faults))
    got = located(info.value)
    assert [where for where, _ in got] == ["boards[1].faults[2]", "boards[1].faults[3]", "boards[1].faults[4]"]
    assert all(head.startswith(str(where)) for where, head in got)
    errors = info.value.errors
    assert "faults[2].fault: must be a fault line or a list of fault lines" in str(errors[0])
    assert "after the scenario's end" in str(errors[1])
    assert "'drop ble 1m' at '+3m' would do nothing" in str(errors[2])


def test_link_and_timeline_errors_carry_where(tmp_path: Path) -> None:
    faults = ('{ time = "+10m", fault = "drop ble 10m" }, { time = "+90m", fault = "reset" }, '
              '{ time = "+1m", every = "5s", fault = "reset" }')
    at = GOOD_AT + ', { time = "+3m", until = "+1m", light = 2 }'
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(write(tmp_path, faults=faults, at=at))
    got = located(info.value)
    assert [where for where, _ in got] == ["boards[1].stimuli.at[2]", "boards[1].faults[1]", "boards[1].faults[2]",
                                           "boards[1].faults[3]"]
    assert all(where == head for where, head in got)
    assert [e.details["key"] for e in info.value.errors] == ["until", "faults", "faults", "every"]


def test_a_single_timeline_error_carries_where(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, faults='{ time = "+90m", fault = "reset" }'))
    assert not isinstance(info.value, ScenarioErrors)
    assert info.value.details["where"] == "boards[1].faults[1]"


def test_the_shipped_examples_still_load() -> None:
    examples = list_examples()
    assert examples
    for path in examples:
        assert load_scenario(path).boards, path


def test_stimuli_shape_errors_carry_where(tmp_path: Path) -> None:
    """The shape checks of a stimuli document (hil/scenarios/stimuli_doc.py: a set value or an at entry of the
    wrong type) carry details['where'] too, as the loader's own timeline errors do."""
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, light="[1, 2]"))
    assert located(info.value) == [("boards[1].stimuli.set.light", "boards[1].stimuli.set.light")]
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, at=GOOD_AT + ', 5'))
    assert [where for where, _ in located(info.value)] == ["boards[1].stimuli.at[2]"]
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, at=GOOD_AT + ', { time = "+2m", light = [1] }'))
    assert [where for where, _ in located(info.value)] == ["boards[1].stimuli.at[2]"]
    assert "boards[1].stimuli.at[2].light: must be a number, string or boolean" in str(info.value)
