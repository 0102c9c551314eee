"""Expiring leases on real boards, so parallel runs never share a board and a crashed run never
leaves a stale lock.

A lease is a small JSON file ``<dir>/<resource>.lease`` = ``{resource, owner, pid, host, pidns,
boot_id, acquired_at, expires_at, holder}``; ``holder`` says what holds it for people (the pytest test,
``pytest tests/test_rig.py::test_flash (xdist gw1)``, or the command, ``civicedge flash``), and a
refusal names it. Acquire, refresh and release happen under ``fcntl.flock`` on a
sibling ``.lock`` file (the atomic critical section); the lease file itself is replaced with
``os.replace``, so a reader never sees half a lease. The holder refreshes ``expires_at`` from a
background thread; when the holder dies the refreshes stop and the lease expires.

A pid means something only in its pid namespace: containers sharing a hostname and the lease
directory each run their pytest as pid 1. So a holder's pid is looked at only when its host, its pid
namespace (``pidns``, the inode of ``/proc/self/ns/pid``) *and* its boot (``boot_id``, from
``/proc/sys/kernel/random/boot_id``: namespace inodes repeat across machines and boots) are ours:
such a holder whose pid no longer exists, or that has our own pid but no live lease of this process
(a crashed run whose pid was reused), is treated as expired at once. Where the namespace or the boot
id cannot be read (not Linux) the file says ``"none"`` for it, and two such processes on one host
compare pids as on a host without namespaces. Any other holder (another host, namespace or boot, or a
lease file without ``pidns``/``boot_id`` from an older harness) is only ever freed by expiry, and
:class:`LeaseHeldError` says so.

A lease this very process holds (another :class:`Lease` object, from any thread: e.g. a second
board handle of one test run on the same port) is never waited for: :meth:`Lease.acquire` fails at
once, since only this process could release it.

The lease directory can be shared by the hosts of a rig (e.g. over NFS with lockd); expiry uses
wall-clock time, so keep the hosts' clocks in sync (NTP).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from hil.backends.errors import LeaseError, LeaseHeldError, LeaseLostError, readable_expiry
from hil.children import pid_alive

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0

_held_here: set[str] = set()
"""Owner ids of the leases :class:`Lease` objects of this process hold now (tells our own live
leases from one a crashed earlier process with our pid left behind)."""
_held_here_lock = threading.Lock()


UNKNOWN: Literal["none"] = "none"
"""What a lease file says for a pid namespace or boot id its writer could not read (not Linux)."""


def _read_pid_namespace() -> int | Literal["none"]:
    """Id of this process's pid namespace (inode of ``/proc/self/ns/pid``), ``"none"`` where unreadable."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return UNKNOWN


def _read_boot_id() -> str:
    """This machine's boot id (``/proc/sys/kernel/random/boot_id``), ``"none"`` where unreadable."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or UNKNOWN
    except (OSError, ValueError):
        return UNKNOWN


def _mark_held(owner: str, held: bool) -> None:
    with _held_here_lock:
        if held:
            _held_here.add(owner)
        else:
            _held_here.discard(owner)


def _is_held_here(owner: str) -> bool:
    with _held_here_lock:
        return owner in _held_here


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a lease file."""

    resource: str
    owner: str
    pid: int
    host: str
    acquired_at: float
    expires_at: float
    pidns: int | Literal["none"] | None = None
    """Pid namespace of ``pid``; ``"none"``: its writer could not read one (not Linux); None: not in
    the file (an older harness), so unknown."""
    boot_id: str | None = None
    """Boot id of the holder's machine (``"none"``: unreadable there; None: not in the file)."""
    holder: str | None = None
    """What holds the lease, for people (:func:`describe_holder`); None: not in the file (an older harness)."""


HOLDER_MAX = 200
"""Longest ``holder`` text written to a lease file."""


def describe_holder() -> str:
    """What this process is, for a lease's ``holder``: the pytest test running now
    (``PYTEST_CURRENT_TEST`` without its phase, plus the xdist worker), else the program and its leading
    sub-command words (``civicedge flash``); option values are left out, so no secret given on a
    command line lands in the lease file or a message."""
    test = os.environ.get("PYTEST_CURRENT_TEST")
    if test:
        text = "pytest " + re.sub(r" \((setup|call|teardown)\)$", "", test)
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            text += f" (xdist {worker})"
        return text[:HOLDER_MAX]
    argv = list(sys.argv) or ["python"]
    program = Path(argv[0]).name
    if program == "__main__.py":  # python -m PACKAGE
        program = Path(argv[0]).parent.name
    elif program in ("-c", ""):
        program = "python -c"
    words: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") or len(words) == 3:
            break
        words.append(arg)
    return " ".join([program, *words])[:HOLDER_MAX]


