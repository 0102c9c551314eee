"""Device paths, and the set of files a board's flash holds: our firmware plus per-device config files.

The firmware part is what ``civicedge flash`` installs (:func:`hil.field.firmware_copy.stage_firmware`:
``boot.py``, ``main.py``, ``policy.json`` and ``lib/`` of the tree, never a type-checker config).
The QEMU image builder packs such a set into littlefs, the DUT transport syncs files over the REPL
(only the changed ones), the simulator's flash is a host directory of them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from hil.dut.errors import DevicePathError


def device_path(path: str) -> str:
    """Normalise a device path to an absolute POSIX path (``lib/x.py`` -> ``/lib/x.py``).

    Raises:
        DevicePathError: the path is empty, contains ``..`` or NUL, or names the root itself.
    """
    if not path or "\x00" in path:
        raise DevicePathError(path, "empty path or NUL byte")
    parts = PurePosixPath("/" + path.lstrip("/")).parts
    if ".." in parts:
        raise DevicePathError(path, "'..' is not allowed in device paths")
    clean = [p for p in parts[1:] if p not in ("", ".")]
    if not clean:
        raise DevicePathError(path, "names the filesystem root, not a file")
    return "/" + "/".join(clean)


def firmware_files(
    firmware_root: Path,
    *,
    board_config: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    extra: Mapping[str, bytes] | None = None,
) -> dict[str, bytes]:
    """Collect the files for a board's flash: the firmware sources ``civicedge flash --source`` installs.

    Args:
        firmware_root: the firmware tree (``firmware/``); only what ``flash`` installs of it goes to the
            flash root (``boot.py``, ``main.py``, ``policy.json``, ``lib/``; no caches, stubs or editor
            and type-checker configs).
        board_config: written as ``/board.json`` (as ``flash`` writes it) when given
            (``BoardDefinition.to_device_config()``).
        identity: written as ``/identity.json`` when given (id, kind, zone, lat, lon, key hex).
        extra: more files, device path -> content; they win over the tree.

    Returns:
        Device path (absolute, POSIX) -> file content, sorted by path.

    Raises:
        FileNotFoundError: ``firmware_root`` is not a directory.
    """
    # Imported here: hil.field builds on this package (its transport), so it cannot be imported at load.
    from hil.field.firmware_copy import board_config_bytes, stage_firmware

    if not firmware_root.is_dir():
        raise FileNotFoundError(f"firmware directory {firmware_root} does not exist")
    with tempfile.TemporaryDirectory(prefix="civicedge-fw-") as tmp:
        files = {b.device_path: b.local_path.read_bytes()
                 for b in stage_firmware(Path(tmp), compile_mpy=False, src=firmware_root)}
    if board_config is not None:
        files["/board.json"] = board_config_bytes(board_config)
    if identity is not None:
        files["/identity.json"] = json.dumps(dict(identity), sort_keys=True).encode()
    for path, content in (extra or {}).items():
        files[device_path(path)] = bytes(content)
    return dict(sorted(files.items()))


def parent_dirs(paths: Mapping[str, bytes] | list[str]) -> list[str]:
    """Return every directory the given device paths need, parents first (``/lib``, ``/lib/civic``)."""
    dirs: set[str] = set()
    for path in paths:
        parts = PurePosixPath(path).parts[1:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/" + "/".join(parts[:i]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))
