"""A test's board consoles and gateway log are kept as files, named in JUnit and shown on failure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("sim_available")]

TESTS = """
def test_refused_after_restart(hil_board, hil_gateway):
    hil_board.dut.write_file("/identity.json", b"{not json")
    hil_board.dut.soft_reset()  # the DUT's own reset does not wait for the firmware (restart_firmware would)
    hil_gateway.wait_for_reports(count=1, device_id=hil_board.device_id, timeout_s=3)

def test_passes(hil_board):
    assert hil_board.state == "reporting"
"""


def _properties(junit: Path, test: str) -> dict[str, str]:
    case = next(c for c in ET.parse(junit).iter("testcase") if c.get("name") == test)
    return {p.get("name", ""): p.get("value", "") for p in case.iter("property")}


def test_board_console_and_gateway_log_are_kept_and_shown_on_failure(pytester: pytest.Pytester) -> None:
    """What the QA tester saw: a wait_for_reports timeout showed only the gateway's ready line, though
    the firmware printed `cannot start`, and nothing was written to the test's directories."""
    pytester.makepyfile(TESTS)
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--junitxml={junit}")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*0 of 1 reports stored after 3 s*",
        "*--- gateway output (whole log: */gateway/gateway.log) ---*",
        "*hint: streetlight-hil-*'s firmware refused to start after it last ran: its console says "
        "'civicedge: cannot start: /identity.json: *",
        "*- board console streetlight-hil-* (*/streetlight-hil-*/console.log) -*",
        "*civicedge: cannot start: /identity.json*",
        "*- gateway log (*/gateway/gateway.log) -*",
        "*gateway gw-hil ready*",
    ])
    failed = _properties(junit, "test_refused_after_restart")
    console = Path(next(v for k, v in failed.items() if k.startswith("hil_log:console streetlight-hil-")))
    gateway_log = Path(failed["hil_log:gateway"])
    assert console.name == "console.log" and gateway_log.name == "gateway.log"
    assert console.parent.parent == gateway_log.parent.parent  # both in the test's own directory
    assert "cannot start: /identity.json" in console.read_text()
    assert "gateway gw-hil ready" in gateway_log.read_text()
    # A passing test keeps its console too (as pytest-embedded keeps a dut.log per test).
    passed = _properties(junit, "test_passes")
    kept = Path(next(v for k, v in passed.items() if k.startswith("hil_log:console ")))
    assert kept != console and " running" in kept.read_text()
    assert result.stdout.str().count("- board console ") == 1  # sections for the failed test only
