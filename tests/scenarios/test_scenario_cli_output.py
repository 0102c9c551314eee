"""`hil run` output: the result on stdout, progress and errors on stderr, no 80-column wrapping in
CI logs, and a log reader that closes its pipe does not stop the run nor lose its JUnit report."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PASSING = """
name = "out-pass"
description = "one streetlight that reports once"
start = "2026-11-21T20:00:00Z"
duration = "20m"
speed = 120
[[boards]]
board = "streetlight-esp32"
ids = ["sl-out-1"]
link = "uart"
[boards.stimuli]
set = { light = 4, lamp_current = "auto" }
[expect]
reports_min = 1
no_loss = true
"""


def _env() -> dict[str, str]:
    """No COLUMNS/LINES from the test runner's terminal: rich would use them as the width."""
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_closed_log_pipe_neither_stops_the_run_nor_loses_the_reports(tmp_path: Path) -> None:
    scenario = tmp_path / "out-pass.toml"
    scenario.write_text(PASSING)
    junit = tmp_path / "junit.xml"
    stdout = tmp_path / "stdout.txt"
    with stdout.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hil.cli.main", "hil", "run", str(scenario), "--plain",
                                 "--workdir", str(tmp_path / "work"), "--junit", str(junit), "--drain", "10"],
                                cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True, env=_env())
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        proc.stderr.close()  # as `2>&1 >stdout.txt | head -1` does once it has its line
        rc = proc.wait(200)
    text = stdout.read_text()
    # The banner (stderr) is one line even though it is longer than 80 columns.
    assert banner.startswith("scenario out-pass: 1 board(s), 20m virtual at 120x, work directory ")
    assert banner.rstrip().endswith(" s") and "timeout" in banner
    assert rc == 0, text
    assert "PASSED" in text.splitlines() and f"JUnit report: {junit}" in text
    assert "scenario out-pass:" not in text  # progress and banner are not part of the result
    reports_line = next(line for line in text.splitlines() if "reports_min" in line)
    assert reports_line.rstrip().endswith("per board: sl-out-1=1"), text  # not wrapped at 80 columns
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("errors") == "0"
