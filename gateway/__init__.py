"""civicedge gateway: ingest reports from city sensors over serial and BLE, verify, store, forward."""

__version__ = "0.1.0"
