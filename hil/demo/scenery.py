"""What happens in the demo city: stimuli timelines for each virtual board (TOML text).

Streetlights see an evening and night with pedestrians at different rates; bins fill up at
different rates, and one of them catches fire a few hours in, so every part of the pipeline
(noisy counts, energy, fill levels, alarms) shows up on the dashboard. A bin's level changes every
30 virtual minutes here, but it releases only the level at the end of each 6-hour period
(firmware/policy.json fill ``release_every_s``): the dashboard shows it at 18:00, 00:00, ...
"""

from __future__ import annotations

import random

STEP_MIN = 30  # bins: a new fill level every 30 virtual minutes


def streetlight_stimuli(index: int, *, rng: random.Random) -> str:
    """An evening: dark, lamp current follows the lamp, a pedestrian every 40-150 s until late."""
    every = rng.choice([40, 60, 90, 120, 150])
    return "\n".join([
        "[set]",
        "light = 4",
        'lamp_current = "auto"',
        "[[at]]",
        f'time = "+{rng.randint(5, 60)}s"',
        f'every = "{every}s"',
        'until = "+5h"',
        'pir = "pulse 2s"',
        "[[at]]",
        'time = "+5h"',
        'every = "600s"',
        'pir = "pulse 2s"',
        "",
    ])


def bin_stimuli(index: int, *, rng: random.Random, hours: int = 24, fire: bool = False) -> str:
    """A bin filling from ~10 % at a bin-specific rate; optionally a fire after 3 virtual hours."""
    empty_mm, full_mm = 1000, 150
    fill = rng.uniform(0.05, 0.3)
    rate_per_step = rng.uniform(0.01, 0.05)
    lines = ["[set]", f"distance = {int(empty_mm - fill * (empty_mm - full_mm))}", "temperature = 14",
             "battery = 87", "tilt = 0", "lid = 0"]
    for step in range(1, hours * 60 // STEP_MIN + 1):
        fill = min(1.0, fill + rate_per_step)
        lines += ["[[at]]", f'time = "+{step * STEP_MIN}m"', f"distance = {int(empty_mm - fill * (empty_mm - full_mm))}"]
        if step % 2 == 0:
            lines += ['lid = "pulse 3s"']
    if fire:
        lines += ["[[at]]", 'time = "+3h"', "temperature = 85"]
    return "\n".join(lines) + "\n"
