"""Checks of the directories and files a config names, for the access the command needs.

They create nothing: a path that does not exist yet passes when ``run`` could create it in its
nearest existing ancestor (see :mod:`gateway.config.loader` for ``read_only``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gateway.config.section import Section
from gateway.errors import ConfigError


# Kernel file systems where no ordinary file can be created whatever the modes say (root passes every
# access() check, so /proc/foo would otherwise look creatable).
_PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs", "tracefs", "securityfs", "pstore",
                        "bpf", "configfs", "efivarfs", "fusectl", "binfmt_misc", "mqueue", "nsfs"})


def _fs_type(path: Path) -> str | None:
    """Return the type of the file system holding ``path`` (from /proc/self/mountinfo), None if unknown."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None  # not Linux: rely on access() alone
    target, best, fstype = os.path.realpath(path), "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 is a space
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # >=: a later mount on the same point hides the earlier
            best, fstype = mount, right.split()[0]
    return fstype


def _read_only_fs(path: Path) -> bool:
    """True when ``path`` is on a file system mounted read-only (``statvfs`` says ``ST_RDONLY``): no one
    writes there, root included, whatever the modes say; False when it cannot be told."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _not_writable(probe: Path, also: int) -> str:
    """Why a directory run must write in is refused: a read-only mount, the mode bits ``also`` (R_OK, X_OK)
    it needs besides w that this user lacks, or both (fixing one alone would not do)."""
    lacking = [word for bit, word in ((os.R_OK, "readable"), (os.X_OK, "searchable (x)"))
               if also & bit and not os.access(probe, bit)]
    if not _read_only_fs(probe):
        return "is not writable by this user" if not lacking else "is not %s by this user" % " or ".join(
            ["writable"] * (not os.access(probe, os.W_OK)) + lacking)
    if lacking:
        return "is on a read-only file system, and is not %s by this user either" % " or ".join(lacking)
    return "is on a read-only file system"


def _existing(sec: Section, key: str, path: Path) -> Path:
    """Return ``path`` if it exists, else its nearest existing ancestor (where run would create it)."""
    probe = path
    while True:
        try:
            os.stat(probe)
            return probe
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return probe
            probe = probe.parent
        except OSError as exc:
            raise sec.error(key, "%s: cannot look up %s: %s" % (key, probe, exc.strerror), "bad_path") from exc


def check_dir(sec: Section, key: str, path: Path, *, owned: bool = False, read_only: bool = False) -> None:
    """Check a directory run creates if absent and writes in, creating nothing.

    It must be a writable directory, or be creatable in its nearest existing ancestor; with
    ``owned``, an existing one must belong to this user (run makes it 0700; a reader does not care,
    so ``read_only`` skips it). With ``read_only``
    (a command that only reads), an existing one must be a readable directory and a missing one
    passes: the command says what it did not find.
    """
    probe = _existing(sec, key, path)
    if read_only and probe != path:
        return

    def refuse(problem: str) -> ConfigError:
        what = "%s %s" % (path, problem) if probe == path else "%s cannot be created (%s %s)" % (path, probe, problem)
        return sec.error(key, "%s: %s" % (key, what), "bad_path")

    if not probe.is_dir():
        raise refuse("is not a directory")
    if read_only:
        if not os.access(probe, os.R_OK | os.X_OK):
            raise refuse("is not readable by this user")
    elif not os.access(probe, os.R_OK | os.W_OK | os.X_OK if probe == path else os.W_OK | os.X_OK):
        raise refuse(_not_writable(probe, os.R_OK | os.X_OK if probe == path else os.X_OK))
    fs = _fs_type(probe)
    if fs in _PSEUDO_FS:
        raise refuse("is on the kernel's %s file system, which holds no files" % fs)
    if owned and not read_only and probe == path and os.geteuid() != 0 and path.stat().st_uid != os.geteuid():
        raise refuse("belongs to another user (the gateway makes it 0700)")


def check_file(sec: Section, key: str, path: Path, *, owned: bool = False, read_only: bool = False) -> None:
    """Check a file run opens for reading and writing, creating it (and its directory) if absent.

    With ``read_only``, an existing one must be readable (see :func:`check_dir`).
    """
    check_dir(sec, key, path.parent, read_only=read_only)
    if _existing(sec, key, path) != path:
        return
    if not path.is_file():
        raise sec.error(key, "%s: %s is not a regular file" % (key, path), "bad_path")
    if read_only:
        if not os.access(path, os.R_OK):
            raise sec.error(key, "%s: %s is not readable by this user" % (key, path), "bad_path")
    elif not os.access(path, os.R_OK | os.W_OK):
        why = ("is on a read-only file system" if os.access(path, os.R_OK) and _read_only_fs(path)
               else "is not readable and writable by this user")
        raise sec.error(key, "%s: %s %s" % (key, path, why), "bad_path")
    if owned and not read_only and os.geteuid() != 0 and path.stat().st_uid != os.geteuid():
        raise sec.error(key, "%s: %s belongs to another user (the gateway makes it 0600)" % (key, path), "bad_path")
