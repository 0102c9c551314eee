"""Virtual boards: the unchanged firmware in the official MicroPython WebAssembly runtime (Node)."""

from __future__ import annotations

from pathlib import Path

SIM_DIR = Path(__file__).resolve().parent
"""Directory holding the Node host (``package.json``, lockfile, ``*.mjs``)."""
