"""Window aggregation helpers (integers only)."""

# A time sync may set the clock back a little: a clock that ran fast, a gateway a few seconds
# behind, or (in the simulator at high speed) an ACK's transit time scaled up. A step back of up
# to this many seconds leaves the app in the period it is in: closing that period and living
# through the previous one again would report the previous period twice.
STEP_BACK_S = 300


def period_start(now_s, length_s):
    """Start of the period of ``length_s`` containing ``now_s`` (a multiple of the length)."""
    return now_s - now_s % length_s


def period_for(current, now_s, length_s):
    """The period (start) ``now_s`` belongs to, given the ``current`` one (None: none yet).

    Normally ``period_start(now_s, length_s)``; but when the clock was set back by at most
    :data:`STEP_BACK_S` into an earlier period, the current period goes on until the clock has
    caught up. A larger step back (a clock that was far ahead) moves to the earlier period.
    """
    p = period_start(now_s, length_s)
    if current is not None and p < current and current - now_s <= STEP_BACK_S:
        return current
    return p


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
