"""Release of people-related counts: count + discrete Laplace noise, suppressed below k.

The suppression decision uses the *noisy* value (deciding on the true count would leak it).
Each release is charged to the daily ledger before any noise is drawn or value returned.
"""

import os

from civic.privacy import dlaplace


class ReleaseError(ValueError):
    """A release request is invalid.

    Attributes:
        field: the field concerned.
    """

    def __init__(self, field, detail):
        super().__init__("release: %s: %s" % (field, detail))
        self.field = field


def noisy_count(count, eps_milli, k, rand=os.urandom):
    """Return ``count`` + DLap(1000/eps_milli) noise, or None if the noisy value is < ``k``."""
    if not isinstance(count, int) or count < 0:
        raise ValueError("release: count must be an int >= 0")
    noisy = count + dlaplace.noise_for_milli_eps(eps_milli, rand)
    if noisy < k:
        return None
    return noisy


class RngNotReady(ReleaseError):
    """The hardware RNG is not known to be truly random right now (ESP32: radio off).

    Nothing was spent; retry the release once the radio is on.
    """


class Releaser:
    """Releases the ``noisy_count`` fields of one device kind, charging the ledger.

    Args:
        fields: the kind's ``fields`` dict from policy.json.
        ledger: a :class:`civic.privacy.ledger.Ledger`.
        rand: byte source (``os.urandom``; injectable for simulation only).
        rng_ready: optional callable returning True when ``os.urandom`` is truly random
            (on an ESP32: Wi-Fi or BLE active, or the bootloader RNG source enabled).
    """

    def __init__(self, fields, ledger, rand=os.urandom, rng_ready=None):
        self.fields = fields
        self.ledger = ledger
        self.rand = rand
        self.rng_ready = rng_ready
        self.suppressed = 0

    def ready(self):
        """Whether noise can be drawn now (``rng_ready`` says yes, or there is none): a cheap
        check that allocates nothing, for callers that retry often."""
        return self.rng_ready is None or self.rng_ready()

    def release(self, field, count, now_s, start=None, length=None):
        """Release one window's ``count`` of ``field``.

        ``start``/``length`` name the period released: the ledger refuses a period released
        already (see :meth:`civic.privacy.ledger.Ledger.spend`).

        Returns:
            tuple (value, eps_milli): ``value`` is the noisy count or None when it must be
            left out (suppressed below k, or budget or period refused); ``eps_milli`` is what this
            release spent (0 when refused). Put ``value`` in the report's ``m`` only when it
            is not None, and a non-zero ``eps_milli`` in ``e``.

        Raises:
            ReleaseError: ``field`` is not a noisy_count field of this kind, or bad count.
            RngNotReady: ``rng_ready()`` said no; nothing was spent, retry later.
        """
        spec = self.fields.get(field)
        if spec is None or spec.get("release") != "noisy_count":
            raise ReleaseError(field, "not a noisy_count field of this kind")
        if not isinstance(count, int) or count < 0:
            raise ReleaseError(field, "count must be an int >= 0")
        eps = spec["eps_per_release_milli"]
        if not self.ready():
            raise RngNotReady(field, "hardware RNG not ready (radio off)")
        end = None if start is None else start + length
        if not self.ledger.spend(field, eps, now_s, start, end):
            return None, 0
        value = noisy_count(count, eps, spec["k"], self.rand)
        if value is None:
            self.suppressed += 1
        return value, eps
