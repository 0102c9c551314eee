"""Errors raised while loading and validating a board definition.

All derive from :class:`BoardError` (itself a :class:`hil.errors.HilError`) and carry the board
source plus structured fields, so callers can react to the kind of mistake without parsing text.
"""

from __future__ import annotations

import difflib
from typing import Any

from hil.errors import HilError


def suggest_board(name: str, available: list[str]) -> str | None:
    """The board name ``name`` was most likely meant to be (``streetlite-esp32`` -> ``streetlight-esp32``,
    ``streetlight`` -> ``streetlight-esp32`` when it is the only board starting so), or None."""
    stem = name[:-5] if name.endswith(".toml") else name
    close = difflib.get_close_matches(stem, available, n=1)
    if close:
        return close[0]
    starts = [a for a in available if a.startswith(stem)] if stem else []
    return starts[0] if len(starts) == 1 else None


class BoardError(HilError):
    """A board definition cannot be found, parsed or validated.

    Attributes:
        source: board name or file path the error is about.
        problems: every problem found in the file, this one first (validation goes on after a
            problem it can step over, so one run reports them all); ``[self]`` otherwise.
    """

    def __init__(self, message: str, *, source: str, **details: Any) -> None:
        super().__init__(f"{source}: {message}", source=source, **details)
        self.source = source
        self.problems: list[BoardError] = [self]


class BoardNotFoundError(BoardError):
    """No board file of that name or path exists.

    Attributes:
        available: names of the boards that do exist (``CIVICEDGE_BOARDS`` directories and ``boards/``).
        suggestion: the available name most like the one given, or None.
    """

    def __init__(self, *, source: str, available: list[str]) -> None:
        suggestion = suggest_board(source, available)
        hint = f"did you mean {suggestion!r}? " if suggestion else ""
        super().__init__(
            f"no such board ({hint}available: {', '.join(available) or 'none'}; a board file of your own: pass its "
            "path, or put it in a directory listed in CIVICEDGE_BOARDS)",
            source=source, available=available, suggestion=suggestion,
        )
        self.available = available
        self.suggestion = suggestion


class BoardFileNotFoundError(BoardNotFoundError):
    """A board given as a file path (it has a ``/`` or ends in ``.toml``) names no existing file.

    Attributes:
        available: names of the boards that do exist in the boards directory.
    """

    def __init__(self, *, source: str, available: list[str]) -> None:
        # BoardNotFoundError words it as an unknown board name; for a path the file is what is missing.
        BoardError.__init__(self, "no such file; pass an existing .toml file or a board name (boards: %s)"
                            % (", ".join(available) or "none"), source=source, available=available)
        self.available = available
        self.suggestion = None


class BoardSyntaxError(BoardError):
    """The file is not valid TOML.

    Attributes:
        reason: the TOML parser's message (includes line and column).
    """

    def __init__(self, *, source: str, reason: str) -> None:
        super().__init__(f"not valid TOML: {reason}", source=source, reason=reason)
        self.reason = reason


class MissingFieldError(BoardError):
    """A required field is absent.

    Attributes:
        field: dotted path of the missing field, e.g. ``io.pir.pin``.
        found: dotted path of a key there that the schema does not know and that looks like a
            misspelling of ``field`` (``calibration.lamp.tolerence_pct``), or None.
    """

    def __init__(self, *, source: str, field: str, found: str | None = None) -> None:
        hint = f" (found {found!r}: misspelt?)" if found else ""
        super().__init__(f"missing required field {field!r}{hint}", source=source, field=field, found=found)
        self.field = field
        self.found = found


class UnknownFieldError(BoardError):
    """A field the schema does not know (usually a typo).

    Attributes:
        field: dotted path of the unknown field.
        allowed: the field names accepted at that place.
    """

    def __init__(self, *, source: str, field: str, allowed: list[str]) -> None:
        where = f"allowed here: {', '.join(allowed)}" if allowed else "none allowed here"
        super().__init__(f"unknown field {field!r} ({where})", source=source, field=field, allowed=allowed)
        self.field = field
        self.allowed = allowed


class FieldTypeError(BoardError):
    """A field has the wrong TOML type.

    Attributes:
        field: dotted path of the field.
        expected: expected type name.
        actual: type name found.
    """

    def __init__(self, *, source: str, field: str, expected: str, actual: str) -> None:
        super().__init__(
            f"field {field!r} must be {expected}, not {actual}", source=source, field=field, expected=expected, actual=actual
        )
        self.field = field
        self.expected = expected
        self.actual = actual


class InvalidValueError(BoardError):
    """A field has the right type but a value outside what is allowed.

    Attributes:
        field: dotted path of the field.
        value: the offending value.
        reason: what is allowed.
    """

    def __init__(self, *, source: str, field: str, value: Any, reason: str) -> None:
        # value None: a section or field that is absent where the rule needs it (no "= None" shown)
        shown = f"field {field!r}" if value is None else f"field {field!r} = {value!r}"
        super().__init__(f"{shown}: {reason}", source=source, field=field, value=value, reason=reason)
        self.field = field
        self.value = value
        self.reason = reason


