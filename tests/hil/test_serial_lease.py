"""Leases on real boards: acquire, contend, expire, steal after expiry, crash of the holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hil.backends.errors import LeaseError, LeaseHeldError, LeaseLostError
from hil.backends.serial.lease import Lease, LeaseRecord


class FakeClock:
    """Wall clock the test moves by hand (expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_acquire_writes_lease_and_release_removes_it(tmp_path: Path) -> None:
    lease = Lease("/dev/ttyUSB0", lease_dir=tmp_path, duration_s=30, refresh=False)
    record = lease.acquire()
    assert lease.held and record.pid == os.getpid() and record.expires_at - record.acquired_at == 30
    on_disk = json.loads(lease.path.read_text())
    assert on_disk["resource"] == "/dev/ttyUSB0" and lease.path.name == "dev_ttyUSB0.lease"
    lease.release()
    assert not lease.path.exists() and not lease.held
    lease.release()  # idempotent


def test_contention_reports_the_holder(tmp_path: Path) -> None:
    clock = FakeClock()
    a = Lease("usb:A1", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    b = Lease("usb:A1", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    a.acquire()
    with pytest.raises(LeaseHeldError) as err:
        b.acquire()
    assert err.value.holder_pid == os.getpid() and err.value.expires_at == clock.now + 10
    assert err.value.resource == "usb:A1"
    assert b.holder() is not None and b.holder().owner != b._owner  # type: ignore[union-attr]


def test_expiry_then_steal_then_old_holder_learns_it_lost(tmp_path: Path) -> None:
    clock = FakeClock()
    a = Lease("mac:24:0a:c4:00:00:01", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    b = Lease("mac:24:0a:c4:00:00:01", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    a.acquire()
    clock.now += 9.9
    with pytest.raises(LeaseHeldError):
        b.acquire()
    clock.now += 0.2  # a's lease has expired (no refresh)
    assert b.holder() is None
    b.acquire()
    assert b.held
    with pytest.raises(LeaseLostError):
        a.refresh()
    assert a.lost and not a.held
    a.release()  # must not remove b's lease
    assert b.holder() is not None


def test_refresh_extends_lease(tmp_path: Path) -> None:
    clock = FakeClock()
    a = Lease("p", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    b = Lease("p", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    a.acquire()
    clock.now += 8
    a.refresh()
    clock.now += 8  # 16 s after acquire, 8 s after refresh: still held
    with pytest.raises(LeaseHeldError):
        b.acquire()


def test_crashed_holder_on_other_host_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    lease = Lease("usb:X", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    # A lease left behind by a run on another rig host that crashed (its pid means nothing here).
    stale = LeaseRecord(resource="usb:X", owner="dead", pid=1, host="other-rig-host",
                        acquired_at=clock.now - 5, expires_at=clock.now + 5)
    lease.path.write_text(json.dumps(stale.__dict__))
    with pytest.raises(LeaseHeldError) as err:
        lease.acquire()
    assert err.value.holder_host == "other-rig-host"
    clock.now += 5.01
    lease.acquire()
    assert lease.held


def test_corrupt_lease_file_does_not_lock_forever(tmp_path: Path) -> None:
    lease = Lease("usb:Y", lease_dir=tmp_path, duration_s=10, refresh=False)
    lease.path.write_text("{not json")
    lease.acquire()
    assert json.loads(lease.path.read_text())["owner"] == lease._owner


def test_wait_for_release(tmp_path: Path) -> None:
    a = Lease("w", lease_dir=tmp_path, duration_s=30, refresh=False)
    b = Lease("w", lease_dir=tmp_path, duration_s=30, refresh=False)
    a.acquire()
    threading.Timer(0.3, a.release).start()
    t0 = time.monotonic()
    b.acquire(wait_s=5, poll_s=0.05)
    assert b.held and 0.2 < time.monotonic() - t0 < 5


HOLDER = """
import sys, time
from pathlib import Path
from hil.backends.serial.lease import Lease
lease = Lease("usb:CRASH", lease_dir=Path(sys.argv[1]), duration_s=float(sys.argv[2]))
lease.acquire()
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_refreshed_by_live_process_and_freed_when_it_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "1.2"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        mine = Lease("usb:CRASH", lease_dir=tmp_path, duration_s=5, refresh=False)
        time.sleep(2.6)  # over 2 lease periods: only the holder's refresh thread keeps it alive
        with pytest.raises(LeaseHeldError) as err:
            mine.acquire()
        assert err.value.holder_pid == proc.pid
        proc.send_signal(signal.SIGKILL)  # crash: no release, no more refreshes
        proc.wait(10)
        mine.acquire()  # holder's pid is gone on this host: taken at once
        assert mine.held
        mine.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_refresh_thread_stops_on_release(tmp_path: Path) -> None:
    lease = Lease("r", lease_dir=tmp_path, duration_s=0.9)
    lease.acquire()
    time.sleep(1.4)
    first = json.loads(lease.path.read_text())["expires_at"]
    assert first > time.time()  # refreshed past the original expiry
    lease.release()
    assert lease._thread is None and not lease.path.exists()


def test_bad_duration(tmp_path: Path) -> None:
    with pytest.raises(LeaseError):
        Lease("x", lease_dir=tmp_path, duration_s=0)


def test_unusable_lease_dir_is_a_lease_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    lease = Lease("usb:Z", lease_dir=blocker / "leases", duration_s=5, refresh=False)
    with pytest.raises(LeaseError) as err:
        lease.acquire()
    assert err.value.resource == "usb:Z" and "not-a-dir" in str(err.value)
