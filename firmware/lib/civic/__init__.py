"""civicedge device firmware package (MicroPython, ESP32 and simulator).

Layers: ``wire`` (msgpack, COBS, HMAC, frames, BLE fragments), ``privacy`` (integer
discrete Laplace sampler, noisy release, daily epsilon ledger), ``store`` (atomic files,
persisted seq counter, flash outbox), ``uplink`` (UART and BLE links), ``policy`` and
``report`` (allowlisted report bodies). Hardware objects are always injected.
"""

VERSION = "0.1.0"
