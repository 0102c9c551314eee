"""A bare MicroPython wasm REPL behind a pty, for DUT transport tests (imported by conftest)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
from dataclasses import dataclass, field

import serial
from serial import rfc2217

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


class _NoModemLines:
    """A pty seen as a serial port without modem lines (ptys have no DTR/RTS/CTS)."""

    _LINES = ("dtr", "rts", "break_condition")

    def __init__(self, port: serial.Serial) -> None:
        object.__setattr__(self, "_port", port)

    def __getattr__(self, name: str) -> object:
        if name in ("cts", "dsr", "ri", "cd"):
            return False
        return getattr(self._port, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name not in self._LINES:
            setattr(self._port, name, value)


class NetworkPortServer:
    """Serves a local serial port over TCP like a remote rig does: plain (``socket://``) or
    RFC 2217 (``rfc2217://``, telnet negotiation by pyserial's own server-side PortManager)."""

    def __init__(self, device: str, *, rfc2217: bool) -> None:
        self._device = device
        self._rfc2217 = rfc2217
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'rfc2217' if self._rfc2217 else 'socket'}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self._bridge(conn)

    def _bridge(self, conn: socket.socket) -> None:
        port = serial.serial_for_url(self._device, timeout=0)
        lock = threading.Lock()

        class _Conn:
            def write(self, data: bytes) -> None:
                with lock:
                    conn.sendall(data)

        manager = rfc2217.PortManager(_NoModemLines(port), _Conn()) if self._rfc2217 else None
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([conn, port.fileno()], [], [], 0.05)
                if conn in ready:
                    data = conn.recv(4096)
                    if not data:
                        return
                    port.write(b"".join(manager.filter(data)) if manager is not None else data)
                if port.fileno() in ready:
                    data = port.read(4096)
                    if data:
                        with lock:
                            conn.sendall(b"".join(manager.escape(data)) if manager is not None else data)
        except OSError:
            return
        finally:
            conn.close()
            port.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
