"""Reading the small files civicedge takes by path: configs, secrets, key files, board, scenario and
JSON state files.

``Path.read_bytes()`` on such a path reads ``/dev/zero`` until the OOM killer ends it, and blocks for
ever on a FIFO no program writes to: in the running gateway that is a blocking call on the event
loop, which stops everything (health checks, signals). :func:`read_limited` opens without blocking,
refuses what is not a regular file (a FIFO only where a command reads a pipe on purpose, with a
bounded wait) and reads at most a given number of bytes. :func:`loads_toml` and :func:`loads_json`
turn a document nested too deeply for the parser (a RecursionError traceback) into a clear error.
"""

from __future__ import annotations

import errno
import json
import os
import select
import stat
import time
import tomllib
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * KIB
CONFIG_MAX = MIB  # gateway.toml, routes, board, scenario and stimuli files: far more than any holds
SECRET_MAX = 64 * KIB  # the admin token and MQTT password files (one line)
STATE_MAX = MIB  # JSON the gateway or a simulation writes: retention.json, the sim clock's follow file
PIPE_WAIT_S = 10.0  # a pipe read on purpose (``--config <(...)``): longest wait for its writer's next bytes
MAX_DEPTH = 64  # arrays/tables/objects inside each other: no file civicedge reads needs more than a few


class NotRegularFileError(OSError):
    """``path`` is a FIFO, a device or a socket where a regular file is needed (``strerror`` says which)."""


class FileTooLargeError(OSError):
    """``path`` holds more bytes than the reader takes (``strerror`` names the limit)."""


class NestedTooDeeplyError(ValueError):
    """A TOML or JSON document with arrays/tables/objects nested deeper than :data:`MAX_DEPTH`."""


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, from its ``st_mode`` (for messages)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _size_text(limit: int) -> str:
    return "%d MiB" % (limit // MIB) if limit % MIB == 0 else "%d KiB" % (limit // KIB) if limit % KIB == 0 \
        else "%d bytes" % limit


def _too_large(limit: int) -> FileTooLargeError:
    return FileTooLargeError(errno.EFBIG, "larger than %s, the most this file may hold" % _size_text(limit))


def open_regular(path: str | Path) -> int:
    """A descriptor open for reading on ``path`` (a symlink followed) if it is a regular file.

    Opened with ``O_NONBLOCK``, so a FIFO put in its place does not block the caller, and checked
    with ``fstat`` on what was opened (a file swapped in between cannot pass).

    Raises:
        IsADirectoryError: a directory.
        NotRegularFileError: a FIFO, device or socket ("is a FIFO, not a regular file").
        OSError: cannot be opened.
    """
    fd = _open(path)
    try:
        _require_regular(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open(path: str | Path) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                   | getattr(os, "O_CLOEXEC", 0))


def _require_regular(fd: int, *, pipes: bool = False) -> os.stat_result:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(st.st_mode) and not (pipes and stat.S_ISFIFO(st.st_mode)):
        raise NotRegularFileError(errno.EINVAL, "is %s, not a regular file" % file_kind(st.st_mode))
    return st


def read_limited(path: str | Path, limit: int, *, pipes: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (a symlink is followed), at most ``limit`` of them.

    Args:
        limit: the most the file may hold; a longer one is refused, not cut.
        pipes: also take a FIFO or pipe (``--config <(...)``, ``/dev/stdin`` from a pipe), waiting at most
            :data:`PIPE_WAIT_S` for each next part: a FIFO no program writes to fails instead of hanging.

    Raises:
        IsADirectoryError: a directory.
        NotRegularFileError: a FIFO (unless ``pipes``), device or socket.
        FileTooLargeError: more than ``limit`` bytes.
        TimeoutError: a pipe whose writer sent nothing for :data:`PIPE_WAIT_S`.
        OSError: cannot be opened or read.
    """
    fd = _open(path)
    try:
        st = _require_regular(fd, pipes=pipes)
        if stat.S_ISFIFO(st.st_mode):
            return _read_pipe(fd, limit)
        return read_fd_limited(fd, limit)
    finally:
        os.close(fd)


def read_fd_limited(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd``, a regular file (see :func:`read_limited`).

    Raises:
        FileTooLargeError: more than ``limit`` bytes.
    """
    parts: list[bytes] = []
    got = 0
    while got <= limit:
        chunk = os.read(fd, min(limit + 1 - got, MIB))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
    raise _too_large(limit)


def _read_pipe(fd: int, limit: int) -> bytes:
    """Read a non-blocking pipe to its end, at most ``limit`` bytes, waiting :data:`PIPE_WAIT_S` at most
    for each part (a FIFO no writer opened reports nothing: the wait ends it)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    parts: list[bytes] = []
    got = 0
    while True:
        deadline = time.monotonic() + PIPE_WAIT_S
        while not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            if time.monotonic() >= deadline:
                raise TimeoutError(errno.ETIMEDOUT, "is a FIFO no program wrote to within %g s" % PIPE_WAIT_S)
        try:
            chunk = os.read(fd, min(limit + 1 - got, 64 * KIB))
        except BlockingIOError:
            continue
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        if got > limit:
            raise _too_large(limit)


def check_depth(doc: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse ``doc`` (parsed TOML or JSON) with lists or dicts nested deeper than ``limit``; iterative,
    so it cannot itself run out of stack.

    Raises:
        NestedTooDeeplyError: nested too deeply.
    """
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            raise _too_deep(limit)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _too_deep(limit: int) -> NestedTooDeeplyError:
    return NestedTooDeeplyError("nested too deeply (arrays, tables or objects more than %d levels inside each other)"
                                % limit)


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, refusing a document nested deeper than :data:`MAX_DEPTH`.

    Raises:
        tomllib.TOMLDecodeError: not TOML.
        NestedTooDeeplyError: nested too deeply (the parser would have run out of stack).
    """
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(MAX_DEPTH) from None
    check_depth(doc)
    return doc


def loads_json(text: str | bytes) -> Any:
    """``json.loads(text)``, refusing a document nested deeper than :data:`MAX_DEPTH`.

    Raises:
        ValueError: not JSON (``json.JSONDecodeError``), or nested too deeply (:class:`NestedTooDeeplyError`).
    """
    try:
        doc = json.loads(text)
    except RecursionError:
        raise _too_deep(MAX_DEPTH) from None
    check_depth(doc)
    return doc
