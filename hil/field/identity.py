"""The device identity written by ``civicedge provision``: build it, fingerprint it, compare it.

``/identity.json`` on the device is ``{"id", "kind", "zone", "lat", "lon", "key"}`` with the key
as 64 hex characters. The key is generated here from the OS RNG and only ever leaves this module
inside that file and the gateway registry; labels and logs carry its fingerprint instead.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.errors import RegistryError
from gateway.registry import key_fingerprint, same_place, validate_device
from gateway.registry.devices import MAX_DECIMALS
from gateway.registry.zones import normalize_zone, zone_problem
from gateway.resources import policy_kinds
from hil.field.errors import IdentityFormatError

KEY_BYTES = 32
_DECIMAL = re.compile(r"-?[0-9]{1,3}(\.[0-9]{1,9})?\Z")  # ASCII digits: the registry takes no others
_DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")


def kinds() -> list[str]:
    """The device kinds, sorted: those of ``firmware/policy.json``, which the gateway registry accepts."""
    return policy_kinds()


@dataclass(frozen=True)
class Identity:
    """A device's identity and key.

    Attributes:
        id: device id. kind: a kind of the policy (:func:`kinds`). zone: city zone.
        lat, lon: decimal strings (no floats anywhere on the privacy path).
        key: the 32-byte HMAC key (never print it: ``repr`` hides it).
    """

    id: str
    kind: str
    zone: str
    lat: str
    lon: str
    key: bytes

    def __repr__(self) -> str:
        return (f"Identity(id={self.id!r}, kind={self.kind!r}, zone={self.zone!r}, lat={self.lat!r}, "
                f"lon={self.lon!r}, key=<fingerprint {self.fingerprint}>)")

    @property
    def fingerprint(self) -> str:
        """First 8 bytes of SHA-256(key), hex: safe to print on a label."""
        return key_fingerprint(self.key)

    def to_json_bytes(self) -> bytes:
        """The ``/identity.json`` content."""
        doc = {"id": self.id, "kind": self.kind, "zone": self.zone, "lat": self.lat, "lon": self.lon,
               "key": self.key.hex()}
        return json.dumps(doc, sort_keys=True).encode()

    def same_device(self, other: Identity) -> bool:
        """True when both describe the same provisioning (every field, key included)."""
        return self == other


def differing_fields(have: Identity, want: Identity) -> list[str]:
    """Names of the identity fields (key aside) in which ``want`` differs; locations compared as numbers."""
    names = [n for n in ("id", "kind", "zone") if getattr(have, n) != getattr(want, n)]
    if not same_place((have.lat, have.lon), (want.lat, want.lon)):
        names.append("location")
    return names


def parse_location(text: str) -> tuple[str, str]:
    """Parse ``LAT,LON`` into two decimal strings.

    Raises:
        IdentityFormatError: not two decimals, or out of range.
    """
    parts = [p.strip() for p in text.split(",")]
    for part in parts:
        decimals = part.partition(".")[2]
        if len(decimals) > MAX_DECIMALS and decimals.isdigit():
            raise IdentityFormatError(f"location {text!r}: {part} has {len(decimals)} decimals; at most {MAX_DECIMALS} "
                                      "are allowed (the registry's limit; 9 decimals of a degree are about 0.1 mm)",
                                      location=text)
    if len(parts) != 2 or not all(_DECIMAL.match(p) for p in parts):
        raise IdentityFormatError(f"location {text!r} must be LAT,LON in decimal degrees, e.g. 52.3702,4.8952",
                                  location=text)
    lat, lon = parts
    if abs(float(lat)) > 90 or abs(float(lon)) > 180:
        raise IdentityFormatError(f"location {text!r} is out of range (|lat| <= 90, |lon| <= 180)", location=text)
    return lat, lon


def new_identity(*, device_id: str, kind: str, zone: str, lat: str, lon: str) -> Identity:
    """Validate the fields and create an identity with a fresh key from the OS RNG.

    Raises:
        IdentityFormatError: a field is malformed.
    """
    zone = normalize_zone(zone)  # the board and the registry hold the NFC form
    validate_fields(device_id=device_id, kind=kind, zone=zone)
    return Identity(device_id, kind, zone, lat, lon, secrets.token_bytes(KEY_BYTES))


def validate_fields(*, device_id: str, zone: str, kind: str | None = None) -> None:
    """Raise :class:`IdentityFormatError` for a bad id, kind or zone (``kind`` None: id and zone only).

    The registry's own rules apply too (:func:`gateway.registry.validate_device`: a zone with a space at
    either end, an id or zone of only dots), so the registry never refuses what passed here.
    """
    if not _DEVICE_ID.match(device_id):
        raise IdentityFormatError(f"device id {device_id!r} must be 1-32 of A-Z a-z 0-9 . _ -", device_id=device_id)
    known = kinds()
    if kind is not None and kind not in known:
        raise IdentityFormatError(f"kind {kind!r} must be one of {', '.join(known)}", kind=kind)
    zone = normalize_zone(zone)
    problem = zone_problem(zone)
    if problem:
        raise IdentityFormatError(f"zone {zone!r} {problem}", zone=zone)
    try:
        # lat/lon are checked by parse_location; a valid kind stands in when it is not known yet.
        validate_device(device_id, kind=kind or known[0], zone=zone, lat="0", lon="0")
    except RegistryError as exc:
        raise IdentityFormatError(str(exc), device_id=device_id, zone=zone) from None


def parse_identity(data: bytes) -> Identity:
    """Parse the content of a device's ``/identity.json``.

    Raises:
        IdentityFormatError: not JSON, fields missing, or the key is not 64 hex characters
            (the message never contains the key).
    """
    try:
        doc: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise IdentityFormatError("the device's /identity.json is not valid JSON") from None
    if not isinstance(doc, dict):
        raise IdentityFormatError("the device's /identity.json is not a JSON object")
    missing = [k for k in ("id", "kind", "zone", "lat", "lon", "key") if not isinstance(doc.get(k), str)]
    if missing:
        raise IdentityFormatError(f"the device's /identity.json lacks {', '.join(missing)}", missing=missing)
    try:
        key = bytes.fromhex(doc["key"])
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise IdentityFormatError("the device's /identity.json key is not 64 hex characters")
    # NFC as every zone the gateway stores: a hand-written NFD zone compares equal to the registry's.
    return Identity(doc["id"], doc["kind"], normalize_zone(doc["zone"]), doc["lat"], doc["lon"], key)
