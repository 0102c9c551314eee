"""Is the machine running the boards at the requested speed?

Samples of (wall time, virtual time) over a sliding window: ``civicedge demo`` warns when virtual
time ran below 80 % of the speed (the whole demo runs slower than asked; its gateway's ``[sim_clock]``
follows the boards through ``follow_file``), a scenario run fails below 5 % (hil/scenarios/runner.py:
the simulator cannot keep up at all; its gateway's fixed ``[sim_clock]`` runs ahead of the boards).
"""

from __future__ import annotations

WINDOW_S = 30.0
MIN_FRACTION = 0.8


class PaceWatch:
    """Samples (wall s, virtual ms) and tells when virtual time ran too slowly over a whole window."""

    def __init__(self, speed: float, *, window_s: float = WINDOW_S, min_fraction: float = MIN_FRACTION) -> None:
        self.speed = speed
        self.window_s = window_s
        self.min_fraction = min_fraction
        self.samples: list[tuple[float, float]] = []

    def check(self, wall_s: float, virtual_ms: float) -> float | None:
        """Record a sample; return the achieved speed when, over the last ``window_s`` of wall time,
        it was below ``min_fraction`` of the requested speed, else None."""
        self.samples.append((wall_s, virtual_ms))
        while len(self.samples) > 2 and wall_s - self.samples[1][0] >= self.window_s:
            self.samples.pop(0)
        w0, v0 = self.samples[0]
        if wall_s - w0 < self.window_s:
            return None
        achieved = (virtual_ms - v0) / 1000 / (wall_s - w0)
        return achieved if achieved < self.min_fraction * self.speed else None
