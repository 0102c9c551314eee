"""Leases on real boards: acquire, contend, expire, steal after expiry, crash of the holder."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
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


RELEASER = """
import sys, time
from pathlib import Path
from hil.backends.serial.lease import Lease
lease = Lease("w", lease_dir=Path(sys.argv[1]), duration_s=30)
lease.acquire()
print("held", flush=True)
time.sleep(0.5)
lease.release()
"""


@pytest.mark.timeout(60)
def test_wait_for_release(tmp_path: Path) -> None:
    # Another run (a process of its own) releases the board while this one waits.
    proc = subprocess.Popen([sys.executable, "-c", RELEASER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        b = Lease("w", lease_dir=tmp_path, duration_s=30, refresh=False)
        t0 = time.monotonic()
        b.acquire(wait_s=10, poll_s=0.05)
        assert b.held and 0.2 < time.monotonic() - t0 < 10
        b.release()
    finally:
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_lease_of_this_process_is_never_waited_for(tmp_path: Path) -> None:
    # Two board handles of one test run on one port: only this process could release the first
    # lease, so waiting --hil-lease-wait for it would end in a failure blaming ourselves.
    a = Lease("/dev/pts/1", lease_dir=tmp_path, duration_s=60, refresh=False)
    b = Lease("/dev/pts/1", lease_dir=tmp_path, duration_s=60, refresh=False)
    a.acquire()
    t0 = time.monotonic()
    with pytest.raises(LeaseHeldError) as err:
        b.acquire(wait_s=30)
    assert time.monotonic() - t0 < 1
    assert err.value.this_process and err.value.holder_pid == os.getpid()
    assert "already leased by this process" in str(err.value) and "this test run" in str(err.value)
    a.release()
    b.acquire(wait_s=0)  # released: free again
    b.release()


def test_another_runs_lease_shows_a_readable_expiry(tmp_path: Path) -> None:
    lease = Lease("usb:Z", lease_dir=tmp_path, duration_s=10, refresh=False)
    expires = time.time() + 42
    other = LeaseRecord(resource="usb:Z", owner="theirs", pid=4242, host="rig-7", acquired_at=expires - 60,
                        expires_at=expires)
    lease.path.write_text(json.dumps(other.__dict__))
    with pytest.raises(LeaseHeldError) as err:
        lease.acquire()
    message = str(err.value)
    assert not err.value.this_process
    local = datetime.fromtimestamp(expires).astimezone().isoformat(timespec="seconds")
    assert f"usb:Z is leased by pid 4242 on rig-7 until {local} (in " in message
    assert re.search(r"\(in 4[12] s\); that pid cannot be checked from here \(another machine\), so the lease is "
                     r"freed only by its expiry$", message), message
    assert "UNIX time" not in message


def _our_pidns() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _our_boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_lease_left_by_a_dead_process_with_our_pid_is_taken_at_once(tmp_path: Path) -> None:
    # Our pid and pid namespace, but no lease object of this process holds it: a crashed earlier
    # run whose pid we reuse.
    lease = Lease("usb:R", lease_dir=tmp_path, duration_s=10, refresh=False)
    ghost = LeaseRecord(resource="usb:R", owner="crashed-run", pid=os.getpid(), host=socket.gethostname(),
                        acquired_at=time.time(), expires_at=time.time() + 60, pidns=_our_pidns(),
                        boot_id=_our_boot_id())
    lease.path.write_text(json.dumps(ghost.__dict__))
    lease.acquire(wait_s=0)
    assert lease.held
    written = json.loads(lease.path.read_text())
    assert written["pidns"] == _our_pidns() and written["boot_id"] == _our_boot_id()
    lease.release()


@pytest.mark.parametrize("pid", ["ours", "dead"])
def test_a_pid_of_another_pid_namespace_is_never_taken_for_ours(tmp_path: Path, pid: str) -> None:
    # Another container with our hostname and lease directory: its pytest may be pid 1 like ours, or
    # have a pid no process of our namespace has. Neither says anything here; only expiry frees it.
    clock = FakeClock()
    lease = Lease("usb:NS", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    their_pid = os.getpid() if pid == "ours" else 2**22 + 17  # past pid_max: no such process here
    theirs = LeaseRecord(resource="usb:NS", owner="other-container", pid=their_pid, host=socket.gethostname(),
                         acquired_at=clock.now, expires_at=clock.now + 30, pidns=_our_pidns() + 1,
                         boot_id=_our_boot_id())
    lease.path.write_text(json.dumps(theirs.__dict__))
    with pytest.raises(LeaseHeldError) as err:
        lease.acquire(wait_s=0)
    assert not err.value.this_process and err.value.holder_pid == their_pid
    assert "that pid cannot be checked from here (another pid namespace)" in str(err.value)
    clock.now += 30
    lease.acquire(wait_s=0)
    assert lease.held


def test_an_old_lease_file_without_pidns_is_freed_only_by_expiry(tmp_path: Path) -> None:
    # Written by an older harness: its namespace is unknown, so its pid is not trusted either way.
    clock = FakeClock()
    lease = Lease("usb:OLD", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    old = {"resource": "usb:OLD", "owner": "old-harness", "pid": os.getpid(), "host": socket.gethostname(),
           "acquired_at": clock.now, "expires_at": clock.now + 30}
    lease.path.write_text(json.dumps(old))
    with pytest.raises(LeaseHeldError) as err:
        lease.acquire(wait_s=0)
    assert "that pid cannot be checked from here (an older lease file" in str(err.value)
    clock.now += 30
    lease.acquire(wait_s=0)
    assert lease.held


NS_HOLDER = """
import os, sys, time
from pathlib import Path
from hil.backends.errors import LeaseHeldError
from hil.backends.serial.lease import Lease
lease = Lease("/dev/ttyUSB0", lease_dir=Path(sys.argv[1]), duration_s=60)
try:
    lease.acquire(wait_s=0)
