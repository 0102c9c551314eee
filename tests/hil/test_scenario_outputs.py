"""`hil run` checks its report paths before running, and writes a JUnit report also for bad input."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("option", ["--junit", "--html"])
def test_an_unwritable_report_path_is_refused_before_the_run(tmp_path: Path, option: str) -> None:
    a_dir = tmp_path / "out"
    a_dir.mkdir()
    proc = _run("link-outage", "--workdir", str(tmp_path / "w"), option, str(a_dir))
    assert proc.returncode == 2, proc.stderr
    assert f"{option}: {a_dir} is a directory" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()  # nothing was started
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run("link-outage", "--workdir", str(tmp_path / "w"), option, str(blocker / "sub" / "r.xml"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_scenario_input_still_writes_a_junit_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nduration = "soon"\n')
    junit = tmp_path / "out" / "junit.xml"
    proc = _run(str(bad), "--junit", str(junit))
    assert proc.returncode == 2, proc.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1" and suite.get("name") == "scenario.bad"
    err = suite.find("testcase/error")
    assert err is not None and "duration" in (err.get("message") or "")
