"""Exception root of the ``hil`` package.

Every error the harness raises derives from :class:`HilError`, so a caller can catch the whole
package with one ``except`` and still tell errors apart by class and structured fields (never by
message text).
"""

from __future__ import annotations

from typing import Any


class HilError(Exception):
    """Root of every error raised by the ``hil`` package.

    Attributes:
        message: human-readable description (also ``str(error)``).
        details: structured context (board name, pin, path, ...) for programs and logs.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details)

    def __str__(self) -> str:
        return self.message
