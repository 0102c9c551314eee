"""The values a device is registered with: id, kind, zone and location (lat/lon decimal strings).

:func:`validate_device` applies the registry's rules without a registry (the provisioning tools check
a board's identity with it before they flash it); the decimal helpers give a JSON or TOML number the
one spelling the registry stores and compare two spellings of the same place.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from gateway.errors import RegistryError
from gateway.protocol.frame import valid_device_id
from gateway.registry.zones import normalize_zone, zone_problem
from gateway.resources import policy_kinds

# Registry values are ASCII: ``\d`` and ``float()`` also take other scripts' digits ("５２.３" is 52.3).
_DECIMAL = re.compile(r"-?[0-9]{1,3}(\.[0-9]{1,9})?\Z")


def validate_device(device_id: str, *, kind: str, zone: str, lat: str, lon: str) -> None:
    """Check a device's registry values (as :meth:`Registry.add` does) without a registry.

    The id is ASCII ``[A-Za-z0-9._-]``; lat/lon are decimals of ``[0-9]`` (other scripts' digits, which
    ``float()`` would read, are refused). The zone is checked in NFC (:func:`gateway.registry.zones.zone_problem`:
    letters and digits of any script, space . _ -; at most 64 characters) and must not start or end
    with a space nor be only dots.

    Raises:
        RegistryError: reason ``bad_value``, with ``field`` naming the value at fault.
    """
    _validate_device(device_id, kind=kind, zone=zone, lat=lat, lon=lon, zone_stored=False)


def _validate_device(device_id: str, *, kind: str, zone: str, lat: str, lon: str, zone_stored: bool) -> None:
    """:func:`validate_device`; ``zone_stored`` (the device's zone as stored, unchanged) skips the rule on
    the zone's edges, so a device stored before that rule can still be moved to another location."""
    if not valid_device_id(device_id):
        raise RegistryError("device id %s must be 1..32 chars of [A-Za-z0-9._-]" % _quoted(device_id),
                            reason="bad_value", device_id=device_id, field="device_id")
    if not device_id.strip("."):
        # "." and ".." name directories in paths and URLs: key files keys/...key, HTTP clients
        # normalising /api/devices/.. away. The wire format allows them; the registry does not.
        raise RegistryError("device id %r is only dots; use at least one letter, digit, _ or -" % device_id,
                            reason="bad_value", device_id=device_id, field="device_id")
    kinds = policy_kinds()
    if kind not in kinds:
        raise RegistryError("kind %s is not one of %s" % (_quoted(kind), ", ".join(kinds)), reason="bad_value",
                            device_id=device_id, field="kind")
    zone = normalize_zone(zone)
    problem = zone_problem(zone)
    if problem:
        raise RegistryError("zone %s %s" % (_quoted(zone), problem), reason="bad_value", device_id=device_id,
                            field="zone")
    if not zone_stored:
        _check_zone_edges(device_id, zone)
    for name, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
        if not _DECIMAL.match(value) or abs(float(value)) > limit:
            raise RegistryError("%s %s must be a decimal number in ASCII digits (at most 3 before the point and 9 "
                                "after) within ±%d" % (name, _quoted(value), limit),
                                reason="bad_value", device_id=device_id, field=name)


def _check_zone_edges(device_id: str, zone: str) -> None:
    """Refuse a zone with a space at either end or only dots ("north " and "north" would be two zones in
    every aggregate and filter; "." and ".." name directories in paths and URLs)."""
    name = zone.strip(" ")
    if not name:
        raise RegistryError("zone %r is only spaces; name the zone with letters or digits" % zone,
                            reason="bad_value", device_id=device_id, field="zone")
    if name != zone:
        raise RegistryError("zone %r starts or ends with a space; give it without: %r" % (zone, name),
                            reason="bad_value", device_id=device_id, field="zone")
    if not zone.strip("."):
        raise RegistryError("zone %r is only dots; use at least one letter, digit, _ or -" % zone,
                            reason="bad_value", device_id=device_id, field="zone")


def _quoted(value: str, limit: int = 40) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with the full length said (a value
    may come from a 64 KB request body: the answer and the log quote its start, not all of it)."""
    if len(value) <= limit:
        return repr(value)
    return "%r... (%d characters)" % (value[:limit], len(value))


MAX_DECIMALS = 9  # digits after the point of a stored lat/lon (_DECIMAL)


def decimal_text(value: int | float) -> str:
    """A number (a JSON or TOML lat/lon) as the plain decimal text the registry stores: 52.37 is
    "52.37", 1e-05 is "0.00001", and a negative zero is "0.0" (the same place, one spelling).

    repr() is the shortest text that reads back as the same float (no 52.370000000000005); it writes
    small and large values in exponent form, which the registry refuses, so the text is written out.

    Raises:
        ValueError: ``value`` is nan or inf, or has more than 3 digits before the point or
            :data:`MAX_DECIMALS` after it (1e308, 1e-300: not written out); the message follows the
            value's name ("must be ...").
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite decimal number, got %r" % value)
    number = Decimal(repr(value)) if abs(value) < 1000 else None  # a 1000-digit int is not written out
    exponent = number.as_tuple().exponent if number is not None else 0
    if number is None or (isinstance(exponent, int) and exponent < -MAX_DECIMALS):
        shown = repr(value) if number is not None or isinstance(value, float) else "a %d-digit number" % len(str(value))
        raise ValueError("must be a decimal number with at most 3 digits before the point and %d after, got %s"
                         % (MAX_DECIMALS, shown[:32]))
    return unsigned_zero(format(number, "f"))


def unsigned_zero(text: str) -> str:
    """``text`` without the minus of a negative zero ("-0.00" is "0.00"): the same place, one spelling."""
    if text.startswith("-") and text[1:2].isdigit() and not text[1:].strip("0."):
        return text[1:]
    return text


def same_decimal(a: str, b: str) -> bool:
    """True when two decimal strings are the same number ("52.370" is "52.37"); other text compares as is."""
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return a == b


def same_place(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """True if two (lat, lon) decimal strings name the same point."""
    return all(same_decimal(x, y) for x, y in zip(a, b))
