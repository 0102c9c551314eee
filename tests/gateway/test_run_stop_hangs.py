"""`gateway run` always ends: a closed stdout, a BLE radio stack that swallows a cancel, a stop that hangs.

Real gateway subprocesses with a real ``[ble]`` section on the virtual radio (a live relay, or one that
refuses connections: the QA's case) and a real pty serial device; a hang is injected only where the
test says so (a store close that never returns, as on a disk that hangs).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KEYS, make_env
from helpers import report_frame
from procs import REPO, PtyDevice
from stuck_gateway import StuckStart, command

from gateway.config.model import BleConfig
from gateway.pid_lock import lock_holder
from gateway.transports.ble_link import BleTransport

pytestmark = pytest.mark.timeout(60)

# Nothing listens there: each scan's connect to the relay is refused at once.
NO_RELAY = "ws://127.0.0.1:1"


def ble_lines(radio: str) -> str:
    return '[ble]\nenabled = true\nbackend = "virtual"\nradio = "%s"\nscan_interval_s = 0.5\n' % radio


def gateway_cmd(config: Path, prelude: str = "") -> list[str]:
    """``civicedge -v gateway run --config CONFIG``, after ``prelude`` (a fault injected) in the same process."""
    script = "import sys\n%s\nfrom hil.cli.main import main\nsys.exit(main(['-v', 'gateway', 'run', '--config', %r]))\n"
    return [sys.executable, "-c", script % (prelude, str(config))]


def read_ready(proc: "subprocess.Popen[str]", log: Path, timeout: float = 30.0) -> None:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.2)[0] and " ready" in proc.stdout.readline():
            return
    proc.kill()
    raise AssertionError("gateway not ready:\n" + log.read_text())


def wait_log(log: Path, text: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < end, "%r not in the log:\n%s" % (text, log.read_text())
        time.sleep(0.05)


def ended(proc: "subprocess.Popen[str]", within: float) -> int:
    """The exit status; the process is killed (and the test fails) if it has not ended ``within`` seconds."""
    try:
        return proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("gateway still running %.0f s later" % within) from None


def assert_store_whole(db: Path, seqs: list[int] | None = None) -> None:
    """Nobody holds the store's lock, it reads as whole, and holds ``seqs`` of bin-1 (when given)."""
    assert lock_holder(db.with_name(db.name + ".lock")) is None
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        if seqs is not None:
            got = [r[0] for r in conn.execute("SELECT seq FROM reports WHERE device='bin-1' ORDER BY seq")]
            assert got == seqs
    finally:
        conn.close()


