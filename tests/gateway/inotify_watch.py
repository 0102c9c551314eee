"""Record every frame file a virtual board's firmware puts into its flash outbox (Linux inotify).

The firmware appends each REPORT frame to ``/outbox/<seq:08x>.<r|a>`` (temp file + rename) before
sending it, so the names moved into that host directory are exactly the reports it generated.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
from pathlib import Path

IN_MOVED_TO = 0x00000080
IN_CLOSE_WRITE = 0x00000008
_NAME = re.compile(r"([0-9a-f]{8})\.[ra]\Z")
_HEADER = struct.Struct("iIII")


class OutboxWatch:
    """Watches one outbox directory; :meth:`poll` returns every seq written so far."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self._fd, str(directory).encode(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed")
        self.directory = directory
        self.seqs: set[int] = set()

    def poll(self) -> set[int]:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return self.seqs
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0").decode()
                offset += _HEADER.size + length
                m = _NAME.match(name)
                if m:
                    self.seqs.add(int(m.group(1), 16))

    def pending(self) -> list[str]:
        """Frame files still in the outbox (not acknowledged yet)."""
        return sorted(n for n in os.listdir(self.directory) if _NAME.match(n))

    def close(self) -> None:
        os.close(self._fd)
