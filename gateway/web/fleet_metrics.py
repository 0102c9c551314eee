"""Fleet gauges for /metrics, computed at each scrape from the fleet view ``/api/devices`` shows.

``civicedge_devices{kind, status}`` counts devices by :func:`gateway.web.read_api.device_status`
(ok, alarm, stale, never, revoked, retired) and ``civicedge_open_alarms{kind, code}`` the open alarms, with
every kind of the policy (and, for alarms, every code its kind declares) pre-set to 0, so an alert
sees a 0 before the first one. Labels are bounded: no device ids (a fleet of 1,000 devices).
``civicedge_devices_dated_ahead{kind}`` counts devices dated more than :data:`DATED_AHEAD_S` after the
gateway's clock (:func:`dated_ahead`): by their last stored report's period end (a board whose clock runs
ahead, set ahead by a gateway clock that was, docs/gateway.md "Boards set ahead by a wrong gateway clock"), or
by the end of a newest value they show (``latest_at``: the NGSI-LD ``observedAt`` open data publishes), which
stays in the future after the board reports right again (one report dated years ahead is its newest value
for years: the audit found it not counted when counted by the last report alone).

The counts come from the incrementally refreshed fleet snapshot (:mod:`gateway.web.snapshot`), so a
scrape reads only what was stored since the previous read. The snapshot's first load reads the
whole store (seconds on a large one): a scrape waits for it at most :data:`SCRAPE_WAIT_S` and the
load goes on in the background.

When the view is not there in time (the quick read thread busy with a probe or a re-read, a load
going on) the scrape serves the last counts read, kept in memory, and
``civicedge_fleet_view_age_seconds`` says how old they are: a series that vanished for one scrape went
stale in Prometheus, which resolved and fired an alert without ``for:`` again (a second page) and
restarted the ``for:`` of the others. Only when no read ever succeeded, or the read failed with an
error (the store cannot be read), do the two gauges have no samples; ``civicedge_fleet_view_up`` is 1
when they have samples (fresh or last counts), 0 when they have none.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter as Tally
from typing import Any, Mapping, Tuple

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from gateway.log_limit import LogLimiter, more_since
from gateway.web.context import WebContext
from gateway.web.read_api import device_status
from gateway.web.views import DeviceView

log = logging.getLogger(__name__)

STATUSES = ("ok", "alarm", "stale", "never", "revoked", "retired")
# A value whose period ends later than this after the gateway's clock was dated by a clock running ahead: a
# board sends a window when it closes, and its clock is synced within seconds (protocol §3).
DATED_AHEAD_S = 900
# What a scrape waits for the fleet view: Prometheus' default scrape timeout is 10 s.
SCRAPE_WAIT_S = 3.0
FAILURE_LOG_EVERY_S = 600.0
_failure_log = LogLimiter(FAILURE_LOG_EVERY_S, time.monotonic)

# (devices by (kind, status), open alarms by (kind, code), devices dated ahead by kind)
Counts = Tuple[Tally[Tuple[str, str]], Tally[Tuple[str, str]], Tally[str]]
# The last counts read per fleet source (one per app), and when (time.monotonic()).
_last: "weakref.WeakKeyDictionary[Any, tuple[Counts, float]]" = weakref.WeakKeyDictionary()


def alarm_codes(policy: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Kind -> the alarm codes the policy declares for it (``kinds.<kind>.alarms``), sorted."""
    return {kind: tuple(sorted(spec.get("alarms", {}))) for kind, spec in policy.get("kinds", {}).items()}


