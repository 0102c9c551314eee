"""Errors of the virtual radio (all derive from :class:`hil.errors.HilError`)."""

from __future__ import annotations

from typing import Any

from hil.errors import HilError


class RadioError(HilError):
    """Root of every virtual-radio error (relay, peripheral, bridge, bleak backend)."""


class RadioUrlError(RadioError):
    """A radio URL is malformed.

    Attributes:
        url: the rejected URL (in ``details["url"]`` too).
    """

    def __init__(self, message: str, *, url: str, **details: Any) -> None:
        super().__init__(message, url=url, **details)
        self.url = url


class RadioConnectError(RadioError):
    """The radio relay cannot be reached (not running, wrong port)."""


class RadioTimeoutError(RadioError):
    """A radio operation did not complete in time (distinct from a disconnect).

    Attributes:
        operation: what timed out (``"connect"``, ``"mtu"``, ...).
        timeout_s: the limit that was exceeded.
    """

    def __init__(self, message: str, *, operation: str, timeout_s: float, **details: Any) -> None:
        super().__init__(message, operation=operation, timeout_s=timeout_s, **details)
        self.operation = operation
        self.timeout_s = timeout_s


class PeripheralError(RadioError):
    """A peripheral request from the firmware is invalid (bad handle, bad UUID, ...)."""


class BridgeProtocolError(RadioError):
    """A message on the board's ``ble`` channel is malformed.

    Attributes:
        payload: the offending message text (truncated to 200 characters).
    """

    def __init__(self, message: str, *, payload: str, **details: Any) -> None:
        super().__init__(message, payload=payload[:200], **details)
        self.payload = payload[:200]
