"""Device key files: reading, checking and generating keys, and keeping key files owner-only.

A key file holds the device's 32-byte key as 64 hex characters (whitespace and a UTF-8 byte-order
mark ignored) or as 32 raw bytes. Keys are never logged, printed or placed in exceptions; messages
name the file, never its content. The registry's own key files are read with
:func:`gateway.small_files.read_limited` (regular files only, never blocking on a FIFO, bounded), and
their permissions are tightened through the file's own descriptor, never through a symlink.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from gateway.errors import RegistryError
from gateway.small_files import FileTooLargeError, file_kind, read_limited

KEY_LEN = 32


def _check_key(device_id: str, key: bytes) -> None:
    """Raise ``bad_key`` unless ``key`` is a 32-byte key with some entropy (never shows the key)."""
    if len(key) != KEY_LEN:
        raise RegistryError("a device key must be 32 bytes", reason="bad_key", device_id=device_id, field="key")
    # One byte repeated (all zeros, all 0xff, ...) is a placeholder, not a secret; a real weakness
    # test is impossible, but this catches the keys people type by hand.
    if key == key[:1] * KEY_LEN:
        raise RegistryError("the key for device %s is one byte repeated 32 times, which is no secret; use a random "
                            "key" % device_id, reason="bad_key", device_id=device_id, field="key")


def generate_key() -> bytes:
    """Return 32 fresh random bytes from the OS CSPRNG."""
    return secrets.token_bytes(KEY_LEN)


def key_fingerprint(key: bytes) -> str:
    """The key's fingerprint as ``civicedge provision`` prints it on the label: the hex of the first 8
    bytes of SHA-256(``key``). It identifies a key without revealing it."""
    return hashlib.sha256(key).digest()[:8].hex()


# More than any key file holds (64 hex characters, whitespace, a BOM): a stored key is read no further.
_KEY_FILE_MAX = 4096


def read_key_file(path: Path, *, regular_only: bool = False) -> bytes:
    """Read a key file holding 64 hex characters (whitespace ignored) or 32 raw bytes.

    Args:
        regular_only: for the registry's own key files, read on the event loop: anything but a
            regular file (a FIFO would block the gateway) is refused. A key given on the command line
            may be a pipe or a terminal (``--key-file /dev/stdin``). Either way at most
            ``_KEY_FILE_MAX`` + 1 bytes are read (``/dev/zero`` read until the OOM killer came),
            and a longer file is refused as not holding a key.

    Raises:
        RegistryError: reason ``bad_key`` if unreadable or not a 32-byte key (content never shown).
    """
    try:
        raw = read_limited(path, _KEY_FILE_MAX) if regular_only else _read_head(path)
    except FileTooLargeError as exc:  # longer than any key file: refused as _read_head's longer head is
        raise _not_a_key(path) from exc
    except IsADirectoryError as exc:
        raise RegistryError("cannot read key file %s: is a directory, not a regular file" % path,
                            reason="bad_key") from exc
    except OSError as exc:  # NotRegularFileError's strerror names the kind: "is a FIFO, not a regular file"
        raise RegistryError("cannot read key file %s: %s" % (path, exc.strerror or exc), reason="bad_key") from exc
    if len(raw) > _KEY_FILE_MAX:  # judged whole or not at all: a key then 4 KiB of spaces is no key file
        raise _not_a_key(path)
    hex_key = _hex_key(raw)
    if hex_key is None and raw.startswith(_UTF8_BOM):
        # Notepad's byte-order mark before hex text. Only then: a raw key may begin with these bytes.
        hex_key = _hex_key(raw[len(_UTF8_BOM):])
    if hex_key is not None:
        return hex_key
    if len(raw) == KEY_LEN:
        return raw
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RegistryError("key file %s is UTF-16 text (it starts with a UTF-16 byte-order mark); save the 64 hex "
                            "characters as UTF-8 or ASCII" % path, reason="bad_key")
    raise _not_a_key(path)


def _not_a_key(path: Path) -> RegistryError:
    return RegistryError("key file %s does not hold a 32-byte key (64 hex chars or 32 raw bytes)" % path,
                         reason="bad_key")


_UTF8_BOM = b"\xef\xbb\xbf"


def _hex_key(raw: bytes) -> bytes | None:
    """The key ``raw`` holds as 64 hex characters (whitespace around ignored), or None."""
    text = raw.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    return None


def _read_head(path: Path) -> bytes:
    """The first ``_KEY_FILE_MAX`` + 1 bytes of ``path``, whatever it is (a pipe, ``/dev/stdin``): more
    than a key file holds, so a longer one is refused as not a key, never read to its end."""
    with open(path, "rb") as f:
        return f.read(_KEY_FILE_MAX + 1)


def _key_file_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a key file: missing, a symlink to nothing, not a regular file; None
    when it is a regular file (whose content :func:`read_key_file` checks).

    Raises:
        OSError: the file cannot be looked up for another reason (a directory this user may not search:
            the caller says who may read it).
    """
    try:
        st = path.stat()
    except OSError as exc:
        # As Path.is_file: a missing file (or path) is an answer, a directory this user may not
        # search is not.
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise
        if path.is_symlink():
            return "key file %s is a symlink to nothing (%s)" % (path, exc.strerror)
        return "no key file at %s" % path
    if not stat.S_ISREG(st.st_mode):
        return "key file %s is not a regular file (%s)" % (path, file_kind(st.st_mode))
    return None