@pytest.mark.parametrize("relay", ["refused", "live"])
def test_a_stdout_closed_before_the_ready_line_stops_the_gateway_cleanly_with_141(
        tmp_path: Path, radio: str, relay: str) -> None:
    """The QA's repro (`gateway run | head -c0`, [ble] on): a clean stop (store checkpointed and closed, lock
    released), exit 141 as civicedge's other commands; it hung for ever (refused relay) or skipped the stop."""
    config = make_env(tmp_path, extra=ble_lines(NO_RELAY if relay == "refused" else radio))
    log = tmp_path / "gw.log"
    with log.open("w") as err:
        proc = subprocess.Popen(gateway_cmd(config), cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the gateway prints its ready line
    try:
        status = ended(proc, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert status == 141, text
    assert "stdout was closed before the ready line (its reader went away): stopping the gateway" in text
    assert "gateway gw-test stopped" in text  # Gateway.stop ran to its end
    assert "ignored cancellation" not in text  # the BLE task ended when cancelled
    db = tmp_path / "data" / "reports.sqlite"
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed at the close
    assert_store_whole(db)


# The store's close never returns (a checkpoint on a disk that hangs): the stop cannot end by itself.
HANG_STORE_CLOSE = """
import time
from gateway.storage.store import ReportStore
def close(self):
    print("store close hangs", file=sys.stderr, flush=True)
    time.sleep(3600)
ReportStore.close = close
"""


def _stuck_stop(tmp_path: Path, radio: str, prelude: str) -> tuple["subprocess.Popen[str]", Path, PtyDevice]:
    """A ready gateway ([ble] on the live relay, a serial board that had bin-1 1..5 committed) whose stop hangs."""
    dev = PtyDevice(KEYS)
    config = make_env(tmp_path, serial=(dev.path,), extra=ble_lines(radio))
    log = tmp_path / "gw.log"
    with log.open("w") as err:
        proc = subprocess.Popen(gateway_cmd(config, prelude), cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                text=True, start_new_session=True)
    read_ready(proc, log)
    wait_log(log, "opened %s" % dev.path)
    dev.send([report_frame("bin-1", s, KEYS["bin-1"]) for s in range(1, 6)])
    dev.wait_ack("bin-1", 5)  # ACKs follow commits: these five are in the store
    proc.send_signal(signal.SIGTERM)
    wait_log(log, "store close hangs")
    return proc, log, dev


def test_a_signal_during_a_stop_that_hangs_ends_the_gateway_at_once(tmp_path: Path, radio: str) -> None:
    """After the first SIGTERM the next one ends the process even while the event loop is blocked (the old
    handler only set the stop event, which nothing read any more); what was committed is in the store."""
    proc, log, dev = _stuck_stop(tmp_path, radio, HANG_STORE_CLOSE)
    try:
        proc.send_signal(signal.SIGTERM)
        status = ended(proc, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        dev.close()
    assert status == -signal.SIGTERM, log.read_text()
    assert_store_whole(tmp_path / "data" / "reports.sqlite", [1, 2, 3, 4, 5])


def test_a_stop_that_hangs_ends_after_the_grace_period(tmp_path: Path, radio: str) -> None:
    """With no second signal, the stop's grace period (here 1 s) ends the process, exit 1, saying why."""
    proc, log, dev = _stuck_stop(tmp_path, radio, "from gateway.cli import run_cmd\nrun_cmd.STOP_GRACE_S = 1.0\n"
                                 + HANG_STORE_CLOSE)
    try:
        status = ended(proc, 8)
    finally:
        if proc.poll() is None:
            proc.kill()
        dev.close()
    text = log.read_text()
    assert status == 1, text
    assert "the gateway's stop has not ended 1 s after it began: exiting now" in text
    assert_store_whole(tmp_path / "data" / "reports.sqlite", [1, 2, 3, 4, 5])


def test_an_error_with_a_task_that_ignores_cancellation_still_ends_the_process(tmp_path: Path) -> None:
    """The exit past stuck tasks covers a run that ends with an error too (asyncio.run waited for ever)."""
    try:
        # A gateway whose start fails (as on an HTTP port in use) after a task that ignores cancellation began.
        proc = subprocess.run(command(StuckStart), capture_output=True, text=True, timeout=20,
                              cwd=tmp_path, env={**os.environ, "XDG_DATA_HOME": str(tmp_path)})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the run did not end") from exc
    assert proc.returncode == 1, proc.stderr
    assert "stopped" in proc.stdout
    assert "error (open_failed): cannot serve HTTP on port 1: in use" in proc.stderr
    assert "exiting past 1 task(s) that ignored cancellation: stuck-radio" in proc.stderr


async def test_the_ble_task_ends_when_cancelled_while_the_radio_refuses_it() -> None:
    """A cancel that reaches the scan as its connect to the relay fails (consumed by Python 3.11's wait_for in
    the radio stack) ended as a radio failure, and the transport retried for ever; cancelled at each step of
    its first scan, it now ends every time."""
    hung = []
    for steps in range(12):
        transport = BleTransport(BleConfig(enabled=True, backend="virtual", radio=NO_RELAY))
        task = asyncio.create_task(transport.run(lambda *_: None))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)
        if not done:
            hung.append(steps)
            task.cancel()  # let it go (it may never end)
        else:
            assert task.cancelled()
    assert hung == []
