"""Exception root of the gateway package.

Every error the gateway raises derives from :class:`GatewayError` and carries structured fields
(``reason`` plus the context a caller needs), so no caller ever matches on message text.
"""

from __future__ import annotations

from pathlib import Path


class GatewayError(Exception):
    """Root of all gateway errors.

    Attributes:
        reason: a short machine-readable reason (e.g. ``"hmac"``, ``"unknown_key"``).
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ProtocolError(GatewayError):
    """A frame, COBS chunk or BLE fragment that does not follow docs/protocol.md.

    Attributes:
        reason: one of ``oversize``, ``cobs``, ``fragment``, ``version``, ``malformed``, ``body``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, reason=reason)


class RejectedReport(GatewayError):
    """A report the verification pipeline refused.

    Attributes:
        reason: counted rejection reason (``unknown_device``, ``revoked``, ``hmac``, ``replay``,
            ``policy``, ``kind``, ...).
        device_id: the claimed device id, when the header could be parsed.
        seq: the claimed seq, when the header could be parsed.
        held: the ``h`` of an authentic body that carried it (protocol §2), else None.
    """

    def __init__(self, message: str, *, reason: str, device_id: str | None = None, seq: int | None = None,
                 held: tuple[int, ...] | None = None) -> None:
        super().__init__(message, reason=reason)
        self.device_id = device_id
        self.seq = seq
        self.held = held


class ConfigError(GatewayError):
    """Invalid gateway configuration.

    Attributes:
        path: the config file (None for built-in defaults).
        key: dotted key that is wrong (``"mqtt.port"``), or ``""`` for the file itself.
        reason: ``unknown_key``, ``wrong_type``, ``missing``, ``bad_value``, ``bad_path``, ``syntax``;
            ``gateway init --force`` also ``gateway_file``, ``sqlite_file``, ``not_config`` (a target that is
            no config: gateway.config.example).
    """

    def __init__(self, message: str, *, reason: str, key: str, path: Path | None = None) -> None:
        super().__init__(message, reason=reason)
        self.key = key
        self.path = path


class RegistryError(GatewayError):
    """A device registry operation failed.

    Attributes:
        device_id: the device concerned.
        reason: ``unknown_device``, ``exists``, ``bad_value``, ``bad_key``, ``permissions``, ...
        field: for ``bad_value`` / ``bad_key``, the value at fault: ``device_id``, ``kind``, ``zone``,
            ``lat``, ``lon`` or ``key`` (callers name it to their user: a CLI option, an API field).
    """

    def __init__(self, message: str, *, reason: str, device_id: str | None = None, field: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.device_id = device_id
        self.field = field


class StorageError(GatewayError):
    """The report store could not be opened, read or written.

    Attributes:
        reason: what failed, e.g. ``open_failed``, ``in_use``, ``read_failed``, ``write_failed``,
            ``file_gone``, or ``corrupt``: SQLite found the file damaged (SQLITE_CORRUPT, SQLITE_NOTADB;
            docs/gateway.md, *Damaged file*).
        sqlite: SQLite's own message for the failure with its error name (``database disk image is
            malformed (SQLITE_CORRUPT)``), when SQLite raised it; library text that names no stored
            value, so it may be logged. None otherwise.
    """

    def __init__(self, message: str, *, reason: str | None = None, sqlite: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.sqlite = sqlite


class ProvenanceError(GatewayError):
    """A provenance log export is malformed or its hash chain is broken.

    Attributes:
        line: 1-based line of the export where the first problem is.
        reason: ``syntax``, ``prev_mismatch``, ``hash_mismatch``, ``missing_field``, ``unknown_field``, ``pos_mismatch``.
    """

    def __init__(self, message: str, *, reason: str, line: int) -> None:
        super().__init__(message, reason=reason)
        self.line = line


class TransportError(GatewayError):
    """A link (serial port, BLE connection, MQTT broker) failed.

    Attributes:
        link: the link name (``serial:/dev/ttyUSB0``, ``ble:AA:BB:..``, ``mqtt``).
        reason: ``timeout``, ``disconnected``, ``open_failed``.
    """

    def __init__(self, message: str, *, reason: str, link: str) -> None:
        super().__init__(message, reason=reason)
        self.link = link
