"""A confirmed retention pass that a stop (SIGTERM) or a kill (SIGKILL) cuts off: the confirmation is used up
(never carried to a start whose clock nobody confirmed), and the operator is told so.

Before, the next start was held again and said nothing about the confirmation: its file was gone, the hold saved
as before. Now the next start logs a WARNING, and ``/healthz`` and ``civicedge gateway retention`` name the
confirmation (when it was given, the pass that took it, that it did not finish) and say: confirm again.

The real gateway as a process (``civicedge gateway run``), a real SQLite store, the real CLI and real HTTP. The
process runs with one value per retention job (``field_retention.FIELD_BATCH = 1``): the same pass, only in
more, shorter jobs, so it can be stopped part-way without a race.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable

import pytest
from conftest import make_env
from procs import REPO

from gateway.config import load_config
from gateway.retention_clock import CONFIRM_FILE, RetentionClock, parse_saved_confirm
from gateway.storage import ReportStore
from hil.cli.main import main
from tests.gateway.test_retention_cut_pass import DAY, rec, temps

pytestmark = pytest.mark.timeout(180)

VALUES = 3000  # bin.temp values, all past their retention (90 days): a confirmed pass removes every one
CHILD = ("import sys\n"
         "from gateway.storage import field_retention\n"
         "field_retention.FIELD_BATCH = 1\n"
         "from hil.cli.main import main\n"
         "sys.exit(main(sys.argv[1:]))\n")


def _port(first: int) -> int:
    """A free loopback port from ``first`` on, in this test's range (a hundred ports each case)."""
    for port in range(first, first + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in %d-%d" % (first, first + 99))


class _Gateway:
    """``civicedge gateway run -v`` as a process (its log in a file), one value per retention job."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self._log: IO[str] = log_path.open("a")
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, "-v", "gateway", "run", "--config", str(config)],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                line = self.proc.stdout.readline()
                if "ready" in line:
                    return
                if not line and self.proc.poll() is not None:
                    break
        self.stop(signal.SIGKILL)
        raise AssertionError("the gateway did not start:\n" + self.logs())

    def logs(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self._log.close()


def _wait(check: Callable[[], object], what: str, gw: _Gateway, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert gw.proc.poll() is None, "the gateway exited (%s):\n%s" % (what, gw.logs())
        assert time.monotonic() < end, "%s:\n%s" % (what, gw.logs())
        time.sleep(0.05)


def _healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:  # 503: degraded
        body = exc.read()
    result: dict[str, Any] = json.loads(body)
    return result


def _retention_problems(port: int) -> list[dict[str, Any]]:
    return [p for p in _healthz(port)["problems"] if p["code"].startswith("retention")]


def _status(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["gateway", "retention", "--config", str(config)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_confirmation_whose_pass_a_stop_cut_off_is_said_used_up_at_the_next_start(
        tmp_path: Path, stop: int, capsys: pytest.CaptureFixture[str]) -> None:
    port = _port(42300 if stop == signal.SIGTERM else 42400)
    cfg = make_env(tmp_path, extra="[retention]\ninterval_s = 3600\n")
    cfg.write_text(cfg.read_text().replace("[http]\nenabled = false\n",
                                           '[http]\nenabled = true\nlisten = "127.0.0.1"\nport = %d\n' % port))
    config = load_config(cfg)
    db, confirm = config.storage.path, config.data_dir / CONFIRM_FILE
    command = "civicedge gateway retention --confirm --config %s" % cfg.resolve()
    # The last report was received 169 days ago (a gateway off that long, or a clock that jumped): its first pass
    # finds the clock ahead of the data and holds retention until the operator confirms.
    now = time.time()
    t = int(now) - int(now) % 900 - 200 * DAY
    store = ReportStore(db, gateway_id="gw-test")
    store.insert_batch([rec("b1", s, t + 900 * s) for s in range(1, VALUES + 1)], {"b1": VALUES})
    store.close()

    gw = _Gateway(cfg, tmp_path / "first.log")
    try:
        _wait(lambda: "retention held since" in _status(cfg, capsys), "retention was not held", gw)
        assert temps(db) == VALUES
        given = (time.time(), 0.0)
        capsys.readouterr()
        assert main(["gateway", "retention", "--config", str(cfg), "--confirm"]) == 0
        given = (given[0], time.time())
        _wait(lambda: temps(db) < VALUES - 20, "the confirmed pass did not begin removing", gw)
        assert gw.stop(stop) == (0 if stop == signal.SIGTERM else -signal.SIGKILL)
    finally:
        gw.stop(signal.SIGKILL)
    left = temps(db)
    assert 0 < left < VALUES, "the pass was not cut off part-way (%d of %d values left)" % (left, VALUES)
    assert not confirm.exists()  # taken by the pass: one confirmation, one pass

    # Stopped: the status says the confirmation is used up and what to do.
    out = _status(cfg, capsys)
    assert out.startswith("retention held since "), out
    note = re.search(r"the operator's confirmation given at (\S+ \S+) UTC was used by the retention pass of .*, "
                     r"which did not finish: the gateway stopped or was killed during it; .*confirm again: (.*)", out)
    assert note is not None, out
    at = calendar.timegm(time.strptime(note.group(1), "%Y-%m-%d %H:%M:%S"))
    assert given[0] - 2 <= at <= given[1] + 1, (note.group(1), given)  # the time the operator gave it
    assert note.group(2).strip() == command

    # The next start: held again (nothing removed without a confirmation), and it says why.
    gw = _Gateway(cfg, tmp_path / "second.log")
    try:
        _wait(lambda: any("confirm again" in p["message"] for p in _retention_problems(port)),
              "/healthz does not say the confirmation was used up", gw)
        problems = _retention_problems(port)
        assert len(problems) == 1 and problems[0]["severity"] == "warning", problems
        message = problems[0]["message"]
        assert "ahead of" in message and "did not finish: the gateway stopped or was killed during it" in message
        assert message.endswith("confirm again: %s" % command), message
        warnings = [line for line in gw.logs().splitlines()
                    if "WARNING" in line and "retention: the operator's confirmation given at" in line]
        assert len(warnings) == 1 and warnings[0].endswith("confirm again: %s" % command), gw.logs()
        assert temps(db) == left
        _wait(lambda: "did not finish: the gateway stopped" in _status(cfg, capsys),  # (saved so at its first pass)
              "the status of the running gateway does not say the confirmation was used up", gw)

        # Confirmed again: the pass runs to its end, the hold and the note are gone.
        assert main(["gateway", "retention", "--config", str(cfg), "--confirm"]) == 0
        _wait(lambda: "retention resumes: the pass held since" in gw.logs(), "the confirmed pass did not run", gw)
        assert temps(db) == 0 and not _retention_problems(port)
    finally:
        assert gw.stop(signal.SIGTERM) == 0
    assert _status(cfg, capsys).strip() == "retention is not held"


def test_a_confirmation_whose_pass_failed_is_said_with_the_hold_and_kept_over_a_restart(
        caplog: pytest.LogCaptureFixture) -> None:
    """The pass that took the confirmation failed (the loop calls not_run): the hold's problem names the
    confirmation until the hold ends, also after a restart; a saved confirmation that cannot be read is left out
    with a WARNING, the hold kept."""
    last = 1_790_000_000.0
    clock = RetentionClock(3600, monotonic=None, confirm_command="CMD")
    assert clock.removal_time(last + 10 * DAY, last) is None and clock.hold is not None  # clock_ahead: held
    clock.confirm(last + 10 * DAY + 5, given=last + 10 * DAY)
    assert clock.removal_time(last + 10 * DAY + 5, last) is not None
    assert "confirm again" not in json.dumps(clock.problem)  # in use: nothing to say yet
    clock.not_run()
    assert clock.removal_time(last + 10 * DAY + 65, last) is None
    utc = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))  # noqa: E731
    assert clock.problem is not None and clock.problem.endswith(
        "; the operator's confirmation given at %s was used by the retention pass of %s (gateway clock), which did "
        "not finish: it failed; a confirmation is good for one pass, so nothing is removed on it any more: confirm "
        "again: CMD" % (utc(last + 10 * DAY), utc(last + 10 * DAY + 5))), clock.problem

    restarted = RetentionClock(3600, monotonic=None, confirm_command="CMD")
    restarted.restore(clock.state())
    assert not restarted.confirm_cut_off  # (saved as failed, not in use)
    assert restarted.removal_time(last + 10 * DAY + 125, last) is None
    assert restarted.problem is not None and "did not finish: it failed" in restarted.problem
    assert parse_saved_confirm(clock.state()) == {"given": last + 10 * DAY, "taken": last + 10 * DAY + 5,
                                                  "ended": "failed"}

    bad = json.loads(clock.state())
    bad["confirm"] = {"given": "yesterday", "taken": None, "ended": None}
    damaged = RetentionClock(3600, monotonic=None, confirm_command="CMD")
    with caplog.at_level(logging.WARNING):
        damaged.restore(json.dumps(bad))
    assert damaged.hold is not None and damaged.hold == clock.hold
    assert "the saved confirmation" in caplog.text and "cannot be read; left out" in caplog.text
    assert damaged.removal_time(last + 10 * DAY + 125, last) is None
    assert damaged.problem is not None and "the operator's confirmation" not in damaged.problem
