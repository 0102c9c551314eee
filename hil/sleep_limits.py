"""How fast a deep-sleeping virtual board can run and still report: shared by the scenario checks
(:mod:`hil.scenarios.hints`) and the pytest plugin (:mod:`hil.pytest_plugin.hints`).

A module of its own, importing nothing: ``hil validate``/``hil run`` need the numbers without
loading pytest and the plugin package.
"""

from __future__ import annotations

DEEP_SLEEP_AWAKE_S = 30.0
"""Virtual seconds a deep-sleeping board (firmware/main.py) stays awake after a reading for the
gateway to collect its reports (docs/scenarios.md, "Bins and deep sleep")."""

MIN_AWAKE_WALL_S = 3.0
"""Wall seconds of awake window below which a BLE scan and connect is unlikely to fit."""

MAX_DEEP_SLEEP_SPEED = DEEP_SLEEP_AWAKE_S / MIN_AWAKE_WALL_S
"""Highest speed (virtual s per wall s) at which a deep-sleeping virtual board reliably reports (10x)."""
