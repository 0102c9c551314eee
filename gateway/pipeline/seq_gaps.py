"""Which seqs a device no longer holds were acknowledged before, by someone, and are not in this store.

A report's ``h`` (docs/protocol.md §2) leaves out every lower seq the device no longer holds, and the
gateway acknowledges past those at once (``civicedge_seqs_not_held_total``). A seq leaves a board's
outbox in one of three ways, or was never framed:

* skipped at a reboot: the seq counter (firmware ``civic.store.seq``) resumes above its reservation,
  blocks of 32, so one boot skips at most :data:`REBOOT_SKIP_MAX` seqs (a deep-sleeping bin at every
  reporting wake); a board new to this store (provisioned with ``--seq-start``, or served by another
  gateway before) starts above 1;
* dropped at the outbox cap (firmware ``civic.store.outbox``, 64 entries): only while the outbox is
  full, so the report framed then states :data:`OUTBOX_FULL_HELD` held seqs below it, or more;
* acknowledged: by this gateway, and then in its store, unless the store is an older one (a restored
  backup, a store moved or replaced), or by another gateway (a board on two gateways).

A stretch above a floor this store has, longer than one reboot skips, that the device's freshest
``h`` leaves out while its outbox was not full, holds seqs that were framed and acknowledged
elsewhere or before: :func:`acknowledged_before`. Shorter stretches cannot be told from a reboot's
skip (``h`` does not say why a seq is missing) and stay counted only.
"""

from __future__ import annotations

# firmware civic.store.seq reserves blocks of 32 seqs ahead of use: a reboot skips at most 31
REBOOT_SKIP_MAX = 31
# firmware civic.store.outbox holds 64 entries: a report framed into a full one (after the cap made room)
# states 63 held seqs below it, or more (its h merges the runs above the 7th into one)
OUTBOX_FULL_HELD = 63


def held_count(runs: tuple[int, ...]) -> int:
    """How many seqs the runs ``first, last, ...`` of an ``h`` state as held."""
    return sum(runs[i + 1] - runs[i] + 1 for i in range(0, len(runs) - 1, 2))


def acknowledged_before(floor: int, last: int, runs: tuple[int, ...]) -> bool:
    """Whether seqs ``floor + 1 .. last``, which the device's freshest ``h`` (``runs``) leaves out, were
    acknowledged before (by this gateway on a newer store, or by another gateway) and are not in this store.

    False for a device this store has no floor for (``floor`` 0: new here), for a stretch one reboot's
    seq reservation can skip, and while that ``h`` shows a full outbox (dropped at its cap).
    """
    if floor < 1 or last - floor <= REBOOT_SKIP_MAX:
        return False
    return held_count(runs) < OUTBOX_FULL_HELD
