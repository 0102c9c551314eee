"""Window aggregation helpers (integers only)."""


def period_start(now_s, length_s):
    """Start of the period of ``length_s`` containing ``now_s`` (a multiple of the length)."""
    return now_s - now_s % length_s


class Mean:
    """Running integer mean; ``take()`` returns the rounded mean (None if empty) and resets."""

    def __init__(self):
        self.total = 0
        self.n = 0

    def add(self, value):
        self.total += value
        self.n += 1

    def take(self):
        if not self.n:
            return None
        mean = (2 * self.total + self.n) // (2 * self.n)  # round half up
        self.total = 0
        self.n = 0
        return mean
