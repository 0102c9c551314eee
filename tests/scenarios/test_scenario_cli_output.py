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


DEEP = """
name = "out-deep"
start = "2026-11-21T12:00:00Z"
duration = "6m"
speed = {speed}
[[boards]]
board = "bin-esp32c3"
ids = ["bin-out-1"]
link = "ble"
sleep = "deep"
[boards.stimuli]
set = {{ distance = 700, temperature = 15, battery = 64, tilt = 0, lid = 0 }}
[expect]
reports_min = 1
no_loss = true
"""


@pytest.mark.parametrize("speed, warned", [(60, True), (10, False)])
def test_validate_warns_of_a_deep_sleeping_bin_too_fast_to_report(tmp_path: Path, speed: int, warned: bool) -> None:
    scenario = tmp_path / "deep.toml"
    scenario.write_text(DEEP.format(speed=speed))
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "validate", str(scenario)], cwd=REPO,
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stdout + proc.stderr
    if warned:
        assert proc.stderr.startswith(f"warning: {scenario}: boards[1] (bin-esp32c3: bin-out-1): sleep = \"deep\" at "
                                      "60x"), proc.stderr
        assert "0.5 s of wall time" in proc.stderr and "Use speed <= 10 (or --speed 10), or sleep = \"awake\"" \
            in proc.stderr
    else:
        assert proc.stderr == ""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_failing_expectations_of_a_too_fast_deep_sleeper_say_why(tmp_path: Path) -> None:
    scenario = tmp_path / "deep.toml"
    scenario.write_text(DEEP.format(speed=60))
    junit = tmp_path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "run", str(scenario), "--plain",
                           "--workdir", str(tmp_path / "work"), "--junit", str(junit), "--drain", "3"],
                          cwd=REPO, capture_output=True, text=True, env=_env(), timeout=220)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "warning: boards[1] (bin-esp32c3: bin-out-1): sleep = \"deep\" at 60x" in proc.stderr
    fail_lines = [line for line in proc.stdout.splitlines() if line.startswith("  FAIL ")]
    assert fail_lines and all("hint: boards[1]" in line and "speed <= 10" in line for line in fail_lines), proc.stdout
    failures = ET.parse(junit).getroot().findall("testsuite/testcase/failure")
    assert failures and all("hint: boards[1]" in (f.get("message") or "") for f in failures)


