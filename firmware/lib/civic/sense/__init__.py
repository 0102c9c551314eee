"""Pure sensing logic (no hardware access): conversions, counters, detectors, schedules.

Integer arithmetic throughout, so results are the same on an ESP32 (32-bit floats) and in the
simulator (64-bit floats). Hardware objects live in ``civic.hal`` and are passed to the apps.
"""
