"""`hil validate` reports every independent mistake of a file in one run, with did-you-means for typos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.scenarios import (ScenarioError, ScenarioErrors, UnknownBoardError, UnknownExpectationError, UnknownKeyError,
                           load_scenario)

REPO = Path(__file__).resolve().parents[2]

TYPOS = """
name = "typos"
duration = "20m"
sped = 60
start = "2026-11-21T20:00:00Z"

[[boards]]
board = "streetlite-esp32"

[[boards]]
board = "streetlight-esp32"
lnk = "uart"
faults = [{ tme = "+5m", fault = "reset" }]

[expect]
report_min = 3
[[expect.fields]]
field = "lux"
op = "=<"
value = 3
by = "+10m"
"""


def test_five_typos_are_five_errors_of_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "typos.toml"
    path.write_text(TYPOS)
    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    errors = info.value.errors
    assert [type(e) for e in errors] == [UnknownKeyError, UnknownBoardError, UnknownKeyError, UnknownKeyError,
                                         UnknownExpectationError, ScenarioError]
    text = str(info.value)
    assert text.startswith("6 errors:\n  1. scenario: unknown key(s) sped (did you mean 'speed'?) (allowed: ")
    for part in ("2. boards[1]: unknown board 'streetlite-esp32' (did you mean 'streetlight-esp32'?",
                 "3. boards[2]: unknown key(s) lnk (did you mean 'link'?)",
                 "4. boards[2].faults[1]: unknown key(s) tme (did you mean 'time'?)",
                 "5. [expect]: unknown key(s) report_min (did you mean 'reports_min'?)",
                 "6. expect.fields[1]: op must be one of < <= == != >= >, got '=<'"):
        assert part in text, text
    assert info.value.details["key"] == "sped" and info.value.details["count"] == 6
    assert info.value.details["path"] == str(path)


def test_a_bad_duration_does_not_also_fail_every_fault(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(TYPOS.replace('duration = "20m"', 'duration = "20 minutes"').replace("sped", "speed")
                    .replace("streetlite", "streetlight").replace("lnk", "link").replace("tme", "time")
                    .replace("report_min", "reports_min").replace('"=<"', '"<="'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert not isinstance(info.value, ScenarioErrors), str(info.value)  # the duration only
    assert info.value.details["key"] == "duration"


def test_validate_prints_them_all_at_once(tmp_path: Path) -> None:
    path = tmp_path / "typos.toml"
    path.write_text(TYPOS)
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "validate", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"bad {path}: 6 errors:" in proc.stderr
    assert "did you mean 'speed'?" in proc.stderr and "op must be one of" in proc.stderr
