"""Advertising-data parsing for the bleak backend (pure: bytes in, fields out, no I/O)."""

from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass, field

from bleak.uuids import normalize_uuid_str

_UUID16_LISTS = (0x02, 0x03)
_UUID32_LISTS = (0x04, 0x05)
_UUID128_LISTS = (0x06, 0x07)
_SHORT_NAME, _COMPLETE_NAME = 0x08, 0x09
_TX_POWER = 0x0A
_SERVICE_DATA16, _SERVICE_DATA32, _SERVICE_DATA128 = 0x16, 0x20, 0x21
_MANUFACTURER = 0xFF


@dataclass
class ParsedAdvertisement:
    """The fields bleak's ``AdvertisementData`` carries, taken from raw AD structures."""

    local_name: str | None = None
    service_uuids: list[str] = field(default_factory=list)
    service_data: dict[str, bytes] = field(default_factory=dict)
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    tx_power: int | None = None


def _uuid_from_le(raw: bytes) -> str:
    if len(raw) in (2, 4):
        return normalize_uuid_str(raw[::-1].hex())
    return str(uuidlib.UUID(bytes=raw[::-1]))


def parse_ad_structures(data: bytes) -> ParsedAdvertisement:
    """Parse advertising (or merged advertising + scan response) data.

    Malformed trailing structures are ignored, as a BLE stack does with a bad length byte.
    """
    out = ParsedAdvertisement()
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length == 0 or offset + 1 + length > len(data):
            break
        ad_type, value = data[offset + 1], bytes(data[offset + 2: offset + 1 + length])
        offset += 1 + length
        if ad_type in _UUID16_LISTS + _UUID32_LISTS + _UUID128_LISTS:
            size = 2 if ad_type in _UUID16_LISTS else 4 if ad_type in _UUID32_LISTS else 16
            for i in range(0, len(value) - size + 1, size):
                text = _uuid_from_le(value[i: i + size])
                if text not in out.service_uuids:
                    out.service_uuids.append(text)
        elif ad_type == _COMPLETE_NAME or (ad_type == _SHORT_NAME and out.local_name is None):
            out.local_name = value.decode("utf-8", "replace")
        elif ad_type == _TX_POWER and len(value) == 1:
            out.tx_power = struct.unpack("b", value)[0]
        elif ad_type in (_SERVICE_DATA16, _SERVICE_DATA32, _SERVICE_DATA128):
            size = {_SERVICE_DATA16: 2, _SERVICE_DATA32: 4, _SERVICE_DATA128: 16}[ad_type]
            if len(value) >= size:
                out.service_data[_uuid_from_le(value[:size])] = value[size:]
        elif ad_type == _MANUFACTURER and len(value) >= 2:
            out.manufacturer_data[struct.unpack("<H", value[:2])[0]] = value[2:]
    return out
