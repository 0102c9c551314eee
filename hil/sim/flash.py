"""A virtual board's flash: a host directory holding exactly what a real board's flash holds.

``install_firmware`` copies ``firmware/`` (``boot.py``, ``main.py``, ``lib/``) and ``/policy.json``,
and writes ``/board.json`` from the board definition, like ``civicedge flash`` does for a real
board. State the firmware writes (seq, outbox, ledger) is left alone, so it persists.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from gateway.resources import firmware_dir
from hil.sim.errors import FlashError

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"


def install_firmware(flash: Path, device_config: dict[str, Any], *, source: Path | None = None) -> None:
    """Copy the firmware and write ``/board.json`` into ``flash``.

    Raises:
        FlashError: the directory cannot be written.
    """
    src = source or firmware_dir()
    try:
        flash.mkdir(parents=True, exist_ok=True)
        for name in ("boot.py", "main.py", "policy.json"):
            if (src / name).is_file():
                shutil.copyfile(src / name, flash / name)
        if (src / "lib").is_dir():
            shutil.copytree(src / "lib", flash / "lib", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (flash / "board.json").write_text(json.dumps(device_config, separators=(",", ":")))
    except OSError as exc:
        raise FlashError(f"cannot install firmware into {flash}: {exc}", path=str(flash)) from exc


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
