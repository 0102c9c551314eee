"""`hil run` checks its report paths before running, and writes a JUnit report also for bad input."""

from __future__ import annotations

import os
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


def test_a_name_too_long_is_refused_without_a_traceback(tmp_path: Path) -> None:
    from hil.scenarios.reports import output_problem

    long = tmp_path / "out" / ("r" * 300 + ".html")
    assert "File name too long" in (output_problem(long) or "")
    (tmp_path / "out").mkdir()
    assert "File name too long" in (output_problem(long) or "")
    deep = tmp_path / ("d" * 300) / "r.html"
    assert "File name too long" in (output_problem(deep) or "")
    proc = _run("link-outage", "--workdir", str(tmp_path / "w"), "--html", str(long))
    assert proc.returncode == 2, proc.stderr
    assert "--html: cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_an_os_error_while_checking_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.scenarios import reports

    def broken(self: Path) -> bool:
        raise OSError(36, "File name too long")

    monkeypatch.setattr(Path, "is_dir", broken)
    assert reports.output_problem(tmp_path / "r.html") == f"cannot write {tmp_path / 'r.html'}: File name too long"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_directory_that_takes_no_files_is_refused_even_for_root(tmp_path: Path) -> None:
    from hil.scenarios.reports import output_problem

    # os.access says root may write /proc; creating a file there fails: probed, not guessed.
    assert "cannot create /proc/x.html" in (output_problem(Path("/proc/x.html")) or "")
    assert "cannot create /proc/civicedge-x" in (output_problem(Path("/proc/civicedge-x/r.xml")) or "")
    proc = _run("link-outage", "--workdir", str(tmp_path / "w"), "--html", "/proc/x.html")
    assert proc.returncode == 2, proc.stderr
    assert "--html: cannot create /proc/x.html" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_the_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    from hil.scenarios.reports import output_problem

    assert output_problem(tmp_path / "r.html") is None
    assert output_problem(tmp_path / "a" / "b" / "r.xml") is None
    existing = tmp_path / "old.xml"
    existing.write_text("previous report")
    assert output_problem(existing) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.xml"]
    assert existing.read_text() == "previous report"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere permission bits allow nothing")
def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    from hil.scenarios.reports import output_problem

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "cannot create" in (output_problem(ro / "r.xml") or "")
        assert "cannot create" in (output_problem(ro / "sub" / "r.xml") or "")
    finally:
        ro.chmod(0o700)