def lease_file_name(resource: str) -> str:
    """File-name-safe form of a resource id (``/dev/ttyUSB0`` -> ``dev_ttyUSB0``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", resource).strip("_")
    return safe or "resource"


def _pid_unchecked(record: LeaseRecord) -> str | None:
    """Why the holder's pid says nothing here (so only expiry frees its lease), or None when it may be
    checked: same host, pid namespace and boot (each ``"none"`` on both sides counts as the same)."""
    if record.host != socket.gethostname():
        return "another machine"
    if record.pidns is None or record.boot_id is None:
        return "an older lease file, without the pid namespace and boot id"
    if record.pidns != _read_pid_namespace():
        return "another pid namespace"
    if record.boot_id != _read_boot_id():
        return "another machine or boot with this host name"
    return None


def _naming_holder(error: LeaseHeldError, holder: str | None) -> LeaseHeldError:
    """``error`` with the lease file's ``holder`` appended to its message (``...; held by: pytest
    tests/test_rig.py::test_flash``) and in ``details["holder"]``."""
    if holder:
        error.message = f"{error.message}; held by: {holder}"
        error.args = (error.message,)
        error.details["holder"] = holder
    return error


class Lease:
    """An expiring, refreshed lock on one resource (a port or a board identity).

    Args:
        resource: what is leased, e.g. ``"/dev/ttyUSB0"`` or ``"usb:A5069RR4"``.
        lease_dir: directory of lease files (created if missing).
        duration_s: how long a lease lives without refresh; a crashed holder blocks at most this long.
        refresh: refresh from a background thread every ``duration_s / 3`` while held.
        clock: wall-clock source (injectable for tests).
        holder: what holds it, for people (None: :func:`describe_holder` when acquired); a run that
            cannot have the board is told it.
    """

    def __init__(self, resource: str, *, lease_dir: Path, duration_s: float = DEFAULT_LEASE_S,
                 refresh: bool = True, clock: Callable[[], float] = time.time, holder: str | None = None) -> None:
        if duration_s <= 0:
            raise LeaseError(f"lease duration must be positive, got {duration_s}", resource=resource)
        self.resource = resource
        self.lease_dir = lease_dir
        self.duration_s = duration_s
        self.path = lease_dir / (lease_file_name(resource) + ".lease")
        self._lock_path = lease_dir / (lease_file_name(resource) + ".lock")
        self._owner = uuid.uuid4().hex
        self._refresh = refresh
        self._clock = clock
        self._holder = holder
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release` (unless lost)."""
        return self._held and not self.lost

    def acquire(self, *, wait_s: float = 0.0, poll_s: float = 0.5) -> LeaseRecord:
        """Take the lease, waiting up to ``wait_s`` for a current holder to release or expire.

        Returns:
            The lease record written.

        A lease another :class:`Lease` object of this process holds fails at once, without waiting,
        also when that object is held by another thread of the process: only this process could
        release it, and a thread that means to wait for another thread's lease must do so itself.

        Raises:
            LeaseHeldError: someone else holds an unexpired lease (after waiting ``wait_s``), or
                another lease object of this process does (at once: ``this_process`` is True).
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                record = self._try_acquire()
                break
            except LeaseHeldError as exc:
                if exc.this_process or time.monotonic() >= deadline:
                    raise
                time.sleep(poll_s)
        self._held = True
        _mark_held(self._owner, True)
        self.lost = False
        if self._refresh:
            self._stop.clear()
            self._thread = threading.Thread(target=self._refresh_loop, name=f"lease:{self.resource}", daemon=True)
            self._thread.start()
        log.info("leased %s until %s", self.resource, readable_expiry(record.expires_at, self._clock()))
        return record

    def refresh(self) -> LeaseRecord:
        """Extend our lease by ``duration_s`` from now.

        Raises:
            LeaseLostError: the lease is no longer ours (it expired and was taken).
        """
        with self._locked():
            current = self._read()
            if current is None or current.owner != self._owner:
                self.lost = True
                _mark_held(self._owner, False)
                raise LeaseLostError(f"lease on {self.resource} was lost (expired and taken over)",
                                     resource=self.resource)
            record = LeaseRecord(**{**asdict(current), "expires_at": self._clock() + self.duration_s})
            self._write(record)
            return record

    def release(self) -> None:
        """Give the lease back (removes the file if still ours); safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if not self._held:
            return
        self._held = False
        _mark_held(self._owner, False)
        with self._locked():
            current = self._read()
            if current is not None and current.owner == self._owner:
                self.path.unlink(missing_ok=True)
                log.info("released lease on %s", self.resource)

    def holder(self) -> LeaseRecord | None:
        """Return the current lease record (anyone's), or None when free or expired."""
        with self._locked():
            current = self._read()
        if current is None or self._is_stale(current):
            return None
        return current

    def _try_acquire(self) -> LeaseRecord:
        with self._locked():
            current = self._read()
            if current is not None and current.owner != self._owner and not self._is_stale(current):
                this_process = self._is_this_process(current)
                raise _naming_holder(LeaseHeldError(
                    resource=self.resource, holder_pid=current.pid, holder_host=current.host,
                    expires_at=current.expires_at, now=self._clock(), this_process=this_process,
                    pid_unchecked=None if this_process else _pid_unchecked(current)), current.holder)
            if current is not None and current.owner != self._owner:
                log.warning("taking over stale lease on %s from pid %d on %s", self.resource, current.pid,
                            current.host)
            now = self._clock()
            record = LeaseRecord(resource=self.resource, owner=self._owner, pid=os.getpid(),
                                 host=socket.gethostname(), acquired_at=now, expires_at=now + self.duration_s,
                                 pidns=_read_pid_namespace(), boot_id=_read_boot_id(),
                                 holder=self._holder or describe_holder())
            self._write(record)
            return record

    def _is_stale(self, record: LeaseRecord) -> bool:
        """Expired, or held by a process of this host and pid namespace that no longer exists (with
        our own pid: by no live lease of this process, so by a crashed process whose pid was reused).
        The pid of a holder in another or an unknown namespace says nothing: only expiry frees it."""
        if record.expires_at <= self._clock():
            return True
        if _is_held_here(record.owner):
            return False
        if _pid_unchecked(record) is not None:
            return False
        if record.pid == os.getpid():
            return True  # our pid, but no lease of this process: a crashed run's, pid reused
        return not pid_alive(record.pid)

    @staticmethod
    def _is_this_process(record: LeaseRecord) -> bool:
        # Owner ids are random per Lease object, so this needs no host/pid/namespace check.
        return _is_held_here(record.owner)

    def _refresh_loop(self) -> None:
        interval = self.duration_s / 3
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except LeaseLostError:
                log.error("lease on %s lost; stop using the board", self.resource)
                return
            except LeaseError as exc:
                log.warning("refreshing lease on %s failed: %s", self.resource, exc)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.lease_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LeaseError(f"cannot use lease directory {self.lease_dir}: {exc}", resource=self.resource) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _read(self) -> LeaseRecord | None:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            pidns = data.get("pidns")  # missing in lease files of older harnesses: unknown
            boot_id = data.get("boot_id")
            holder = data.get("holder")
            return LeaseRecord(resource=str(data["resource"]), owner=str(data["owner"]), pid=int(data["pid"]),
                               host=str(data["host"]), acquired_at=float(data["acquired_at"]),
                               expires_at=float(data["expires_at"]),
                               pidns=None if pidns is None else UNKNOWN if pidns == UNKNOWN else int(pidns),
                               boot_id=None if boot_id is None else str(boot_id),
                               holder=None if holder is None else str(holder)[:HOLDER_MAX])
        except (ValueError, KeyError, TypeError, AttributeError):
            # Writes are atomic (os.replace), so this is a foreign or hand-edited file; it must not
            # lock the board forever.
            log.warning("ignoring unreadable lease file %s", self.path)
            return None

    def _write(self, record: LeaseRecord) -> None:
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(record)))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LeaseError(f"cannot write lease file {self.path}: {exc}", resource=self.resource) from exc

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
