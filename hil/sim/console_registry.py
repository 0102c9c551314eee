"""Which ptys are virtual boards' consoles: a registry the processes serving them keep.

A serial console that is a pty may be a virtual board (``civicedge sim up``) or a real board behind a
pty bridge (socat, ser2net): the serial backend must treat only the first as virtual (one-write raw
REPL entry, the longest watchdog hold). Every :class:`~hil.sim.board.VirtualBoard` records its console
pty here while it runs: one small JSON file per console (``{"path", "pid"}``) in
:func:`registry_dir`. An entry whose process is gone is stale and ignored (and removed when seen).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from hil.children import pid_alive

log = logging.getLogger(__name__)

ENV_DIR = "CIVICEDGE_RUNTIME_DIR"
"""Environment variable naming the runtime directory (default ``$XDG_RUNTIME_DIR/civicedge``, else a
per-user directory in the temp dir)."""


def registry_dir() -> Path:
    """The directory of the registry's entries (not created here)."""
    base = os.environ.get(ENV_DIR)
    if base:
        return Path(base) / "virtual-consoles"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(runtime) / "civicedge" if runtime else Path(tempfile.gettempdir()) / f"civicedge-{os.getuid()}"
    return root / "virtual-consoles"


def _entry(path: str) -> Path:
    return registry_dir() / f"{os.getpid()}-{os.path.realpath(path).strip('/').replace('/', '_')}.json"


def register(path: str) -> Path | None:
    """Record the pty ``path`` as a virtual board's console served by this process.

    Returns:
        The entry file, or None when it cannot be written (logged: the console is then treated as a
        real board's, slower but safe).
    """
    entry = _entry(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = entry.with_suffix(".part")
        tmp.write_text(json.dumps({"path": os.path.realpath(path), "pid": os.getpid()}))
        tmp.replace(entry)
    except OSError as exc:
        log.warning("cannot record virtual console %s in %s: %s", path, entry.parent, exc)
        return None
    return entry


def unregister(path: str) -> None:
    """Forget the pty ``path`` (this process no longer serves it)."""
    try:
        _entry(path).unlink(missing_ok=True)
    except OSError as exc:
        log.info("cannot remove the virtual console entry of %s: %s", path, exc)


def is_virtual_console(path: str) -> bool:
    """Whether ``path`` (a device path; links resolved) is the console of a running virtual board."""
    if "://" in path:
        return False
    real = os.path.realpath(path)
    try:
        entries = list(registry_dir().glob("*.json"))
    except OSError:
        return False
    for entry in entries:
        try:
            doc = json.loads(entry.read_text())
            pid, served = int(doc["pid"]), str(doc["path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(pid):
            try:  # its process is gone: the pty number may serve a real board now
                entry.unlink(missing_ok=True)
            except OSError:
                pass
            continue
        if served == real:
            return True
    return False
