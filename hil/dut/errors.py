"""Errors of the DUT transport.

A remote operation ends in exactly one of: success, :class:`DeviceError` (the code ran and
raised on the device), :class:`DeviceTimeoutError` (the device is connected but did not answer
in time), :class:`DeviceDisconnectedError` (the link went away), or :class:`DeviceProtocolError`
(the device answered something that is not the raw REPL).
"""

from __future__ import annotations

import re

from hil.errors import HilError

# A base64 payload literal in transfer code (``_civic_d(b'...')`` in write_file): never shown, it may be a key.
_PAYLOAD_RE = re.compile(r"""_civic_d\(b?(['"])([A-Za-z0-9+/=]*)\1\)""")
SECRET_NOT_SHOWN = "<not shown: a secret file's transfer>"


def redact_code(code: str) -> str:
    """``code`` with every base64 payload literal replaced by its length (file content is not for messages)."""
    return _PAYLOAD_RE.sub(lambda m: f"_civic_d(<{len(m.group(2))} base64 chars>)", code)


class DutError(HilError):
    """Root of the errors of :mod:`hil.dut`.

    Attributes:
        url: the device URL (pty path, ``socket://``, ``rfc2217://``), or ``""`` when unknown.
    """

    def __init__(self, message: str, *, url: str = "", **details: object) -> None:
        super().__init__(message, url=url, **details)
        self.url = url


class DeviceError(DutError):
    """Code executed on the device raised an exception.

    The message shows the device's own traceback, so a failing test prints it.

    Attributes:
        exception_type: MicroPython exception class name, e.g. ``"ValueError"``.
        exception_message: the exception's message (text after ``Type: ``).
        traceback: the full traceback text printed by the device.
        stdout: what the code printed before raising.
        code: the code that was executed, its base64 payloads replaced (:func:`redact_code`); with
            ``secret`` only :data:`SECRET_NOT_SHOWN` (shown truncated in the message).
        stdout: with ``secret``, empty.
    """

    def __init__(self, *, url: str, traceback: str, stdout: str, code: str, secret: bool = False) -> None:
        exception_type, exception_message = parse_exception_line(traceback)
        code = SECRET_NOT_SHOWN if secret else redact_code(code)
        stdout = "" if secret else stdout
        shown = code if len(code) <= 200 else code[:200] + "..."
        super().__init__(
            f"device raised {exception_type}: {exception_message}\n"
            f"--- device traceback ---\n{traceback.rstrip()}\n--- code ---\n{shown}",
            url=url, exception_type=exception_type, exception_message=exception_message)
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback
        self.stdout = stdout
        self.code = code


class DeviceTimeoutError(DutError):
    """The device stayed connected but did not finish the operation in time.

    Attributes:
        operation: what was being done (``"exec"``, ``"enter raw REPL"``, ...).
        timeout_s: the limit that expired.
        received: bytes received before giving up (for diagnosis); empty with ``secret`` (a file
            being read may be a key: the message then gives only their number).
        recovered: after an ``exec`` timeout, whether the board answered the raw REPL again once
            interrupted (Ctrl-C); None where no recovery was tried.
    """

    def __init__(self, *, url: str, operation: str, timeout_s: float, received: bytes = b"",
                 recovered: bool | None = None, secret: bool = False) -> None:
        if secret:
            shown, received = f"{len(received)} bytes, not shown: a secret file's transfer", b""
        else:
            shown = repr(received[-200:])
        message = f"{operation} on {url} timed out after {timeout_s:g} s (received {shown})"
        if recovered is True:
            message += "; after Ctrl-C the board answers again"
        elif recovered is False:
            message += ("; the board did not answer Ctrl-C either (on the simulator, code that never returns "
                        "blocks the virtual board until it is stopped; on a real board, hard-reset it)")
        super().__init__(message, url=url, operation=operation, timeout_s=timeout_s, recovered=recovered)
        self.operation = operation
        self.timeout_s = timeout_s
        self.received = received
        self.recovered = recovered


class DeviceDisconnectedError(DutError):
    """The link to the device went away (port closed, USB unplugged, socket reset, board gone).

    Attributes:
        operation: what was being done.
        cause: the underlying OS/serial error text.
    """

    def __init__(self, *, url: str, operation: str, cause: str) -> None:
        super().__init__(f"{url} disconnected during {operation}: {cause}", url=url, operation=operation,
                         cause=cause)
        self.operation = operation
        self.cause = cause


class DeviceConnectError(DutError):
    """The device URL could not be opened at all.

    Attributes:
        cause: the underlying error text.
    """

    def __init__(self, *, url: str, cause: str) -> None:
        super().__init__(f"cannot open {url}: {cause}", url=url, cause=cause)
        self.cause = cause


class DeviceProtocolError(DutError):
    """The device answered, but not as a MicroPython raw REPL would.

    Attributes:
        operation: what was being done.
        received: the unexpected bytes (empty with ``secret``: only their number is shown).
    """

    def __init__(self, *, url: str, operation: str, received: bytes, secret: bool = False) -> None:
        shown = f"{len(received)} bytes, not shown: a secret file's transfer" if secret else repr(received[-200:])
        if secret:
            received = b""
        super().__init__(f"unexpected answer from {url} during {operation}: {shown}",
                         url=url, operation=operation)
        self.operation = operation
        self.received = received


class DeviceResultError(DutError):
    """``eval`` got output that is not a Python literal.

    Attributes:
        expression: the evaluated expression.
        output: what the device printed.
    """

    def __init__(self, *, url: str, expression: str, output: str) -> None:
        super().__init__(f"eval({expression!r}) on {url} returned a non-literal: {output[:200]!r}",
                         url=url, expression=expression, output=output)
        self.expression = expression
        self.output = output


class DevicePathError(DutError):
    """A device path that cannot be used (empty, ``..``, the root).

    Attributes:
        path: the path given.
        reason: why it is refused.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"bad device path {path!r}: {reason}", path=path, reason=reason)
        self.path = path
        self.reason = reason


def parse_exception_line(traceback: str) -> tuple[str, str]:
    """Return (exception type, message) from the last line of a MicroPython traceback.

    ``"...\\nValueError: bad value"`` -> ``("ValueError", "bad value")``; a bare
    ``"KeyboardInterrupt"`` -> ``("KeyboardInterrupt", "")``.
    """
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    if not lines:
        return "Exception", ""
    last = lines[-1]
    name, sep, message = last.partition(":")
    if sep and name and all(part.isidentifier() for part in name.split(".")):
        return name, message.strip()
    if last.isidentifier():
        return last, ""
    return "Exception", last
