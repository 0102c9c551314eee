"""Per-day epsilon ledger, persisted atomically in flash (milli-epsilon integers).

A day is ``unix_s // 86400`` of the device RTC (UTC). The ledger remembers the latest day it
has seen and what each field spent on it. Rules:

* a day later than the latest seen starts a fresh budget;
* the latest seen day keeps its spending, across reboots and power loss (every grant is
  written to flash *before* the caller may release anything);
* a day earlier than the latest seen (RTC rolled back, or unset after power loss) is
  refused until the clock passes the latest seen day again;
* a damaged or unreadable ledger file fails closed: every day up to the latest of today and the
  high-water day (below) counts as fully spent (damaged: a bad checksum, a read error, or contents
  that are not what this module writes, e.g. a spend or period end that is not an int >= 0);
* a release names the period it covers: the ledger keeps, per field, the end of the last period
  released (in the same atomic write as the grant) and refuses a period that starts before it.
  A reset between a release and the app saving its own state, or a clock set back, cannot
  release one period twice with fresh noise.

The high-water file (``path + ".hw"``) holds the same state again (latest day, that day's spend,
period ends), written atomically *before* the ledger at every save: it is never behind the ledger.
While both are readable the later values win: the later day (with that file's spend), per field the
larger spend on a common day and the later period end. An older ledger copied back beside a newer
high-water file therefore reopens nothing, and a power loss between the two writes counts the cut
grant as spent (nothing was released; at most that grant's epsilon is lost). A high-water file
written by older firmware has no spend: when it is ahead of the ledger, its day fails closed. When
the ledger is damaged or missing but the high-water file survives, the fail-closed day is the later
of the high-water day and today, and its period ends still refuse those periods. Only with both gone
(or both damaged) does the fail-closed rule cover just the day the clock shows when the damage is
found.
"""

import json

from civic.store import atomic

DAY_S = 86400
HW_SUFFIX = ".hw"


class BudgetError(ValueError):
    """A ledger request is invalid (unknown field, bad amount).

    Attributes:
        field: the field concerned.
    """

    def __init__(self, field, detail):
        super().__init__("ledger: %s: %s" % (field, detail))
        self.field = field


def _int(v):
    # bool is an int subclass, and JSON also gives floats, strings and null: all damage here
    if type(v) is not int or v < 0:
        raise ValueError("ledger: not an int >= 0")
    return v


def _ints(d):
    """``d`` (field -> int >= 0) as a dict; ValueError or TypeError when it is not one."""
    d = dict(d)
    for v in d.values():
        _int(v)
    return d


class Ledger:
    """Daily epsilon budgets per field.

    Args:
        path: flash file holding the ledger (e.g. ``/ledger.json``).
        budgets: dict field -> daily budget in milli-epsilon (from policy.json).
    """

    def __init__(self, path, budgets):
        self.path = path
        self.budgets = dict(budgets)
        self.refused = 0
        self._corrupt = False
        self._day = -1
        self._spent = {}
        self._last = {}  # field -> end (unix s) of the last period released
        state = self._read(path, True)
        hw = self._read(path + HW_SUFFIX, False)
        if state:
            self._day = state["day"]
            self._spent = state["spent"]
            self._last = state["last"]
            if hw:
                self._later(hw)
            return
        # ledger damaged (False) or missing (None); a missing one is damage too when the
        # high-water file (written before it) is there
        if state is None and hw is None:
            return  # nothing ever written: a fresh ledger
        self._corrupt = True
        if hw:
            self._day = hw["day"]
            self._last = hw["last"]

    def _later(self, hw):
        """Take the later of the ledger's and the high-water file's values (both readable).

        The high-water file is written first, so it is ahead after a power loss between the two
        writes, or when an older ledger was copied back over a newer one (privacy audit LOW-2:
        the older copy alone decided and released periods again)."""
        behind = False
        last = self._last
        for f, end in hw["last"].items():
            if end > last.get(f, 0):
                last[f] = end
                behind = True
        spent = hw["spent"]
        if hw["day"] > self._day:
            self._day = hw["day"]
            self._spent = {} if spent is None else spent
            behind = True
        elif hw["day"] == self._day and spent is not None:
            for f, v in spent.items():
                if v > self._spent.get(f, 0):
                    self._spent[f] = v
        if behind and spent is None:
            self._corrupt = True  # older firmware's high-water file: its day's spend is unknown

    @staticmethod
    def _read(path, with_spent):
        """The file's state (dict), None if absent, False if damaged or unreadable.

        ``with_spent``: the spend is required (the ledger); otherwise it is optional and None when
        absent (a high-water file written by older firmware)."""
        try:
            raw = atomic.read(path)
        except atomic.CorruptFile:
            return False
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            state = {"day": _int(doc["day"]), "last": _ints(doc.get("last", {}))}
            if with_spent or "spent" in doc:
                state["spent"] = _ints(doc["spent"])
            else:
                state["spent"] = None
            return state
        except (ValueError, KeyError, TypeError):
            return False

    @property
    def latest_day(self):
        """The latest day (unix_s // 86400) this ledger has seen, or -1."""
        return self._day

    def _budget(self, field):
        b = self.budgets.get(field)
        if b is None:
            raise BudgetError(field, "no daily budget in the policy")
        return b

    def _roll(self, day):
        """Move to ``day`` if it is new; return False if ``day`` is in the past."""
        if day < self._day:
            return False
        if day > self._day:
            self._day = day
            self._spent = {}
        return True

    def _close(self, day):
        """Damaged ledger: count every day up to ``day`` or the high-water day as fully spent."""
        # what was spent then is unknown; no grant was written after the high-water day
        self._day = max(self._day, day)
        self._spent = dict(self.budgets)
        self._corrupt = False
        self._save()

    def _save(self):
        # the high-water file first: after a power loss between the two it is ahead, never behind
        raw = json.dumps({"day": self._day, "spent": self._spent, "last": self._last}).encode()
        atomic.write(self.path + HW_SUFFIX, raw)
        atomic.write(self.path, raw)

    def remaining(self, field, now_s):
        """Milli-epsilon ``field`` may still spend on the day of ``now_s`` (0 if refused)."""
        budget = self._budget(field)
        day = now_s // DAY_S
        if day < self._day or self._corrupt:
            return 0
        if day > self._day:
            return budget
        return max(0, budget - self._spent.get(field, 0))

    def spend(self, field, milli, now_s, start=None, end=None):
        """Grant and persist ``milli`` for ``field`` on the day of ``now_s``.

        Args:
            start, end: the period the release covers (unix s). When given, a period that starts
                before the end of the last one released is refused, and ``end`` is written with
                the grant.

        Returns:
            True if granted (already written to flash), False if refused: budget spent,
            ``now_s`` falls on a day before the latest seen day (clock rollback), or the period
            was released already.

        Raises:
            BudgetError: unknown field or non-positive amount.
        """
        budget = self._budget(field)
        if not isinstance(milli, int) or milli < 1:
            raise BudgetError(field, "amount must be an int >= 1 milli-epsilon")
        if self._corrupt:
            self._close(now_s // DAY_S)
        if start is not None and start < self._last.get(field, 0):
            self.refused += 1
            return False
        if not self._roll(now_s // DAY_S):
            self.refused += 1
            return False
        spent = self._spent.get(field, 0)
        if spent + milli > budget:
            self.refused += 1
            return False
        self._spent[field] = spent + milli
        if end is not None:
            self._last[field] = end
        self._save()
        return True
