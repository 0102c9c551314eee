"""A virtual board's flash: a host directory holding exactly what a real board's flash holds.

``install_firmware`` copies ``firmware/`` (``boot.py``, ``main.py``, ``lib/``) and ``/policy.json`` (the
device's copy, without the keys the firmware drops at load: :mod:`hil.field.device_policy`), and
writes ``/board.json`` from the board definition and ``/firmware.json`` (the manifest), as
``civicedge flash --source`` does for a real board: ``provision`` and ``check`` then see the
firmware they expect. State the firmware writes (seq, outbox, ledger) is left alone, so it persists.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from gateway.resources import firmware_dir
from hil.field.device_policy import DevicePolicyError
from hil.sim.errors import FlashError, FlashInUseError, FlashKindError
from hil.workdir import WorkdirLock

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
BOARD_FILE = "board.json"


def install_firmware(flash: Path, device_config: dict[str, Any], *, source: Path | None = None) -> None:
    """Copy the firmware, write ``/board.json`` and the manifest ``/firmware.json`` into ``flash``.

    The files are those ``civicedge flash --source`` writes (``stage_firmware``), ``/policy.json`` as the
    device's copy.

    Raises:
        FlashError: the directory cannot be written, or the tree's policy.json cannot be made into the
            device's copy (not JSON, or its firmware names no keys it drops).
    """
    src = source or firmware_dir()
    try:
        version, staged = _staged_source(src)
        flash.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, str] = {}
        for device_path, data, digest in staged:
            dest = flash / device_path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            if dest.suffix == ".py":
                # As `flash --source` does: a compiled twin left by an earlier `flash` (X.mpy next to
                # X.py) is removed, so the flash holds one firmware, not two.
                dest.with_suffix(".mpy").unlink(missing_ok=True)
            manifest[device_path] = digest
        board = json.dumps(device_config, separators=(",", ":")).encode()
        (flash / "board.json").write_bytes(board)
        manifest["/board.json"] = hashlib.sha256(board).hexdigest()
        doc = {"version": version, "mode": "source", "files": manifest}
        (flash / "firmware.json").write_text(json.dumps(doc, sort_keys=True))
    except (OSError, DevicePolicyError) as exc:
        raise FlashError(f"cannot install firmware into {flash}: {exc}", path=str(flash)) from exc


# (source dir, its files' (path, mtime, size)) -> what _staged_source returns: a fleet of a thousand
# boards stages the tree once, not once per board (~15 ms each).
_STAGED: dict[tuple[str, tuple[tuple[str, int, int], ...]], tuple[str, list[tuple[str, bytes, str]]]] = {}


def _staged_source(src: Path) -> tuple[str, list[tuple[str, bytes, str]]]:
    """The release and the ``(device path, bytes, sha256)`` of the files ``flash --source`` copies from ``src``."""
    from hil.field.firmware_copy import firmware_version, stage_firmware

    stats = []
    for path in sorted(src.rglob("*")):
        st = path.stat()
        if path.is_file() and "__pycache__" not in path.parts:
            stats.append((str(path), st.st_mtime_ns, st.st_size))
    key = (str(src), tuple(stats))
    cached = _STAGED.get(key)
    if cached is None:
        with tempfile.TemporaryDirectory(prefix="civicedge-sim-fw-") as tmp:
            files = [(b.device_path, b.local_path.read_bytes(), b.sha256)
                     for b in stage_firmware(Path(tmp), compile_mpy=False, src=src)]
        cached = (firmware_version(src), files)
        _STAGED.clear()  # only the current tree is worth keeping
        _STAGED[key] = cached
    return cached


def identity_id(flash: Path) -> str | None:
    """The device id in ``flash``'s ``/identity.json`` (what the firmware runs as), or None when there is
    none or it is unreadable (the firmware then refuses to start and says why)."""
    try:
        doc = json.loads((flash / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dev = doc.get("id") if isinstance(doc, dict) else None
    return dev if isinstance(dev, str) and dev else None


def provision_identity(flash: Path, *, device_id: str, kind: str, zone: str = "sim", lat: str = "0.0",
                       lon: str = "0.0") -> Path:
    """Write ``/identity.json`` with a fresh random 32-byte key unless one exists; return its path.

    The key is never printed or logged; read it from the returned file (mode 0600).

    Raises:
        FlashError: the file cannot be written.
    """
    path = flash / IDENTITY_FILE
    if path.exists():
        return path
    doc = {"id": device_id, "kind": kind, "zone": zone, "lat": lat, "lon": lon, "key": secrets.token_hex(32)}
    try:
        flash.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
    except OSError as exc:
        raise FlashError(f"cannot write {path}: {exc}", path=str(path)) from exc
    logger.info("provisioned virtual board %s (identity at %s)", device_id, path)
    return path


class FlashLock(WorkdirLock):
    """The lock :func:`lock_flash` took on a flash directory (an ``flock`` on the directory itself, no lock
    file the board could see); :meth:`release` releases it."""

    @property
    def flash(self) -> Path:
        """The flash directory locked."""
        return self.path


def lock_flash(flash: Path) -> FlashLock:
    """Create flash directory ``flash`` (resolved) if needed and lock it exclusively for a board's life.

    Two boards on one flash would share its seq counter, outbox and key (a seq used twice) and
    install over each other's firmware. The lock is an ``flock`` on the directory itself, as
    :func:`gateway.pid_lock.take_pid_lock` takes on a file: the kernel releases it when the holder
    dies, so a crashed board never blocks the next one. Unlike a work directory's lock it needs no
    file: a lock file on the flash would be a file the board sees, and one next to it an entry in a
    fleet's flash root that is not a board. The holder's pid comes from ``/proc/locks``.

    Raises:
        FlashInUseError: another board (``holder_pid``, None when it cannot be told) holds it.
        FlashError: the directory cannot be created or opened.
    """
    try:
        flash.mkdir(parents=True, exist_ok=True)
        fd = os.open(flash, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise FlashError(f"cannot create flash directory {flash}: {exc}", path=str(flash)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        st = os.fstat(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FlashError(f"cannot lock the flash {flash}: {exc.strerror or exc}", path=str(flash)) from exc
        holder = _flock_holder(st.st_dev, st.st_ino)
        raise FlashInUseError(f"the flash {flash} is in use by another virtual board (pid {holder or '?'}); "
                              "stop that board first, or use another flash directory", path=str(flash),
                              holder_pid=holder) from None
    return FlashLock(flash, fd)


def _flock_holder(dev: int, ino: int) -> int | None:
    """The pid holding an ``flock`` on the file (dev, ino), from ``/proc/locks``; None if not listed."""
    where = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2493636 0 EOF" ("->" marks a waiter: none, LOCK_NB)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where and fields[4].isdigit():
            return int(fields[4])
    return None


def _json_doc(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def flash_kind_problem(flash: Path, *, board: str, kind: str, install: bool) -> str | None:
    """Why a ``board`` (of ``kind``) may not run on ``flash``, or None when it may.

    An identity of another kind is always refused: it is a device the gateway registered as that
    kind, and installing firmware does not change it. Firmware installed for another kind
    (``/board.json``) is refused only without ``install``: installing writes this board's over it.
    """
    identity = _json_doc(flash / IDENTITY_FILE)
    held = identity.get("kind")
    if isinstance(held, str) and held and held != kind:
        return (f"the flash {flash} holds the identity of {identity.get('id') or '?'}, a {held} board, not a {kind} "
                f"board ({board}); use another flash directory for {board}")
    if not install:
        firmware = _json_doc(flash / BOARD_FILE)
        held = firmware.get("kind")
        if isinstance(held, str) and held and held != kind:
            return (f"the flash {flash} holds the firmware of a {held} board ({firmware.get('name') or '?'}), not "
                    f"of a {kind} board ({board}); install {board}'s firmware over it (without --no-install, "
                    "install=True), or use another flash directory")
    return None


def check_flash_kind(flash: Path, *, board: str, kind: str, install: bool) -> None:
    """Raise :class:`FlashKindError` with :func:`flash_kind_problem`'s reason, if there is one."""
    problem = flash_kind_problem(flash, board=board, kind=kind, install=install)
    if problem is not None:
        raise FlashKindError(problem, path=str(flash), kind=kind)
