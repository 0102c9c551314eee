"""Errors of the simulator (all derive from :class:`hil.errors.HilError`)."""

from __future__ import annotations

from hil.errors import HilError


class SimError(HilError):
    """Root of simulator errors."""


class SimHostError(SimError):
    """The Node host failed to start, died, or rejected a request (``details``: op, board, error)."""


class SimTimeoutError(SimError):
    """The Node host did not answer a request in time (``details``: op, timeout_s)."""


class StimulusError(SimError):
    """A stimulus or fault is not valid for this board (``details``: name, value, board, line)."""


class FlashError(SimError):
    """The flash directory cannot be prepared (``details``: path)."""


class FlashInUseError(FlashError):
    """Another virtual board holds the flash directory's lock (``details``: path, holder_pid)."""


class FlashKindError(FlashError):
    """The flash directory holds another board kind's identity or firmware (``details``: path, kind)."""
