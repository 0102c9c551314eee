"""Device registry: ids, kinds, zones, locations and per-device keys (owner-only files)."""

from gateway.registry.devices import (
    DeviceRecord,
    Registry,
    decimal_text,
    generate_key,
    key_fingerprint,
    read_key_file,
    same_decimal,
    same_place,
    unsigned_zero,
    validate_device,
)

__all__ = ["DeviceRecord", "Registry", "decimal_text", "generate_key", "key_fingerprint", "read_key_file", "same_decimal", "same_place", "unsigned_zero", "validate_device"]
