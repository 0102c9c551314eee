"""DST QA: the command line's log lines carry their UTC offset, so the hour the clocks go back is not
two hours of identical timestamps."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from gateway.log_time import IsoTimeFormatter

LINE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2} WARNING civicedge\.test: hello\Z")


@pytest.fixture
def amsterdam(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Amsterdam")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _stamp(at: datetime) -> str:
    record = logging.LogRecord("civicedge.test", logging.INFO, __file__, 1, "hello", None, None)
    record.created = at.timestamp()
    return IsoTimeFormatter("%(asctime)s").format(record)


def test_the_repeated_hour_gets_two_different_stamps(amsterdam: None) -> None:
    first = _stamp(datetime(2026, 10, 25, 0, 30, 0, 250_000, tzinfo=timezone.utc))
    second = _stamp(datetime(2026, 10, 25, 1, 30, 0, 250_000, tzinfo=timezone.utc))
    assert (first, second) == ("2026-10-25T02:30:00.250+02:00", "2026-10-25T02:30:00.250+01:00")


def test_a_stamp_parses_back_to_its_moment(amsterdam: None) -> None:
    at = datetime(2027, 3, 28, 1, 30, 5, 7_000, tzinfo=timezone.utc)  # 03:30:05 CEST, after the skipped hour
    assert _stamp(at) == "2027-03-28T03:30:05.007+02:00"
    assert datetime.fromisoformat(_stamp(at)) == at


@pytest.mark.timeout(60)
def test_the_configured_handler_writes_the_offset() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}  # not under systemd: timestamps
    env["TZ"] = "Europe/Amsterdam"
    code = ("import logging; from hil.cli.main import configure_logging; configure_logging(0); "
            "logging.getLogger('civicedge.test').warning('hello')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env)
    assert proc.returncode == 0, proc.stderr
    line = proc.stderr.strip()
    assert LINE.match(line), line
    stamp = datetime.fromisoformat(line.split(" ", 1)[0])
    assert abs(stamp.timestamp() - time.time()) < 50  # now, in Amsterdam's winter or summer time
    assert stamp.utcoffset() in (timedelta(hours=1), timedelta(hours=2)), line


@pytest.mark.timeout(60)
def test_the_standalone_radio_relay_writes_the_offset_too() -> None:
    """Review of d3de4c9: ``python -m hil.sim.radio`` set up its own logging without the offset."""
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["TZ"] = "Europe/Amsterdam"
    proc = subprocess.Popen([sys.executable, "-m", "hil.sim.radio", "-v", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("ws://127.0.0.1:")  # listening, so it has logged that
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = next(ln for ln in err.splitlines() if "virtual radio listening" in ln)
    stamp = datetime.fromisoformat(line.split(" ", 1)[0])
    assert stamp.utcoffset() in (timedelta(hours=1), timedelta(hours=2)), line
    assert " INFO hil.sim.radio.relay: " in line
