"""BLE addresses on the virtual radio: random static, derived from a board id."""

from __future__ import annotations

import hashlib
import secrets

# Same derivation in hil/sim/mpy/bluetooth.py (MicroPython side): keep them in step.
ADDRESS_SALT = b"civicedge-ble-addr:"


def board_address_bytes(board_id: str) -> bytes:
    """The 6 address bytes (most significant first) of a board's random static address.

    SHA-256 of the id, first 6 bytes, with the two top bits set as the Core spec requires
    for a static random address. Deterministic, so a board keeps its address across restarts.
    """
    raw = bytearray(hashlib.sha256(ADDRESS_SALT + board_id.encode("utf-8")).digest()[:6])
    raw[0] |= 0xC0
    return bytes(raw)


def board_address(board_id: str) -> str:
    """The board's random static address as ``AA:BB:CC:DD:EE:FF``."""
    return format_address(board_address_bytes(board_id))


def random_static_address() -> str:
    """A fresh random static address (for centrals, e.g. one per bleak adapter)."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] |= 0xC0
    return format_address(bytes(raw))


def format_address(raw: bytes) -> str:
    """Format 6 bytes (most significant first) as ``AA:BB:CC:DD:EE:FF``."""
    return ":".join(f"{b:02X}" for b in raw)
