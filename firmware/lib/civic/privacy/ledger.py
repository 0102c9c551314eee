"""Per-day epsilon ledger, persisted atomically in flash (milli-epsilon integers).

A day is ``unix_s // 86400`` of the device RTC (UTC). The ledger remembers the latest day it
has seen and what each field spent on it. Rules:

* a day later than the latest seen starts a fresh budget;
* the latest seen day keeps its spending, across reboots and power loss (every grant is
  written to flash *before* the caller may release anything);
* a day earlier than the latest seen (RTC rolled back, or unset after power loss) is
  refused until the clock passes the latest seen day again;
* a damaged ledger file fails closed: the current day counts as fully spent (damaged: a bad
  checksum, or contents that are not what this module writes, e.g. a spend or period end that is
  not an int >= 0);
* a release names the period it covers: the ledger keeps, per field, the end of the last period
  released (in the same atomic write as the grant) and refuses a period that starts before it.
  A reset between a release and the app saving its own state, or a clock set back, cannot
  release one period twice with fresh noise.
"""

import json

from civic.store import atomic

DAY_S = 86400


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
        try:
            raw = atomic.read(path)
        except atomic.CorruptFile:
            raw = None
            self._corrupt = True
        if raw is not None:
            try:
                state = json.loads(raw)
                self._day = _int(state["day"])
                self._spent = _ints(state["spent"])
                self._last = _ints(state.get("last", {}))
            except (ValueError, KeyError, TypeError):
                self._corrupt = True
                self._day = -1
                self._spent = {}
                self._last = {}

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
            if self._corrupt:
                # fail closed: we cannot know what was spent today
                self._spent = dict(self.budgets)
                self._corrupt = False
                self._save()
            else:
                self._spent = {}
        return True

    def _save(self):
        atomic.write(self.path, json.dumps({"day": self._day, "spent": self._spent, "last": self._last}).encode())

    def remaining(self, field, now_s):
        """Milli-epsilon ``field`` may still spend on the day of ``now_s`` (0 if refused)."""
        budget = self._budget(field)
        day = now_s // DAY_S
        if day < self._day:
            return 0
        if day > self._day:
            return 0 if self._corrupt else budget
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
