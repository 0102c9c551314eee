"""Raw readings -> physical units, and quantisers (integers only).

ADC values are microvolts from ``ADC.read_uv()`` (factory-calibrated on the ESP32).
"""


def clamp(value, low, high):
    """Return ``value`` limited to ``[low, high]``."""
    if value < low:
        return low
    if value > high:
        return high
    return value


def quantise(value, quantum):
    """Round ``value`` to the nearest multiple of ``quantum`` (halves round up)."""
    if quantum <= 1:
        return value
    return (value + quantum // 2) // quantum * quantum


def round_div(num, den):
    """Integer ``num / den`` rounded to nearest (halves away from zero), ``den`` > 0."""
    if num >= 0:
        return (num + den // 2) // den
    return -((-num + den // 2) // den)


def lux_from_uv(uv, lux_per_volt):
    """Ambient light in lux from the light sensor's ADC microvolts."""
    if uv <= 0:
        return 0
    return uv * lux_per_volt // 1000000


def ma_from_uv(uv, ma_per_volt, offset_uv):
    """Lamp current in mA from the current-sense ADC microvolts (never negative)."""
    uv -= offset_uv
    if uv <= 0:
        return 0
    return uv * ma_per_volt // 1000000


def interpolate(table, x):
    """Piecewise-linear ``y`` at ``x`` on ``table`` = [[x0, y0], [x1, y1], ...] (x increasing).

    Outside the table the end segments' values are held (no extrapolation).
    """
    if x <= table[0][0]:
        return table[0][1]
    last = table[-1]
    if x >= last[0]:
        return last[1]
    i = 1
    while table[i][0] < x:
        i += 1
    x0, y0 = table[i - 1]
    x1, y1 = table[i]
    return y0 + round_div((y1 - y0) * (x - x0), x1 - x0)


def deci_c_from_uv(uv, table):
    """Temperature in tenths of a degree C from the thermistor divider's microvolts.

    ``table`` maps microvolts to whole degrees; interpolation is done in tenths.
    """
    scaled = [[row[0], row[1] * 10] for row in table]
    return interpolate(scaled, uv)


def c_from_deci(deci):
    """Tenths of a degree -> whole degrees, rounded to nearest (the 1 degree C quantum)."""
    return round_div(deci, 10)


def battery_pct(uv, divider_num, divider_den, empty_mv, full_mv):
    """Battery charge 0..100 % (linear between ``empty_mv`` and ``full_mv`` of the cell)."""
    mv = uv * divider_num // divider_den // 1000
    return clamp((mv - empty_mv) * 100 // (full_mv - empty_mv), 0, 100)


SOUND_MM_PER_MS = 343  # speed of sound at 20 degrees C: 343 m/s = 343 mm/ms


def echo_us_to_mm(echo_us):
    """One-way distance in mm from an ultrasonic round-trip echo time in microseconds."""
    return echo_us * SOUND_MM_PER_MS // 2000


def fill_pct(distance_mm, empty_mm, full_mm):
    """Fill level 0..100 % from the distance to the waste surface."""
    return clamp((empty_mm - distance_mm) * 100 // (empty_mm - full_mm), 0, 100)
