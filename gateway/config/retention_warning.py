"""The warning for retentions shorter than ``[retention] interval_s`` (no I/O; shared by ``gateway run``'s
start check and the admin API's ``PUT /api/admin/retention``).

A pass removes what is past its retention at the time it runs, so a value can outlive its retention by up
to ``interval_s``: for a retention shorter than that, by more than the retention itself. Such a retention
is still honoured (within retention + interval, at most 8 days: ``interval_s`` is at most 7 days, a
retention at least 1), so it is a warning, not a refusal. The policy's own retentions (90 days and more)
are never shorter than the longest interval allowed.
"""

from __future__ import annotations

from typing import Mapping


def retention_interval_warning(retentions: Mapping[tuple[str, str], int], interval_s: float, *,
                               configured: Mapping[tuple[str, str], int] | None = None) -> str | None:
    """The warning for the retentions shorter than ``interval_s``, or None.

    Args:
        retentions: ``(kind, field) -> days`` in effect (the policy's, ``[retention.<kind>]``'s, the admin
            API's ``retention.json``), or just the ones being set.
        interval_s: ``[retention] interval_s``.
        configured: the config's ``[retention.<kind>]`` values: a retention equal to its value there is
            named by that key, any other as set through the admin API.
    """
    short = sorted((days, kind, fld) for (kind, fld), days in retentions.items() if days * 86400 < interval_s)
    if not short:
        return None
    configured = configured or {}
    keys = ", ".join(("[retention.%s] %s = %s" if configured.get((kind, fld)) == days else
                      "%s.%s = %s (set through PUT /api/admin/retention, kept in retention.json)")
                     % (kind, fld, _days(days * 86400)) for days, kind, fld in short)
    shortest = short[0][0]
    return ("[retention] interval_s = %s (%s) is longer than %s: a pass runs only every interval_s, so such values "
            "outlive their retention by up to %s (kept up to %s instead of %s); set [retention] interval_s to at "
            "most %d (the shortest retention, in seconds) or lengthen those retentions"
            % (_number(interval_s), _days(interval_s), keys, _days(interval_s), _days(shortest * 86400 + interval_s),
               _days(shortest * 86400), shortest * 86400))


def _number(value: float) -> str:
    """``value`` with up to 3 decimals and no trailing zeros (``%g`` would show 172800.5 as 172800)."""
    return ("%.3f" % value).rstrip("0").rstrip(".")


def _days(seconds: float) -> str:
    """``seconds`` for messages: ``2 days``, ``1.5 days``, ``1 day``; ``about 2 days`` when rounded to two
    decimals (a message must not say "2 days is longer than 2 days")."""
    days = round(seconds / 86400, 2)
    exact = days * 86400 == seconds
    return "%s%g day%s" % ("" if exact else "about ", days, "" if days == 1 else "s")
