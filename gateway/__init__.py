"""civicedge gateway: ingest reports from city sensors over serial and BLE, verify, store, forward."""

# The host's single version literal: pyproject.toml reads it (dynamic version), hil re-exports it.
# firmware/lib/civic/__init__.py keeps its own (a device has no package metadata); a test holds them equal.
__version__ = "0.2.0"