except LeaseHeldError as exc:
    print("pid", os.getpid(), "refused", exc, flush=True)
    sys.exit(0)
print("pid", os.getpid(), "held", flush=True)
time.sleep(float(sys.argv[2]))
lease.release()
"""


def _in_new_pid_namespace(*args: str) -> list[str]:
    # --kill-child: killing unshare (the test's cleanup) must not orphan the holder.
    return ["unshare", "--pid", "--kill-child", "--mount-proc", sys.executable, "-c", NS_HOLDER, *args]


@pytest.mark.timeout(60)
def test_two_containers_both_pid_1_do_not_share_the_port(tmp_path: Path) -> None:
    # The reviewer's repro: two runs sharing hostname and lease directory, each pid 1 in a pid
    # namespace of its own. The second must be refused while the first holds the port.
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                               timeout=10)
    except FileNotFoundError:
        pytest.skip("no unshare(1)")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {probe.stderr.decode().strip()}")
    first = subprocess.Popen(_in_new_pid_namespace(str(tmp_path), "30"), stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "pid 1 held"
        second = subprocess.run(_in_new_pid_namespace(str(tmp_path), "0"), capture_output=True, text=True,
                                timeout=30)
        assert second.stdout.startswith("pid 1 refused /dev/ttyUSB0 is leased by pid 1 on "), second
    finally:
        first.kill()
        first.wait(10)
        if first.stdout is not None:
            first.stdout.close()


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


@pytest.mark.parametrize("boot", ["other", "missing"])
def test_a_dead_pid_of_another_boot_or_an_unknown_one_is_freed_only_by_expiry(tmp_path: Path, boot: str) -> None:
    # Pid namespace inodes repeat across machines and boots: the same inode says nothing without the same boot id.
    clock = FakeClock()
    lease = Lease("usb:BOOT", lease_dir=tmp_path, duration_s=10, refresh=False, clock=clock)
    theirs = {"resource": "usb:BOOT", "owner": "rebooted", "pid": 2**22 + 17, "host": socket.gethostname(),
              "acquired_at": clock.now, "expires_at": clock.now + 30, "pidns": _our_pidns()}
    if boot == "other":
        theirs["boot_id"] = "00000000-0000-0000-0000-000000000000"
    lease.path.write_text(json.dumps(theirs))
    with pytest.raises(LeaseHeldError) as err:
        lease.acquire(wait_s=0)
    why = "another machine or boot" if boot == "other" else "an older lease file"
    assert f"that pid cannot be checked from here ({why}" in str(err.value)
    clock.now += 30
    lease.acquire(wait_s=0)
    assert lease.held


def test_without_a_pid_namespace_a_dead_pid_on_this_host_is_taken_at_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A host where /proc/self/ns/pid and the boot id cannot be read (not Linux): the file says "none",
    # and a dead holder on the same host is reclaimed at once, as before namespaces were checked.
    from hil.backends.serial import lease as lease_mod

    monkeypatch.setattr(lease_mod, "_read_pid_namespace", lambda: "none")
    monkeypatch.setattr(lease_mod, "_read_boot_id", lambda: "none")
    lease = Lease("usb:BSD", lease_dir=tmp_path, duration_s=10, refresh=False)
    lease.acquire(wait_s=0)
    written = json.loads(lease.path.read_text())
    assert written["pidns"] == "none" and written["boot_id"] == "none"
    lease.release()
    dead = {**written, "owner": "crashed", "pid": 2**22 + 17, "expires_at": time.time() + 60}
    lease.path.write_text(json.dumps(dead))
    lease.acquire(wait_s=0)  # its pid is gone on this host: taken at once
    assert lease.held
    lease.release()


HOLDING_TEST = """
import sys, time
from pathlib import Path
from hil.backends.serial.lease import Lease
Lease(sys.argv[1], lease_dir=Path(sys.argv[2]), duration_s=120).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_refusal_names_the_test_that_holds_the_board(tmp_path: Path) -> None:
    """The lease file records what holds it; the message named only a pid (of a sibling xdist worker,
    often), leaving the user to find which test that was."""
    env = dict(os.environ, PYTEST_CURRENT_TEST="tests/rig/test_flash.py::test_reflash (setup)",
               PYTEST_XDIST_WORKER="gw1")
    holder = subprocess.Popen([sys.executable, "-c", HOLDING_TEST, "usb:HOLD1", str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        record = json.loads((tmp_path / "usb_HOLD1.lease").read_text())
        assert record["holder"] == "pytest tests/rig/test_flash.py::test_reflash (xdist gw1)"
        with pytest.raises(LeaseHeldError) as err:
            Lease("usb:HOLD1", lease_dir=tmp_path, refresh=False).acquire()
        message = str(err.value)
        assert message.startswith(f"usb:HOLD1 is leased by pid {holder.pid} on ")
        assert message.endswith("; held by: pytest tests/rig/test_flash.py::test_reflash (xdist gw1)")
        assert err.value.details["holder"] == record["holder"]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_command_holder_is_its_program_and_sub_command_without_option_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.backends.serial.lease import describe_holder

    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/civicedge", "flash", "--port", "usb:A1", "--token", "s3cret"])
    assert describe_holder() == "civicedge flash"
    monkeypatch.setattr(sys, "argv", ["-c", "anything"])
    assert describe_holder() == "python -c anything"


def test_a_lease_file_without_holder_is_still_read(tmp_path: Path) -> None:
    old = {"resource": "usb:OLDH", "owner": "old-harness", "pid": os.getpid(), "host": "rig-9",
           "acquired_at": time.time(), "expires_at": time.time() + 60, "pidns": 1, "boot_id": "x"}
    (tmp_path / "usb_OLDH.lease").write_text(json.dumps(old))
    with pytest.raises(LeaseHeldError) as err:
        Lease("usb:OLDH", lease_dir=tmp_path, refresh=False).acquire()
    assert "held by" not in str(err.value) and "holder" not in err.value.details
