"""Record every report a virtual board's firmware generated, by watching its flash outbox.

The firmware writes each REPORT frame to ``/outbox/<seq:08x>.<r|a>`` (temp file + rename) before it
sends it and deletes the file once the gateway acknowledged it, so the names that appear in that
host directory are exactly the reports generated. Linux inotify sees every name even when the
file lives only a few milliseconds; elsewhere the directory is polled (may miss short-lived files,
which the no-loss check then reports as a limitation in its message).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import struct
import time
from pathlib import Path

log = logging.getLogger(__name__)

IN_MOVED_TO = 0x00000080
IN_CLOSE_WRITE = 0x00000008
FRAME_NAME = re.compile(r"([0-9a-f]{8})\.[ra]\Z")
_HEADER = struct.Struct("iIII")


def frame_files(directory: str | os.PathLike[str]) -> list[str]:
    """The frame files in a board's outbox directory, sorted (not its counters: ``dropped``,
    ``owner``); an empty list when the directory does not exist."""
    try:
        return sorted(n for n in os.listdir(directory) if FRAME_NAME.match(n))
    except FileNotFoundError:
        return []


class OutboxWatch:
    """Watches one outbox directory; :meth:`poll` returns every seq written so far.

    Args:
        directory: the board's ``<flash>/outbox`` (created when missing).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.seqs: set[int] = set()
        # Wall time at which inotify showed each seq (read time bounds the write time from above).
        self.first_seen: dict[int, float] = {}
        self._fd = -1
        self.inotify = False
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, str(directory).encode(), IN_MOVED_TO | IN_CLOSE_WRITE) >= 0:
                self._fd, self.inotify = fd, True
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError) as exc:
            log.info("no inotify (%s): polling %s", exc, directory)
        self.poll()

    def poll(self) -> set[int]:
        """Read new names (inotify events, then a listing) and return every seq seen."""
        while self._fd >= 0:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            now = time.time()
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size: offset + _HEADER.size + length].rstrip(b"\0").decode(errors="replace")
                offset += _HEADER.size + length
                m = FRAME_NAME.match(name)
                if m:
                    seq = int(m.group(1), 16)
                    self.seqs.add(seq)
                    self.first_seen.setdefault(seq, now)
        for name in self.pending():
            self.seqs.add(int(name[:8], 16))
        return self.seqs

    def pending(self) -> list[str]:
        """Frame files still in the outbox (not acknowledged yet)."""
        return frame_files(self.directory)

    def close(self) -> None:
        """Release the inotify descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
