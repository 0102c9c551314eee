"""`hil run` input and output safety: every bad input is refused up front with exit 2 (and a JUnit
error report whenever --junit itself is usable); reports never overwrite the scenario or each other;
JUnit XML is well-formed whatever the scenario's text."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

OK = """
name = "ok"
description = "one streetlight"
duration = "16m"
speed = {speed}
[[boards]]
board = "streetlight-esp32"
ids = ["sl-in-1"]
link = "uart"
[expect]
no_loss = true
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "run", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _scenario(tmp_path: Path, speed: str = "60", where: Path | None = None) -> Path:
    path = (where or tmp_path) / "ok.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OK.format(speed=speed))
    return path


def _refused(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "work directory" not in proc.stderr.split("error")[0]  # refused before the banner
    assert "scenario ok:" not in proc.stderr


def test_a_bad_html_path_still_writes_the_junit_error(tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    proc = _run(str(_scenario(tmp_path)), "--workdir", str(tmp_path / "w"), "--junit", str(junit),
                "--html", "/proc/x.html")
    _refused(proc, "--html: ")
    err = ET.parse(junit).getroot().find("testsuite/testcase/error")
    assert err is not None and "--html" in (err.get("message") or "")
    assert not (tmp_path / "w").exists()


def test_a_scenario_inside_its_workdir_is_refused_not_deleted(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / ".civicedge-scenario").write_text("created by civicedge hil run\n")  # a previous run's
    scenario = _scenario(tmp_path, where=work)
    proc = _run(str(scenario), "--workdir", str(work))
    _refused(proc, "is inside the work directory")
    assert scenario.exists()


def test_junit_onto_the_scenario_itself_is_refused(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    text = scenario.read_text()
    proc = _run(str(scenario), "--workdir", str(tmp_path / "w"), "--junit", str(scenario))
    _refused(proc, "is the scenario file itself")
    assert scenario.read_text() == text
    link = tmp_path / "alias.xml"
    os.link(scenario, link)  # the same file by another name
    proc = _run(str(scenario), "--workdir", str(tmp_path / "w"), "--junit", str(link))
    _refused(proc, "is the scenario file itself")
    assert scenario.read_text() == text


def test_junit_and_html_on_one_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = _run(str(_scenario(tmp_path)), "--workdir", str(tmp_path / "w"), "--junit", str(out),
                "--html", str(tmp_path / "." / "report"))
    _refused(proc, "name the same file")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--drain", "nan"], "--drain must be a finite number"),
    (["--drain", "inf"], "--drain must be a finite number"),
    (["--timeout", "nan"], "--timeout must be a finite number"),
    (["--speed", "1e-300"], "--speed must be within [0.001, 3600]"),
    (["--speed", "nan"], "--speed must be within"),
])
def test_bad_numbers_are_refused_up_front(tmp_path: Path, args: list[str], words: str) -> None:
    _refused(_run(str(_scenario(tmp_path)), "--workdir", str(tmp_path / "w"), *args), words)
    assert not (tmp_path / "w").exists()


def test_a_scenario_speed_the_gateway_cannot_follow_is_refused_up_front(tmp_path: Path) -> None:
    proc = _run(str(_scenario(tmp_path, speed="0.0001")), "--workdir", str(tmp_path / "w"))
    _refused(proc, "speed")
    assert "speed must be a number in [0.001, 3600], got 0.0001" in proc.stderr  # the loader, as `hil validate` says


def test_a_workdir_under_proc_is_refused_up_front() -> None:
    proc = _run("link-outage", "--workdir", "/proc/civicedge-no-such-dir")
    _refused(proc, "/proc/civicedge-no-such-dir")


def test_junit_is_well_formed_with_control_characters(tmp_path: Path) -> None:
    import dataclasses

    from hil.scenarios import load_scenario
    from hil.scenarios.checks import CheckResult, read_store
    from hil.scenarios.reports import write_junit, write_junit_error
    from hil.scenarios.runner import ScenarioResult

    scenario = tmp_path / "ctl.toml"
    scenario.write_text(OK.format(speed="60").replace('"one streetlight"', '"bell\\u0001 and \\u001f esc"'))
    sc = load_scenario(scenario)
    assert "\x01" in sc.description
    result = ScenarioResult(scenario=dataclasses.replace(sc), checks=[CheckResult("no_loss", False, "lost\x02 one")],
                            data=read_store(tmp_path / "none.sqlite"), generated={}, workdir=tmp_path,
                            wall_s=1.0, virtual_end_ms=sc.start_ms, gateway_status=0, errors=["gateway said \x1b[31m"])
    root = ET.parse(write_junit(result, tmp_path / "j.xml")).getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["description"] == "bell\\u0001 and \\u001f esc"
    assert "lost\\u0002 one" in ET.tostring(root).decode()
    root = ET.parse(write_junit_error(tmp_path / "e.xml", name="x", message="bad \x00 input")).getroot()
    assert "bad \\u0000 input" in (root.find("testsuite/testcase/error").get("message") or "")  # type: ignore[union-attr]
