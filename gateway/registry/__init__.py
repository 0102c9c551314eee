"""Device registry: ids, kinds, zones, locations and per-device keys (owner-only files)."""

from gateway.registry.devices import (
    DeviceRecord,
    Registry,
    generate_key,
    key_fingerprint,
    read_key_file,
    same_decimal,
    same_place,
    validate_device,
)

__all__ = ["DeviceRecord", "Registry", "generate_key", "key_fingerprint", "read_key_file", "same_decimal", "same_place", "validate_device"]
