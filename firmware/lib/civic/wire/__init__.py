"""Wire protocol v2 (docs/protocol.md): msgpack subset, COBS, HMAC-SHA256, frames, BLE fragments."""