def fleet_exposition(counts: Counts | None, policy: Mapping[str, Any], *, age_s: float = 0.0) -> bytes:
    """The fleet gauges in the Prometheus text format: ``counts`` is (devices by (kind, status), open
    alarms by (kind, code)), read ``age_s`` seconds ago (0: for this scrape), or None when there are none
    to serve (then only ``civicedge_fleet_view_up 0`` and the gauges' HELP and TYPE, without samples)."""
    registry = CollectorRegistry(auto_describe=True)
    up = Gauge("civicedge_fleet_view_up", "1 if civicedge_devices and civicedge_open_alarms have samples (read for "
               "this scrape, or the last counts read when the read took longer than 3 s: see "
               "civicedge_fleet_view_age_seconds); 0: no samples (the store could not be read, or no read "
               "succeeded since the start)", registry=registry)
    age = Gauge("civicedge_fleet_view_age_seconds", "Age of the counts civicedge_devices and civicedge_open_alarms "
                "show: 0 when read for this scrape, else seconds since the last read that succeeded; absent "
                "when civicedge_fleet_view_up is 0", registry=registry)
    devices = Gauge("civicedge_devices", "Devices by kind and status as /api/devices shows them (ok, alarm, stale: "
                    "silent for 3 windows of its kind, never: no report yet, revoked, retired: moved to another gateway or "
                    "taken out of service, never stale); absent when "
                    "civicedge_fleet_view_up is 0", ["kind", "status"], registry=registry)
    alarms = Gauge("civicedge_open_alarms", "Open alarms (raised in the last 24 h and not cleared) by kind and "
                   "code, of devices neither retired nor revoked (their frames are refused: nothing could clear "
                   "them); absent when civicedge_fleet_view_up is 0", ["kind", "code"], registry=registry)
    ahead = Gauge("civicedge_devices_dated_ahead", "Devices whose last stored report's period, or a newest value's "
                  "period (latest_at, the observedAt open data shows), ends more than %d s after the gateway's clock "
                  "(a board clock running ahead, now or when it dated that value), by kind; absent when "
                  "civicedge_fleet_view_up is 0" % DATED_AHEAD_S, ["kind"], registry=registry)
    up.set(0 if counts is None else 1)
    if counts is not None:
        age.set(round(age_s, 3))
        by_status, by_code, by_ahead = counts
        codes = alarm_codes(policy)
        for kind in sorted(set(codes) | {k for k, _ in by_status}):
            for status in STATUSES:
                devices.labels(kind, status).set(by_status.get((kind, status), 0))
            ahead.labels(kind).set(by_ahead.get(kind, 0))
        for kind, code in sorted({(k, c) for k, cs in codes.items() for c in cs} | set(by_code)):
            alarms.labels(kind, code).set(by_code.get((kind, code), 0))
    else:
        registry.unregister(age)
    return generate_latest(registry)


async def fleet_view(ctx: WebContext) -> tuple[Counts | None, float]:
    """The counts to serve and their age in seconds: read for this scrape (age 0); when the read is not
    done within :data:`SCRAPE_WAIT_S`, the last counts read (None before any); None when the read failed
    with an error. A failure or a timeout is logged at most once per :data:`FAILURE_LOG_EVERY_S`."""
    try:
        counts = await fleet_counts(ctx)
    except TimeoutError:
        last = _last.get(ctx.fleet)
        _log_failure("not read within %.0f s" % SCRAPE_WAIT_S,
                     "the last counts served" if last is not None else "civicedge_devices and "
                     "civicedge_open_alarms left out (no read succeeded yet)")
        return (None, 0.0) if last is None else (last[0], time.monotonic() - last[1])
    except Exception as exc:  # noqa: BLE001 - any store failure leaves the gauges absent, never fails /metrics
        _log_failure(type(exc).__name__, "civicedge_devices and civicedge_open_alarms left out")
        return None, 0.0
    _last[ctx.fleet] = (counts, time.monotonic())
    return counts, 0.0


def _log_failure(why: str, outcome: str) -> None:
    skipped = _failure_log.allow()
    if skipped is not None:
        log.warning("/metrics: fleet view unavailable (%s): %s%s", why, outcome,
                    more_since(skipped, "scrape(s) without a fresh view"))


async def fleet_counts(ctx: WebContext) -> Counts:
    """(devices by (kind, status), open alarms by (kind, code), devices dated ahead by kind) as of now.
    The alarms of retired and revoked devices are not counted (no report of theirs is stored to clear them).

    Raises:
        TimeoutError: the fleet view was not read within :data:`SCRAPE_WAIT_S` (the read goes on).
        Exception: whatever the store's read raised.
    """
    # devices() awaits a shielded load/refresh: a timeout here leaves it running for the next scrape.
    fleet = await asyncio.wait_for(ctx.fleet.devices(), SCRAPE_WAIT_S)
    now = ctx.now()
    by_status: Tally[tuple[str, str]] = Tally()
    by_code: Tally[tuple[str, str]] = Tally()
    by_ahead: Tally[str] = Tally()
    for dev in fleet:
        by_status[(dev.kind, device_status(dev, now=now, policy=ctx.policy))] += 1
        # Not a retired or revoked device's: its frames are refused, so no report can clear its alarm, and
        # a bin taken off the street after a fire alarm would keep CivicedgeFireAlarm (page) firing 24 h.
        if not (dev.retired or dev.revoked):
            for alarm in dev.alarms:
                by_code[(dev.kind, alarm.code)] += 1
        if dated_ahead(dev, now):
            by_ahead[dev.kind] += 1
    return by_status, by_code, by_ahead


def dated_ahead(dev: DeviceView, now: float) -> bool:
    """Whether ``dev`` is dated more than :data:`DATED_AHEAD_S` after ``now`` (the gateway's clock): its last
    stored report's period ends then (its board's clock runs ahead now), or a newest value it shows does (its
    ``latest_at``, which the open data publishes as ``observedAt``). The second stays true after the board is
    put right (a power cycle: it reports right at once) until that time comes or the value is replaced by a
    later one: the future time is what open data shows, whichever clock made it."""
    ends = [end for end in (dev.last_end, *dev.latest_at.values()) if end is not None]
    return bool(ends) and max(ends) > now + DATED_AHEAD_S
