"""A bare MicroPython wasm REPL behind a pty, for DUT transport tests (imported by conftest)."""

from __future__ import annotations

import os
import select
import subprocess
import threading
from dataclasses import dataclass, field

@dataclass
class ReplPeer:
    """A bare MicroPython wasm REPL behind a pty (console of a board with no hardware)."""

    path: str
    proc: subprocess.Popen[bytes]
    master: int
    slave: int
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def hang_up(self) -> None:
        """Unplug: stop relaying and close the pty master (the port's other end goes away)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for fd in (self.master,):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = -1

    def close(self) -> None:
        self.hang_up()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        try:
            os.close(self.slave)
        except OSError:
            pass


def _pump(src: int, dst: int, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([src], [], [], 0.05)
        if not ready:
            continue
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if not data:
            return
        try:
            os.write(dst, data)
        except OSError:
            return
