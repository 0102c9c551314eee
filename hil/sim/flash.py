"""A virtual board's flash: a host directory holding exactly what a real board's flash holds.

``install_firmware`` copies ``firmware/`` (``boot.py``, ``main.py``, ``lib/``) and ``/policy.json`` (the
device's copy, without the keys the firmware drops at load: :mod:`hil.field.device_policy`), and
writes ``/board.json`` from the board definition and ``/firmware.json`` (the manifest), as
``civicedge flash --source`` does for a real board: ``provision`` and ``check`` then see the
firmware they expect. State the firmware writes (seq, outbox, ledger) is left alone, so it persists.
"""

from __future__ import annotations

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
from hil.sim.errors import FlashError

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"


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