def _key_mode_problem(path: Path) -> str | None:
    """:meth:`Registry.key_mode_problem` of the key file ``path``."""
    try:
        lst = os.lstat(path)  # the link itself: the gateway never follows one to chmod
    except OSError:
        return None
    if stat.S_ISLNK(lst.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            return None  # points nowhere: key_problem says so
        if not stat.S_ISREG(target.st_mode) or not stat.S_IMODE(target.st_mode) & 0o077:
            return None
        return ("key file %s is a symlink to a file of mode %04o: group or others may read or write it; the "
                "gateway reads it but never changes its mode: chmod 600 its target (%s) yourself"
                % (path, stat.S_IMODE(target.st_mode), os.path.realpath(path)))
    mode = stat.S_IMODE(lst.st_mode)
    if not stat.S_ISREG(lst.st_mode) or not mode & 0o077:
        return None
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is not None and lst.st_uid != uid:
        return ("key file %s has mode %04o: group or others may read or write it; it is another user's file, "
                "which the gateway leaves as it is: chmod 600 it as its owner" % (path, mode))
    return ("key file %s has mode %04o: group or others may read or write it (chmod 600 it; the gateway does "
            "when it opens the registry)" % (path, mode))


# What _warn_secured says per outcome of _secure_key_file_outcome, for one file (its name and detail
# are filled in) and for several (their count and names).
_SECURED_WARNINGS = {
    "tightened": ("could be read or written by group or others (%s), set to 0600",
                  "could be read or written by group or others, set to 0600: %s"),
    "foreign": ("can be read or written by group or others (%s) and was not changed (not owned by this user); "
                "chmod 600 it",
                "can be read or written by group or others and were not changed (not owned by this user): %s; "
                "chmod 600 them"),
    "symlink": ("is a symlink to a file group or others may read or write (%s) and was not changed (a link is "
                "never followed to chmod); put the file itself in its place, mode 0600",
                "are symlinks to files group or others may read or write and were not changed (a link is never "
                "followed to chmod): %s; put the files themselves in their place, mode 0600"),
    "failed": ("could not be checked or set to 0600: %s",
               "could not be checked or set to 0600: %s"),
}


def _secure_key_file_outcome(path: str | Path) -> tuple[str, str, str]:
    """:func:`_secure_key_file` for a warning: ``(what, file name, detail)``, ``what`` a key of
    :data:`_SECURED_WARNINGS` or ``ok`` (nothing to say), ``detail`` the old mode or the error."""
    name = os.path.basename(path)
    try:
        what, old = _secure_key_file(path)
    except OSError as exc:
        return "failed", name, str(exc.strerror or exc)
    if what == "symlink" and not old & 0o077:
        what = "ok"  # a link to a private file: nothing to warn about
    return (what if what in _SECURED_WARNINGS else "ok"), name, "%04o" % old


def _secure_key_file(path: str | Path) -> tuple[str, int]:
    """Set the key file at ``path`` to 0600 when group or others may use it, through its own
    descriptor: opened without following a symlink (``O_NOFOLLOW``; ``O_NONBLOCK`` so a FIFO put
    there does not block), checked with ``fstat`` and changed with ``fchmod``, so a file swapped in
    between the check and the change is never the one changed.

    Returns ``(what, mode)``, ``mode`` being the file's permission bits before (for a symlink, its
    target's, 0 when unknown) and ``what`` one of ``ok`` (not too open: nothing to do),
    ``tightened``, ``foreign`` (too open, owned by another user: left as it is), ``symlink``
    (never followed nor changed) or ``not_regular`` (a directory, FIFO, ...: left as it is).

    Raises:
        OSError: the file cannot be opened or changed.
    """
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    try:
        lst = os.lstat(path)
    except OSError:
        lst = None
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if lst is not None:  # the usual answers without opening the file (another user's 0600 may not be)
        if stat.S_ISLNK(lst.st_mode):  # O_NOFOLLOW would say ELOOP; also where it is missing
            return "symlink", _target_mode(path)
        if not stat.S_ISREG(lst.st_mode):
            return "not_regular", stat.S_IMODE(lst.st_mode)
        if not stat.S_IMODE(lst.st_mode) & 0o077:
            return "ok", stat.S_IMODE(lst.st_mode)
        if uid is not None and lst.st_uid != uid:
            return "foreign", stat.S_IMODE(lst.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink after the lstat
            return "symlink", _target_mode(path)
        raise
    try:  # checked again on what was opened: the path may have been given another file since
        st = os.fstat(fd)
        old = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            return "not_regular", old
        if not old & 0o077:
            return "ok", old
        if uid is not None and st.st_uid != uid:
            return "foreign", old
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        else:  # no fchmod (Windows): no symlinks to follow there without privileges either
            os.chmod(path, 0o600)
        return "tightened", old
    finally:
        os.close(fd)


def _target_mode(path: str | Path) -> int:
    """The permission bits of what the symlink ``path`` points to (0 when it points nowhere)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0