def test_ctrl_c_before_the_run_starts_exits_1_with_a_junit_run_error(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from hil.cli import hil_cmd
    from hil.cli.main import build_parser

    scenario = tmp_path / "file-name.toml"
    scenario.write_text(PASSING)
    junit = tmp_path / "junit.xml"
    real_load = hil_cmd.load_scenario

    def load_with_ctrl_c(name: str | Path) -> object:
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT while the scenario loads (Python's default handler)
        return real_load(name)

    monkeypatch.setattr(hil_cmd, "load_scenario", load_with_ctrl_c)
    args = build_parser().parse_args(["hil", "run", str(scenario), "--workdir", str(tmp_path / "w"),
                                      "--junit", str(junit)])
    # Python's own SIGINT handler, as `civicedge` has it (an earlier test in this process may have left another).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert hil_cmd.cmd_run(args) == 1
    finally:
        signal.signal(signal.SIGINT, previous)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "scenario.out-pass"
    error = suite.find("testcase[@name='run']/error")
    assert error is not None and error.get("message") == "run interrupted before it started"
    assert not (tmp_path / "w").exists()  # nothing was started


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_while_loading_exits_1_with_a_junit_run_error(tmp_path: Path, sig: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from hil.cli import hil_cmd
    from hil.cli.main import build_parser

    scenario = tmp_path / "file-name.toml"
    scenario.write_text(PASSING)
    junit = tmp_path / "junit.xml"
    real_load = hil_cmd.load_scenario

    def load_with_signal(name: str | Path) -> object:
        os.kill(os.getpid(), getattr(signal, sig))  # as CI's timeout or a closed terminal sends it
        return real_load(name)

    monkeypatch.setattr(hil_cmd, "load_scenario", load_with_signal)
    args = build_parser().parse_args(["hil", "run", str(scenario), "--workdir", str(tmp_path / "w"),
                                      "--junit", str(junit)])
    # Not ignored, as in a terminal session: a suite run under nohup inherits SIGHUP ignored, and the
    # command rightly keeps an inherited ignore (then it passed or failed depending on test order).
    def before(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(getattr(signal, sig), before)
    try:
        assert hil_cmd.cmd_run(args) == 1
        assert signal.getsignal(getattr(signal, sig)) == before  # the command's handlers are gone again
    finally:
        signal.signal(getattr(signal, sig), previous)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "scenario.out-pass"
    error = suite.find("testcase[@name='run']/error")
    assert error is not None and error.get("message") == f"run interrupted before it started ({sig})"
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ctrl_c_after_the_run_keeps_its_result_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    from hil.cli import hil_cmd
    from hil.cli.main import build_parser

    scenario = tmp_path / "out-pass.toml"
    scenario.write_text(PASSING)
    junit, html = tmp_path / "junit.xml", tmp_path / "report.html"
    real_html = hil_cmd.write_html

    def html_with_ctrl_c(result: object, path: Path) -> Path:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the run, while its HTML report is written
        return real_html(result, path)  # type: ignore[arg-type]

    monkeypatch.setattr(hil_cmd, "write_html", html_with_ctrl_c)
    args = build_parser().parse_args(["hil", "run", str(scenario), "--plain", "--workdir", str(tmp_path / "w"),
                                      "--junit", str(junit), "--html", str(html), "--drain", "10"])
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert hil_cmd.cmd_run(args) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    captured = capsys.readouterr()
    assert "PASSED" in captured.out and "before the run started" not in captured.err
    assert "SIGINT came after the scenario's end" in captured.err
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "0" and suite.get("failures") == "0"
    assert {c.get("name") for c in suite.findall("testcase")} == {"reports_min >= 1", "no_loss"}
    assert html.stat().st_size > 0


def test_bad_input_junit_suite_is_named_after_the_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "t6.toml"
    scenario.write_text(PASSING.replace('"streetlight-esp32"', '"streetlight-esp33"'))
    junit = tmp_path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "hil.cli.main", "hil", "run", str(scenario), "--junit", str(junit),
                           "--workdir", str(tmp_path / "w")], cwd=REPO, capture_output=True, text=True, env=_env())
    assert proc.returncode == 2, proc.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "scenario.out-pass"  # the name in the file, not "t6"
    assert f"JUnit report: {junit}" in proc.stdout and "unknown board" in proc.stderr


def test_progress_is_clamped_and_in_a_unit_that_suits_the_duration() -> None:
    from hil.cli.hil_cmd import _progress_text
    from hil.scenarios.runner import Progress

    assert _progress_text(Progress(20 * 60_000 + 36_000, 20 * 60_000, 0, 0, "draining")) == "+  20.0 / 20 min"
    assert _progress_text(Progress(12 * 3_600_000, 7 * 86_400_000, 0, 0, "running")) == "+   0.5 / 7 d"
    assert _progress_text(Progress(3 * 3_600_000, 86_400_000, 0, 0, "running")) == "+   3.0 / 24 h"


def test_html_time_axis_ticks_are_round() -> None:
    from hil.scenarios.reports import _clock, axis_ticks

    t0 = 1_795_291_200_000  # 2026-11-21 20:00 UTC
    assert [_clock(t) for t in axis_ticks(t0, t0 + 20 * 60_000)] == ["20:00", "20:05", "20:10", "20:15", "20:20"]
    assert [_clock(t) for t in axis_ticks(t0 + 7_000, t0 + 40 * 60_000)] == ["20:05", "20:10", "20:15", "20:20",
                                                                              "20:25", "20:30", "20:35", "20:40"]
    assert len(axis_ticks(t0, t0 + 7 * 86_400_000)) <= 8



def test_html_time_axis_labels_say_the_day_on_multi_day_plots_and_short_spans_get_ticks() -> None:
    from hil.scenarios.reports import board_svg, tick_labels

    t0 = 1_795_291_200_000  # 2026-11-21 20:00 UTC
    week = [label for _, label in tick_labels(t0, t0 + 7 * 86_400_000)]
    assert 2 <= len(week) <= 8 and len(set(week)) == len(week), week  # not "00:00" on every tick
    assert week[0] == "11-22 00:00"
    assert [label for _, label in tick_labels(t0, t0 + 20 * 60_000)][:2] == ["20:00", "20:05"]  # one day: time only
    night = [label for _, label in tick_labels(t0 + 3_600_000, t0 + 5 * 3_600_000)]  # crosses midnight
    assert night[:2] == ["11-21 21:00", "11-21 21:30"] and night[-1] == "11-22 01:00" and "11-22 00:00" in night
    assert [label for _, label in tick_labels(t0, t0 + 20_000)][:3] == ["20:00:00", "20:00:05", "20:00:10"]
    assert [label for _, label in tick_labels(t0 + 250, t0 + 1_250)][:2] == ["20:00:00.400", "20:00:00.600"]
    assert tick_labels(t0 + 30_500, t0 + 30_500) == [(t0 + 30_500, "20:00:30.500")]
    for t1 in (t0 + 8, t0 + 999, t0 + 45_000):  # under a minute: ticks still fall within the span
        assert tick_labels(t0 + 7, t1), t1
    svg = board_svg([], [], [], t0, t0 + 3 * 86_400_000)
    assert "2026-11-21 20:00–2026-11-24 20:00 UTC virtual" in svg and ">11-22 00:00<" in svg


def test_scenario_checks_do_not_import_pytest(tmp_path: Path) -> None:
    # `hil validate`/`hil run` warn about deep sleep at a high speed; the numbers must not pull in
    # pytest and the plugin package (~140 ms on every command).
    code = ("import sys\nfrom hil.scenarios import load_scenario\nfrom hil.scenarios.hints import deep_sleep_warnings\n"
            "sc = load_scenario(sys.argv[1])\nprint(len(deep_sleep_warnings(sc, 3600)))\n"
            "print(sorted(m for m in sys.modules if m == 'pytest' or m.startswith('hil.pytest_plugin')))\n")
    scenario = tmp_path / "deep.toml"
    scenario.write_text(DEEP.format(speed=60))
    proc = subprocess.run([sys.executable, "-c", code, str(scenario)], cwd=REPO, capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1", "[]"], proc.stdout

def test_one_report_is_singular() -> None:
    from hil.scenarios.checks import _n

    assert (_n(1, "report"), _n(0, "report"), _n(2, "report")) == ("1 report", "0 reports", "2 reports")


def test_ignored_signals_stay_ignored_and_restore_puts_back_the_default_for_an_unknown_handler() -> None:
    import signal

    from hil.cli import hil_cmd

    before = {sig: signal.getsignal(sig) for sig in hil_cmd._Signals.SIGNALS}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        signals = hil_cmd._Signals()
        signals.install()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # not taken over for the command
        assert signal.getsignal(signal.SIGTERM) == signals._handle
        signals.restore()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
        # A handler not set from Python: getsignal gave None; restore falls back to the default.
        signals._previous[signal.SIGTERM] = None
        signals.restore()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_signal_just_before_the_run_starts_boots_nothing(tmp_path: Path) -> None:
    from hil.cli import hil_cmd
    from hil.cli.main import build_parser
    from hil.workdir import lock_workdir

    scenario = tmp_path / "file-name.toml"
    scenario.write_text(PASSING)
    junit, work = tmp_path / "junit.xml", tmp_path / "w"
    args = build_parser().parse_args(["hil", "run", str(scenario), "--workdir", str(work), "--junit", str(junit)])
    out, err = hil_cmd._Console(stderr=False), hil_cmd._Console(stderr=True)
    signals = hil_cmd._Signals()  # not installed: the signal is recorded by hand, as _handle does in "run"
    prepared = hil_cmd._prepare(args, out, err, signals)
    assert isinstance(prepared, hil_cmd._Prepared) and signals.phase == "run"
    signals.received.append("SIGTERM")
    assert hil_cmd._execute(args, prepared, out, err, signals) == 1
    assert not (work / "gateway.log").exists()  # no gateway, no boards
    lock_workdir(work).release()  # and the work directory is free again
    error = ET.parse(junit).getroot().find("testsuite/testcase[@name='run']/error")
    assert error is not None and error.get("message") == "run interrupted before it started (SIGTERM)"


def test_console_treats_a_hung_up_terminal_like_a_closed_pipe(tmp_path: Path) -> None:
    import errno

    from hil.cli import hil_cmd

    class HungUp:
        """A stream whose terminal is gone: every write fails with EIO, as on a closed pty."""

        def write(self, text: str) -> int:
            raise OSError(errno.EIO, "Input/output error")

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            raise ValueError("no descriptor")

    console = hil_cmd._Console(stderr=True)
    console.file = HungUp()  # type: ignore[assignment]
    console.print("progress")  # raised OSError (EIO) before: the run died without its reports
    assert console.broken and console.quiet
    console.print("more")  # dropped quietly


def test_a_failed_run_prints_where_its_logs_are(tmp_path: Path) -> None:
    """A failed ``hil run`` names the gateway log and each board's console log of its work dir; a passed
    one does not."""
    import dataclasses
    import io

    from rich.console import Console

    from hil.cli.hil_cmd import _print_result
    from hil.scenarios import load_scenario
    from hil.scenarios.checks import CheckResult, StoredData
    from hil.scenarios.runner import ScenarioResult

    night = load_scenario("night-with-pedestrians")
    logs = {"gateway": tmp_path / "gateway.log", "sl-night-1": tmp_path / "console" / "sl-night-1.log"}
    failed = ScenarioResult(night, [CheckResult("no_loss", False, "missing 1: sl-night-1#2")], StoredData([], [], []),
                            {}, tmp_path, 1.0, night.start_ms + 60_000, 0, logs=logs)
    out = io.StringIO()
    _print_result(failed, Console(file=out, width=60, color_system=None))
    text = out.getvalue()
    assert f"  gateway log: {logs['gateway']}\n" in text and f"  console sl-night-1: {logs['sl-night-1']}\n" in text
    passed = dataclasses.replace(failed, checks=[CheckResult("no_loss", True, "all 2 reports stored")])
    out = io.StringIO()
    _print_result(passed, Console(file=out, width=60, color_system=None))
    assert "PASSED" in out.getvalue() and "gateway.log" not in out.getvalue()
