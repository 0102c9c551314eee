"""When a device counts as silent ("stale"): one rule for the operator views and the open data.

``/api/devices`` and the dashboard call such a device ``stale``; the open data must not go on
publishing its last state as the current one (a lamp ``on``, a bin ``ok``) while they do.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from gateway.web.views import DeviceView

# A device is silent after this many of its kind's windows without a stored report: one late or lost
# window (a radio outage, the outbox resending) is not yet silence.
STALE_WINDOWS = 3
DEFAULT_WINDOW_S = 900


def window_of(policy: Mapping[str, Any], kind: str) -> int:
    """The window length in seconds of devices of ``kind`` (policy ``kinds.<kind>.window_s``, else the
    policy default, else 15 minutes)."""
    spec = policy.get("kinds", {}).get(kind, {})
    return int(spec.get("window_s", policy.get("defaults", {}).get("window_s", DEFAULT_WINDOW_S)))


def is_stale(dev: DeviceView, *, now: int, policy: Mapping[str, Any]) -> bool:
    """True when ``dev`` reported once but nothing was stored from it for more than
    :data:`STALE_WINDOWS` windows of its kind before ``now``. A device that never reported is not
    stale (it is "never" seen)."""
    return dev.last_seen is not None and now - dev.last_seen > STALE_WINDOWS * window_of(policy, dev.kind)


def stale_ids(devices: Iterable[DeviceView], *, now: int, policy: Mapping[str, Any]) -> frozenset[str]:
    """The ids of the stale devices among ``devices`` (see :func:`is_stale`)."""
    return frozenset(d.id for d in devices if is_stale(d, now=now, policy=policy))
