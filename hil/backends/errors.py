"""Errors raised by the board backends (capabilities, QEMU image/launcher, serial selection/leases).

Every class derives from :class:`hil.errors.HilError` and carries its context as attributes, so
callers match on the class and read fields, never parse the message.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Sequence

from hil.errors import HilError


class BackendError(HilError):
    """Root of the errors of :mod:`hil.backends`."""


class SimOnlyError(BackendError, AttributeError):
    """A sim-only power (``hil_board.control.stimulus``, faults, the virtual clock) used on another backend.

    An :class:`AttributeError` too, so ``hasattr(control, name)`` and ``getattr(control, name, None)``
    answer False / None instead of raising.

    Attributes:
        backend: the backend the board runs on.
        attribute: the name that was looked up.
    """

    def __init__(self, message: str, *, backend: str, attribute: str) -> None:
        super().__init__(message, backend=backend, attribute=attribute)
        self.backend = backend
        self.attribute = attribute


class UnknownBackendError(BackendError):
    """A backend name that is not one of ``sim``, ``qemu``, ``serial``.

    Attributes:
        backend: the name that was given.
        known: the valid names.
    """

    def __init__(self, backend: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown HIL backend {backend!r}; choose one of {', '.join(known)}",
                         backend=backend, known=tuple(known))
        self.backend = backend
        self.known = tuple(known)


class UnknownCapabilityError(BackendError):
    """A ``requires(...)`` marker (or manifest) names a capability nobody defines (a typo).

    Attributes:
        capability: the unknown name.
        known: the capability names that exist.
    """

    def __init__(self, capability: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown capability {capability!r}; known capabilities: {', '.join(sorted(known))}",
                         capability=capability, known=tuple(sorted(known)))
        self.capability = capability
        self.known = tuple(sorted(known))


# --- QEMU flash image -------------------------------------------------------------------------


class FlashImageError(BackendError):
    """Root of the errors building or reading a QEMU flash image."""


class PartitionTableError(FlashImageError):
    """The partition table of a MicroPython release image is missing or malformed.

    Attributes:
        offset: byte offset (inside the table) where the problem was found.
        reason: short machine-friendly reason, e.g. ``"no-magic"``, ``"md5-mismatch"``, ``"overlap"``.
    """

    def __init__(self, message: str, *, offset: int, reason: str) -> None:
        super().__init__(message, offset=offset, reason=reason)
        self.offset = offset
        self.reason = reason


class NoFilesystemPartitionError(FlashImageError):
    """The partition table has no data partition labelled ``vfs`` or ``ffat`` for our files.

    Attributes:
        labels: the labels that were searched for.
        found: labels of the partitions present.
    """

    def __init__(self, labels: Sequence[str], found: Sequence[str]) -> None:
        super().__init__(
            f"no filesystem partition labelled {' or '.join(labels)} in the partition table "
            f"(partitions: {', '.join(found) or 'none'})",
            labels=tuple(labels), found=tuple(found))
        self.labels = tuple(labels)
        self.found = tuple(found)


class ImageTooBigError(FlashImageError):
    """Something does not fit: the release image in flash, or our files in the partition.

    Attributes:
        what: which item does not fit (``"release image"``, ``"filesystem"``, partition label).
        size: bytes needed.
        limit: bytes available.
    """

    def __init__(self, what: str, *, size: int, limit: int) -> None:
        super().__init__(f"{what} does not fit: needs {size} bytes, {limit} available",
                         what=what, size=size, limit=limit)
        self.what = what
        self.size = size
        self.limit = limit


class UnsupportedChipError(FlashImageError):
    """A chip the QEMU backend cannot emulate.

    Attributes:
        chip: the chip name given.
        supported: chips that are supported.
    """

    def __init__(self, chip: str, supported: Sequence[str]) -> None:
        super().__init__(f"unsupported chip {chip!r}; the QEMU backend supports {', '.join(supported)}",
                         chip=chip, supported=tuple(supported))
        self.chip = chip
        self.supported = tuple(supported)


class ReleaseImageError(FlashImageError):
    """The ``--hil-qemu-image`` file is not a MicroPython release image for the board's chip (checked
    as ``civicedge flash`` checks an image: missing, empty, not an ESP image, another chip's).

    Attributes:
        image: the file given.
    """

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message, image=image)
        self.image = image


# --- QEMU process -----------------------------------------------------------------------------


class QemuError(BackendError):
    """Root of the errors running QEMU."""


class QemuNotFoundError(QemuError):
    """No usable Espressif QEMU binary.

    Attributes:
        binary: the binary searched for.
        reason: why it is not usable (missing, or upstream QEMU without the ESP32 machine).
    """

    def __init__(self, binary: str, reason: str) -> None:
        super().__init__(f"{binary}: {reason}", binary=binary, reason=reason)
        self.binary = binary
        self.reason = reason


class QemuStartError(QemuError):
    """QEMU exited or did not open its serial port in time.

    Attributes:
        command: the command line.
        returncode: exit status, or None while still running.
        stderr: what QEMU printed on stderr.
    """

    def __init__(self, message: str, *, command: Sequence[str], returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message}: {stderr.strip()[-500:]}" if stderr.strip() else message,
                         command=tuple(command), returncode=returncode, stderr=stderr)
        self.command = tuple(command)
        self.returncode = returncode
        self.stderr = stderr


class QmpError(QemuError):
    """The QEMU Machine Protocol returned an error or the connection failed.

    Attributes:
        command: the QMP command being executed.
        error_class: QMP error class (e.g. ``"CommandNotFound"``), or ``"connection"``/``"timeout"``.
    """

    def __init__(self, message: str, *, command: str, error_class: str) -> None:
        super().__init__(message, command=command, error_class=error_class)
        self.command = command
        self.error_class = error_class


# --- serial rigs --------------------------------------------------------------------------------


class PortSelectionError(BackendError):
    """No board (or more than one) matches the selection.

    Attributes:
        criteria: what was asked for, e.g. ``{"serial_number": "A1"}``.
        candidates: ports that were considered.
    """

    def __init__(self, message: str, *, criteria: dict[str, str], candidates: Sequence[str]) -> None:
        super().__init__(message, criteria=dict(criteria), candidates=tuple(candidates))
        self.criteria = dict(criteria)
        self.candidates = tuple(candidates)


class NoMatchingPortError(PortSelectionError):
    """No serial port matches the selection."""


class AmbiguousPortError(PortSelectionError):
    """Several serial ports match; give a more specific selection."""


class PortInUseError(BackendError):
    """Another process has the board's port open (a gateway's serial link, a serial monitor, another flash).

    Attributes:
        port: the port.
        holders: ``(pid, command name)`` of the processes seen holding it (empty when none can be seen,
            e.g. another user's process while not root).
    """

    def __init__(self, message: str, *, port: str, holders: Sequence[tuple[int, str]] = ()) -> None:
        super().__init__(message, port=port, holders=tuple(holders))
        self.port = port
        self.holders = tuple(holders)


class BoardIdentityError(BackendError):
    """A real board's own identity stands in the way of the test identity, or could not be put back.

    Attributes:
        port: the board's console.
        reason: ``provisioned`` (it has an identity and the run did not opt in to replace it),
            ``unsent`` (its outbox holds reports framed under its own key), ``saved-record`` (an
            interrupted run's saved identity cannot be put back safely), ``restore`` (putting it
            back at the end failed).
        device_id: the board's own device id, when it can be read.
    """

    def __init__(self, message: str, *, port: str, reason: str, device_id: str | None = None) -> None:
        super().__init__(message, port=port, reason=reason, device_id=device_id)
        self.port = port
        self.reason = reason
        self.device_id = device_id


class LeaseError(BackendError):
    """Root of lease errors.

    Attributes:
        resource: the leased resource id (port or board identity).
    """

    def __init__(self, message: str, *, resource: str, **details: object) -> None:
        super().__init__(message, resource=resource, **details)
        self.resource = resource


class LeaseHeldError(LeaseError):
    """The resource is leased by someone else and the lease has not expired.

    Attributes:
        holder_pid: pid of the holder.
        holder_host: host name of the holder.
        expires_at: UNIX time when the holder's lease expires unless refreshed.
        this_process: the holder is this very process (another lease object of it, e.g. another
            board handle of the same test run on the same port): waiting for it would never end.
        pid_unchecked: why the holder's pid cannot be checked from here (an older lease file,
            another pid namespace or machine), so that only expiry frees the lease even when that
            pid is visibly gone; None when it was checked (the holder is alive).
    """

    def __init__(self, *, resource: str, holder_pid: int, holder_host: str, expires_at: float,
                 now: float | None = None, this_process: bool = False, pid_unchecked: str | None = None) -> None:
        until = readable_expiry(expires_at, time.time() if now is None else now)
        if this_process:
            message = (f"{resource} is already leased by this process (pid {holder_pid}, this test run: another "
                       f"board handle of it holds the port) until {until}; not waiting for our own lease")
        else:
            message = f"{resource} is leased by pid {holder_pid} on {holder_host} until {until}"
            if pid_unchecked is not None:
                message += (f"; that pid cannot be checked from here ({pid_unchecked}), so the lease is "
                            "freed only by its expiry")
        super().__init__(message, resource=resource, holder_pid=holder_pid, holder_host=holder_host,
                         expires_at=expires_at, this_process=this_process, pid_unchecked=pid_unchecked)
        self.holder_pid = holder_pid
        self.holder_host = holder_host
        self.expires_at = expires_at
        self.this_process = this_process
        self.pid_unchecked = pid_unchecked


def readable_expiry(expires_at: float, now: float) -> str:
    """``expires_at`` (UNIX time) as local ISO time with its UTC offset and the time left,
    e.g. ``2026-05-04T14:03:21+02:00 (in 42 s)``."""
    stamp = datetime.fromtimestamp(expires_at).astimezone().isoformat(timespec="seconds")
    left = expires_at - now
    return f"{stamp} (in {left:.0f} s)" if left >= 0 else f"{stamp} ({-left:.0f} s ago)"


class LeaseLostError(LeaseError):
    """Our lease expired and was taken over (e.g. the process stalled longer than the lease)."""
