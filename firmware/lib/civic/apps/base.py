"""What both apps share: guarded reporting and error counting."""

from civic.hal.clock import VALID_AFTER
from civic.privacy.release import RngNotReady


class AppBase:
    """Reporting helpers common to the apps.

    Args:
        reporter: ``civic.report.Reporter`` (``report(t, w, l, m, e)`` / ``alarm(codes, now_s, m)``).
        releaser: ``civic.privacy.release.Releaser`` (``ready()``,
            ``release(field, count, now_s, start, length)``).
        clock: ``civic.hal.clock.Clock`` (``time()``, ``valid()``, ``ticks_ms()``).
        log: callable(str) for console messages.
    """

    def __init__(self, reporter, releaser, clock, log=print):
        self.reporter = reporter
        self.releaser = releaser
        self.clock = clock
        self.log = log
        self.errors = 0
        self.reports = 0
        self.alarms = 0
        # field -> [count, period_start, length, t]: a count whose release had to wait for the
        # RNG (radio off); retried at each sample, carried into the next period if still held then
        self.held = {}

    def _trusted(self, period_start):
        """Whether a period can be reported: the clock is synced and the period began after
        it was (a period that started on an unsynced clock has a meaningless start)."""
        return period_start >= VALID_AFTER and self.clock.valid()

    def _report(self, t, w, l, m, e=None):
        # A report that cannot be built or stored is counted and logged; the sensing goes on.
        try:
            self.reporter.report(t, w, l, m, e)
            self.reports += 1
            return True
        except (ValueError, OSError) as exc:
            self.errors += 1
            self.log("report %s failed: %r" % (t, exc))
            return False

    def _alarm(self, codes, now_s, m=None):
        # Returns the alarm's seq (the bin watches the outbox for it), or None if it failed.
        try:
            seq = self.reporter.alarm(codes, now_s, m)
            self.alarms += 1
            self.log("alarm " + ",".join(codes))
            return seq
        except (ValueError, OSError) as exc:
            self.errors += 1
            self.log("alarm %s failed: %r" % (codes, exc))
            return None

    def _release(self, field, count, period_start, length, t, now_s):
        """Release a people-related count for a finished period, if the clock can be trusted.

        Before the clock is synced the count is dropped: a day of the budget ledger could not
        be told, and losing a count is always safe for privacy. While the RNG is not truly
        random (radio off) the count is held, not lost: :meth:`_retry_held` releases it for
        its own period at a later sample; a count still held when the next period ends is
        added to that period's count and released with it (each event counted once). Holding
        a period is logged once (not at each retry).
        """
        held = self.held.pop(field, None)
        if held is not None:
            count += held[0]
        if not self._trusted(period_start):
            return False
        if not self.releaser.ready():
            if held is None or held[1] != period_start:
                self.log("%s: release held, radio off (no entropy for noise)" % field)
            self.held[field] = [count, period_start, length, t]
            return False
        try:
            value, eps = self.releaser.release(field, count, now_s, period_start, length)
        except RngNotReady:
            # release() checks the RNG itself too: hold, as above
            self.held[field] = [count, period_start, length, t]
            return False
        except OSError as exc:
            # the ledger could not persist the grant (flash full or failing): nothing is released
            self.errors += 1
            self.log("release %s failed: %r" % (field, exc))
            return False
        if not eps:
            return False  # budget for today spent, or this period released already: nothing leaves
        m = {}
        if value is not None:
            m[field] = value
        return self._report(t, period_start, length, m, {field: eps})

    def _retry_held(self, now_s):
        """Try again the releases held for the RNG (see :meth:`_release`). Called at every
        sample: while the radio is off it returns at once, allocating nothing."""
        if not self.releaser.ready():
            return
        for field in list(self.held):
            count, start, length, t = self.held.pop(field)
            self._release(field, count, start, length, t, now_s)
