"""The set of files a board's flash holds: our firmware tree plus per-device config files.

Used by every backend: the QEMU image builder packs them into littlefs, the DUT transport syncs
them over the REPL (only the changed ones), the simulator's flash is a host directory of them.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from hil.dut.errors import DevicePathError

# Host-side artefacts that must never be copied to a board.
_SKIP_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyi", ".swp", "~")


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
    """Collect the files for a board's flash.

    Args:
        firmware_root: host directory whose contents go to the flash root (``firmware/``).
        board_config: written as ``/board.json`` when given (``BoardDefinition.to_device_config()``).
        identity: written as ``/identity.json`` when given (id, kind, zone, lat, lon, key hex).
        extra: more files, device path -> content; they win over the tree.

    Returns:
        Device path (absolute, POSIX) -> file content, sorted by path.

    Raises:
        FileNotFoundError: ``firmware_root`` is not a directory.
    """
    if not firmware_root.is_dir():
        raise FileNotFoundError(f"firmware directory {firmware_root} does not exist")
    files: dict[str, bytes] = {}
    for host_path in sorted(firmware_root.rglob("*")):
        rel = host_path.relative_to(firmware_root)
        if any(part in _SKIP_DIRS for part in rel.parts) or not host_path.is_file():
            continue
        if host_path.name.endswith(_SKIP_SUFFIXES):
            continue
        files[device_path(rel.as_posix())] = host_path.read_bytes()
    if board_config is not None:
        files["/board.json"] = json.dumps(dict(board_config), sort_keys=True).encode()
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
