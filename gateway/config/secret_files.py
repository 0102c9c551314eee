"""Reading the files a config names for secrets and TLS: the MQTT password, the admin token, keys.

A secret file must be owner-only (as ssh requires of a private key), a private key file at most
group-readable for root's or this user's key; every file is opened without blocking and read with a
bound (:mod:`gateway.small_files`). Errors name the key and the file, never the secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from gateway.config.section import Section
from gateway.small_files import CONFIG_MAX, SECRET_MAX, open_regular, read_fd_limited, read_limited

# The loader's logger, as before these readers had a module of their own: operators and tests filter on it.
log = logging.getLogger("gateway.config.loader")


@contextlib.contextmanager
def _reading_file(sec: Section, key: str, path: Path) -> Iterator[None]:
    """Turn an OSError while reading the file ``path`` (named by ``key``) into a ConfigError saying why."""
    try:
        yield
    except FileNotFoundError as exc:
        raise sec.error(key, "%s %s does not exist" % (key, path), "bad_path") from exc
    except IsADirectoryError as exc:
        raise sec.error(key, "%s %s is a directory, not a file" % (key, path), "bad_path") from exc
    except OSError as exc:
        raise sec.error(key, "cannot read %s %s: %s" % (key, path, exc.strerror), "bad_path") from exc


def check_readable(sec: Section, key: str, path: Path) -> None:
    """``path`` must be a regular file this user can read (opened without blocking: a FIFO hung the check)."""
    with _reading_file(sec, key, path):
        os.close(open_regular(path))


def read_secret(sec: Section, key: str, path: Path) -> str:
    """The one-line secret in ``path`` (an owner-only file), without its line end; never echoed."""
    text = read_owner_only(sec, key, path)
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret or "\n" in secret or "\r" in secret:
        raise sec.error(key, "%s %s must hold the password on one line (it is empty or has several lines)"
                        % (key, path), "bad_value")
    return secret


def read_owner_only(sec: Section, key: str, path: Path) -> str:
    """The text of the secret file ``path``, refused when other users may read it (as ssh refuses a
    readable private key).

    The mode is checked on the descriptor the text is read from, so a file swapped in between (a
    token rotated by rename) cannot be read under the old file's mode. Only a regular file is read,
    opened without blocking and at most :data:`SECRET_MAX` bytes of it: the web layer reads a replaced
    token file on the event loop, where a FIFO put there hung the whole gateway.
    """
    with _reading_file(sec, key, path):
        fd = open_regular(path)
        try:
            st = os.fstat(fd)
            if os.name == "posix" and st.st_mode & 0o077:
                raise sec.error(key, "%s %s is readable by other users (mode %03o); run: chmod 600 %s"
                                % (key, path, st.st_mode & 0o777, path), "bad_path")
            data = read_fd_limited(fd, SECRET_MAX)
        finally:
            os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise sec.error(key, "cannot read %s %s: not UTF-8 text" % (key, path), "bad_path") from exc
    if text.startswith("\ufeff"):
        # Notepad's byte-order mark: no part of the secret (the broker refused it as part of the password,
        # and the token check called it not ASCII, which the editor did not show).
        log.debug("%s %s starts with a UTF-8 byte-order mark: skipped", key, path)
        return text[1:]
    return text


def holds_private_key(sec: Section, key: str, path: Path) -> bool:
    """Whether the PEM file ``path`` holds a private key (``-----BEGIN ... PRIVATE KEY-----``)."""
    try:
        return b"PRIVATE KEY-----" in read_limited(path, CONFIG_MAX)
    except OSError as exc:
        raise sec.error(key, "cannot read %s %s: %s" % (key, path, exc.strerror), "bad_path") from exc


def check_key_mode(sec: Section, key: str, path: Path) -> None:
    """Refuse a private key file other users may read, or its group write. Group-readable is accepted
    when root or this user owns it (the usual root:ssl-cert 0640 key in /etc/ssl/private), as PostgreSQL
    accepts its ssl_key_file; the password file stays owner-only (:func:`read_owner_only`)."""
    if os.name != "posix":
        return
    try:
        st = path.stat()
    except OSError as exc:
        raise sec.error(key, "cannot read %s %s: %s" % (key, path, exc.strerror), "bad_path") from exc
    mode = st.st_mode & 0o777
    group_ok = st.st_uid in (0, os.geteuid())
    if mode & (0o037 if group_ok else 0o077):  # group read only, and only for root's or our own key
        allowed = "0640 (owner root or you) or 0600" if group_ok else "0600 (it is not yours or root's)"
        raise sec.error(key, "%s %s holds a private key and is open to other users (mode %03o; at most %s);"
                        " run: chmod %s %s" % (key, path, mode, allowed, "640" if group_ok else "600", path),
                        "bad_path")
