"""``civicedge check``: what the board holds, and whether the gateway accepts its reports.

The gateway is watched either through its SQLite report store (read-only, on the gateway
host) or through its HTTP read API (``/api/devices/{id}``, ``last_seen``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hil.dut import Dut
from hil.field.device import read_identity
from hil.field.errors import FieldError, NoReportError, NotProvisionedError
from hil.field.firmware_copy import expected_files, firmware_version, read_manifest, verify_manifest
from hil.field.identity import Identity

log = logging.getLogger(__name__)




@dataclass
class BoardState:
    """What ``check`` read from the board.

    Attributes:
        identity: the board's identity (``repr`` hides the key).
        version: firmware release from the board's manifest, or None if never flashed by us.
        mode: ``mpy`` or ``source``.
        changed: device paths whose hash differs from the manifest (tampered, corrupted, missing).
        outdated: firmware paths that differ from this host's firmware release.
    """

    identity: Identity
    version: str | None
    mode: str | None
    changed: list[str] = field(default_factory=list)
    outdated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Firmware present, intact and of this release."""
        return self.version is not None and not self.changed and not self.outdated


def inspect_board(dut: Dut) -> BoardState:
    """Read identity, firmware manifest and on-device hashes.

    Raises:
        NotProvisionedError: the board has no ``/identity.json``.
    """
    identity = read_identity(dut)
    if identity is None:
        raise NotProvisionedError(f"the board on {dut.url} has no identity; run civicedge provision", port=dut.url)
    manifest = read_manifest(dut)
    if manifest is None:
        return BoardState(identity, None, None)
    files: dict[str, str] = {str(k): str(v) for k, v in manifest["files"].items()}
    mode = str(manifest.get("mode", "mpy"))
    state = BoardState(identity, str(manifest.get("version")), mode, changed=verify_manifest(dut, files))
    expected = expected_files(mode)
    state.outdated = sorted(p for p, h in expected.items() if files.get(p) != h)
    if manifest.get("version") != firmware_version():
        state.outdated = state.outdated or ["(version)"]
    return state


def first_report_from_db(db_path: Path, device_id: str) -> dict[str, Any] | None:
    """The first stored report of ``device_id`` in the gateway's SQLite store (read-only), or None."""
    if not db_path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise FieldError(f"cannot open the gateway store {db_path}: {exc}", db=str(db_path)) from exc
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM reports WHERE device = ? ORDER BY seq LIMIT 1", (device_id,)).fetchone()
    except sqlite3.OperationalError:
        return None  # the gateway has not created its schema yet
    finally:
        conn.close()
    return None if row is None else dict(row)


def first_report_from_http(base_url: str, device_id: str) -> dict[str, Any] | None:
    """The device as the gateway's read API shows it, once it has a ``last_seen``; else None."""
    url = f"{base_url.rstrip('/')}/api/devices/{device_id}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the gateway URL the user gave
            doc: Any = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FieldError(f"the gateway at {base_url} does not know device {device_id}; provision it against "
                             "this gateway's registry", device_id=device_id) from exc
        raise FieldError(f"gateway {url} answered HTTP {exc.code}", url=url) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FieldError(f"cannot reach the gateway at {base_url}: {exc}", url=url) from exc
    return doc if isinstance(doc, dict) and doc.get("last_seen") is not None else None


def wait_first_report(probe: Callable[[], dict[str, Any] | None], *, device_id: str, timeout_s: float,
                      poll_s: float = 0.5) -> dict[str, Any]:
    """Poll ``probe`` until it returns the first accepted report.

    Raises:
        NoReportError: nothing within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise NoReportError(
                f"the gateway accepted no report from {device_id} within {timeout_s:g} s; check the link "
                "(UART cable / BLE range), that the gateway runs, and its log for rejected frames (hmac, unknown_device)",
                device_id=device_id, timeout_s=timeout_s)
        time.sleep(poll_s)
