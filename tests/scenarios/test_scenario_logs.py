"""A scenario run keeps each board's console next to the gateway log; JUnit and HTML name both, and a
failed run shows their tails."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.scenarios import load_scenario
from hil.scenarios.reports import render_html, write_junit
from hil.scenarios.runner import run_scenario

SCENARIO = """
name = "keeps-logs"
description = "Two minutes of one streetlight; a thousand reports cannot arrive."
start = "2026-11-21T04:41:00Z"
duration = "2m"
speed = 60
[[boards]]
board = "streetlight-esp32"
ids = ["sl-log-1"]
link = "uart"
[expect]
reports_min = 1000
"""


@pytest.mark.timeout(240)
async def test_a_run_keeps_board_consoles_and_reports_name_the_logs(tmp_path: Path) -> None:
    path = tmp_path / "keeps-logs.toml"
    path.write_text(SCENARIO)
    result = await run_scenario(load_scenario(path), workdir=tmp_path / "work", handle_signals=False)
    assert not result.passed
    console = result.workdir / "console" / "sl-log-1.log"
    assert result.logs == {"gateway": result.workdir / "gateway.log", "sl-log-1": console}
    assert "civicedge: streetlight sl-log-1 running" in console.read_text()

    junit = write_junit(result, tmp_path / "junit.xml")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["log.gateway"] == str(result.workdir / "gateway.log")
    assert props["log.console.sl-log-1"] == str(console)
    case = next(c for c in suite.findall("testcase") if c.get("name") == "reports_min >= 1000")
    assert case.find("failure") is not None
    out = case.find("system-out")
    assert out is not None and f"sl-log-1 console: {console}" in (out.text or "")
    tails = suite.find("system-out")
    assert tails is not None and "--- sl-log-1 console (" in (tails.text or "")
    assert "sl-log-1 running" in (tails.text or "") and "--- gateway log (" in (tails.text or "")

    page = render_html(result)
    assert "<h2>Logs</h2>" in page and console.resolve().as_uri() in page
    assert "civicedge: streetlight sl-log-1 running" in page  # the tail, on a failed run
