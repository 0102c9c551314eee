"""Minimal QEMU Machine Protocol (QMP) client: connect, negotiate, execute one command at a time.

QMP is line-delimited JSON over a socket: the server greets with ``{"QMP": ...}``, the client
sends ``{"execute": "qmp_capabilities"}`` once, then commands; asynchronous ``{"event": ...}``
messages may arrive between a command and its ``{"return": ...}`` / ``{"error": ...}``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

from hil.backends.errors import QmpError

log = logging.getLogger(__name__)


class QmpClient:
    """A connected QMP session.

    Args:
        host: QMP server host.
        port: QMP server TCP port.
        timeout_s: limit for connecting and for each command.
    """

    def __init__(self, host: str, port: int, *, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._buffer = b""
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise QmpError(f"cannot connect to QMP at {host}:{port}: {exc}", command="connect",
                           error_class="connection") from exc
        self.events: list[dict[str, Any]] = []
        greeting = self._read_message("greeting")
        if "QMP" not in greeting:
            self.close()
            raise QmpError(f"not a QMP server at {host}:{port}: {greeting!r}", command="greeting",
                           error_class="protocol")
        self.execute("qmp_capabilities")

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a QMP command and return its ``return`` value.

        Raises:
            QmpError: the command failed (``error_class`` from QEMU), timed out, or the socket closed.
        """
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\r\n")
        except OSError as exc:
            raise QmpError(f"QMP {command}: send failed: {exc}", command=command, error_class="connection") from exc
        deadline = time.monotonic() + self._timeout_s
        while True:
            reply = self._read_message(command, deadline=deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(f"QMP {command}: {err.get('desc', err)}", command=command,
                               error_class=str(err.get("class", "GenericError")))
            if "return" in reply:
                log.debug("QMP %s -> %s", command, reply["return"])
                return reply["return"]

    def _read_message(self, command: str, *, deadline: float | None = None) -> dict[str, Any]:
        """Read one JSON line; tell a timeout from a closed connection."""
        end = deadline if deadline is not None else time.monotonic() + self._timeout_s
        while b"\n" not in self._buffer:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise QmpError(f"QMP {command}: no answer in {self._timeout_s:g} s", command=command,
                               error_class="timeout")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(4096)
            except socket.timeout:
                continue
            except OSError as exc:
                raise QmpError(f"QMP {command}: {exc}", command=command, error_class="connection") from exc
            if not chunk:
                raise QmpError(f"QMP {command}: connection closed by QEMU", command=command,
                               error_class="connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            parsed = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"QMP {command}: invalid JSON {line[:100]!r}", command=command,
                           error_class="protocol") from exc
        if not isinstance(parsed, dict):
            raise QmpError(f"QMP {command}: expected an object, got {line[:100]!r}", command=command,
                           error_class="protocol")
        return parsed

    def close(self) -> None:
        """Close the socket (QEMU keeps running)."""
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "QmpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