class UnknownChipError(BoardError):
    """The ``chip`` is not one the loader has a pin table for.

    Attributes:
        chip: the chip name given.
        known: chip names that are supported.
    """

    def __init__(self, *, source: str, chip: str, known: list[str]) -> None:
        # "ESP32-S3", "esp32_s3": the chip is known, only spelt differently.
        plain = "".join(c for c in chip.lower() if c.isalnum())
        if plain in known:
            todo = f"write chip = {plain!r}"
        else:
            todo = (f"use one of these, or add the chip: its pin table in hil/boards/chips.py and its flash "
                    f"facts in hil/field/chips.py (docs/boards.md, \"Adding a chip\")")
        super().__init__(f"unknown chip {chip!r} (known: {', '.join(known)}); {todo}",
                         source=source, chip=chip, known=known)
        self.chip = chip
        self.known = known


class PinError(BoardError):
    """Base of the errors about one pin's use.

    Attributes:
        pin: the GPIO number.
        use: dotted path of the field that uses it, e.g. ``io.light.pin``.
        chip: the board's chip.
        hint: which free GPIOs could do the job instead ("" if none is given).
    """

    def __init__(self, message: str, *, source: str, pin: int, use: str, chip: str, hint: str = "",
                 **details: Any) -> None:
        super().__init__(f"{message}; {hint}" if hint else message, source=source, pin=pin, use=use, chip=chip,
                         hint=hint, **details)
        self.pin = pin
        self.use = use
        self.chip = chip
        self.hint = hint


class PinConflictError(PinError):
    """The same GPIO is used twice.

    Attributes:
        first_use: the field that claimed the pin first.
    """

    def __init__(self, *, source: str, pin: int, use: str, chip: str, first_use: str, hint: str = "") -> None:
        super().__init__(
            f"GPIO{pin} used by {use!r} is already used by {first_use!r}",
            source=source, pin=pin, use=use, chip=chip, first_use=first_use, hint=hint,
        )
        self.first_use = first_use


class PinNotOnChipError(PinError):
    """The chip has no such GPIO."""

    def __init__(self, *, source: str, pin: int, use: str, chip: str, hint: str = "") -> None:
        what = f"pin {pin} is not a GPIO number" if pin < 0 else f"{chip} has no GPIO{pin}"
        super().__init__(f"{use!r}: {what}", source=source, pin=pin, use=use, chip=chip, hint=hint)


class ReservedPinError(PinError):
    """The GPIO exists but is wired to the flash (or otherwise unusable).

    Attributes:
        reason: why the pin is reserved.
    """

    def __init__(self, *, source: str, pin: int, use: str, chip: str, reason: str, hint: str = "") -> None:
        super().__init__(
            f"{use!r}: GPIO{pin} on {chip} is not usable ({reason})", source=source, pin=pin, use=use, chip=chip,
            reason=reason, hint=hint,
        )
        self.reason = reason


class NotAdcPinError(PinError):
    """An ADC input is put on a GPIO without an ADC channel.

    Attributes:
        adc_pins: the chip's ADC-capable GPIOs.
    """

    def __init__(self, *, source: str, pin: int, use: str, chip: str, adc_pins: list[int], hint: str = "") -> None:
        super().__init__(
            f"{use!r}: GPIO{pin} on {chip} has no ADC channel (ADC pins: {adc_pins})",
            source=source, pin=pin, use=use, chip=chip, adc_pins=adc_pins, hint=hint,
        )
        self.adc_pins = adc_pins


class InputOnlyPinError(PinError):
    """An output (digital out, PWM, UART TX) is put on an input-only GPIO."""

    def __init__(self, *, source: str, pin: int, use: str, chip: str, hint: str = "") -> None:
        super().__init__(
            f"{use!r}: GPIO{pin} on {chip} is input-only and cannot drive an output",
            source=source, pin=pin, use=use, chip=chip, hint=hint,
        )


class NotWakePinError(PinError):
    """A deep-sleep wake source is on a GPIO that cannot wake the chip (not an RTC GPIO).

    Attributes:
        wake_pins: the chip's wake-capable GPIOs a board may use (reserved and console pins left out).
    """

    def __init__(self, *, source: str, pin: int, use: str, chip: str, wake_pins: list[int], hint: str = "") -> None:
        super().__init__(
            f"{use!r}: GPIO{pin} on {chip} cannot wake from deep sleep (wake-capable: {wake_pins})",
            source=source, pin=pin, use=use, chip=chip, wake_pins=wake_pins, hint=hint,
        )
        self.wake_pins = wake_pins
