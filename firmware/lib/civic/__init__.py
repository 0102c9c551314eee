"""civicedge device firmware package (MicroPython, ESP32 and simulator).

Layers: ``wire`` (msgpack, COBS, HMAC, frames, BLE fragments), ``privacy`` (integer
discrete Laplace sampler, noisy release, daily epsilon ledger), ``store`` (atomic files,
persisted seq counter, flash outbox), ``uplink`` (UART and BLE links), ``policy`` and
``report`` (allowlisted report bodies). Hardware objects are always injected.
"""

VERSION = "0.2.0"

LINK_TEST = "linktest"
"""Name (in the flash root) of ``civicedge check``'s one-shot request for a boot report at the
restart it makes (:func:`civic.hal.boot.take_link_test`). check writes the request only to a
firmware that names it here, so an older firmware is never left a request it would not take."""
