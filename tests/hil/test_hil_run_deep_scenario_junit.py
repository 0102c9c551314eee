"""``hil run --junit`` with a scenario nested too deeply for tomllib: the scenario's clear error, exit 2
and a JUnit report of it. Before, naming the report's suite parsed the file with tomllib.loads again and
the run ended in a RecursionError traceback (exit 1, no report). Test fails before."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def test_deep_scenario_is_reported_not_a_traceback(tmp_path: Path) -> None:
    scenario = tmp_path / "deep.toml"
    scenario.write_text('name = "nested-one"\nx = ' + "[" * 5000 + "]" * 5000 + "\n")
    junit = tmp_path / "report.xml"
    done = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "run", str(scenario), "--junit", str(junit)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert "scenario file is not usable TOML: nested too deeply" in done.stderr, done.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "scenario.deep"  # the file's stem: its name is unreadable
    error = suite.find("testcase/error")
    assert error is not None and "nested too deeply" in (error.get("message") or "")
