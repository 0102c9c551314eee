"""Robust distance from several ultrasonic pings: median with outlier rejection."""

from civic.sense.convert import echo_us_to_mm


def median(values):
    """Median of a non-empty list of ints (mean of the middle two, rounded down, if even)."""
    s = sorted(values)
    n = len(s)
    mid = n // 2
    if n % 2:
        return s[mid]
    return (s[mid - 1] + s[mid]) // 2


def robust_mm(echo_times_us, outlier_mm, min_valid=None):
    """Distance in mm from a set of echo round-trip times, or None if too few are usable.

    Timeouts (negative values from ``machine.time_pulse_us``) and zeros are dropped. Pings
    further than ``outlier_mm`` from the median (a bird, a bag flap, a multipath echo) are
    rejected and the median of the rest is returned. At least ``min_valid`` (default: more
    than half of the pings) must remain, otherwise the reading is not trusted.
    """
    if min_valid is None:
        min_valid = len(echo_times_us) // 2 + 1
    dist = [echo_us_to_mm(t) for t in echo_times_us if t > 0]
    if len(dist) < min_valid:
        return None
    m = median(dist)
    inliers = [d for d in dist if -outlier_mm <= d - m <= outlier_mm]
    if len(inliers) < min_valid:
        return None
    return median(inliers)
