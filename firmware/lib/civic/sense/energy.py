"""Lamp energy per clock hour, integer mWh.

Reported per hour. The streetlight feeds it the power at the scheduled level: a motion boost's
share is left out (it would count the passes under the lamp, which leave only as a noisy count).
Power is held constant between samples (left Riemann sum); a sample interval that crosses an
hour boundary is split at the boundary.
"""

from civic.sense.window import STEP_BACK_S

HOUR_S = 3600
MAX_GAP_S = 15 * 60


class EnergyIntegrator:
    """Accumulates mW over time into mWh per hour (hour = UTC hour of the device clock)."""

    def __init__(self):
        self.hour = 0           # start (unix s) of the hour being accumulated (set by the first sample)
        self._mj = 0            # millijoules in the current hour
        self._last = None       # (time_s, mW) of the previous sample

    def _add(self, mw, dt_s):
        if dt_s > 0:
            self._mj += mw * dt_s  # mW * s = mJ

    def sample(self, now_s, mw):
        """Feed power ``mw`` at time ``now_s`` (unix seconds, int).

        Returns:
            list of ``[hour_start_s, mwh]`` for hours that finished with this sample. When the
            clock jumps back by more than ``STEP_BACK_S`` (time sync) or samples stop for over
            ``MAX_GAP_S`` (device off), the current hour is closed with what it has and a new one
            starts; the gap is not guessed. A smaller step back adds nothing and keeps the hour
            (even when the clock is back in the previous hour: that one was reported already).
        """
        done = []
        hour_now = now_s // HOUR_S * HOUR_S
        if self._last is None:
            self.hour = hour_now
        else:
            t0, p0 = self._last
            if now_s < t0 - STEP_BACK_S or now_s - t0 > MAX_GAP_S:
                done.append([self.hour, self.mwh()])
                self.hour = hour_now
                self._mj = 0
            elif now_s < t0:
                pass  # set back a little: no energy for the step, the current hour goes on
            else:
                while hour_now > self.hour:
                    boundary = self.hour + HOUR_S
                    self._add(p0, boundary - t0)
                    done.append([self.hour, self.mwh()])
                    self.hour += HOUR_S
                    self._mj = 0
                    t0 = boundary
                self._add(p0, now_s - t0)
        self._last = (now_s, mw)
        return done

    def mwh(self):
        """Energy (mWh) accumulated so far in the current hour."""
        return self._mj // HOUR_S
