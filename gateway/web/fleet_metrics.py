"""Fleet gauges for /metrics, computed at each scrape from the fleet view ``/api/devices`` shows.

``civicedge_devices{kind, status}`` counts devices by :func:`gateway.web.read_api.device_status`
(ok, alarm, stale, never, revoked, retired) and ``civicedge_open_alarms{kind, code}`` the open alarms, with
every kind of the policy (and, for alarms, every code its kind declares) pre-set to 0, so an alert
sees a 0 before the first one. Labels are bounded: no device ids (a fleet of 1,000 devices).
``civicedge_devices_dated_ahead{kind}`` counts devices whose last stored report's period ends more than
:data:`DATED_AHEAD_S` after the gateway's clock: a board whose clock runs ahead now (set ahead by a gateway
clock that was, docs/gateway.md "Boards set ahead by a wrong gateway clock"); it falls back once the board is
put right, so its alert can clear. ``civicedge_devices_values_ahead{kind}`` counts devices open data lists
(neither retired nor revoked) showing a newest value (``latest_at``, the NGSI-LD ``observedAt`` open data
publishes) whose period ends that far ahead: such a value stays the newest after the board reports right
again, until its time comes (one report dated years ahead is shown for years; the audit found nothing
counting it), so it is a gauge to look at, not an alert.

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
Counts = Tuple[Tally[Tuple[str, str]], Tally[Tuple[str, str]], Tally[str], Tally[str]]
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
    ahead = Gauge("civicedge_devices_dated_ahead", "Devices whose last stored report's period ends more than %d s after "
                  "the gateway's clock (the board's clock runs ahead; open data shows it with a future time), by "
                  "kind; absent when civicedge_fleet_view_up is 0" % DATED_AHEAD_S, ["kind"], registry=registry)
    values_ahead = Gauge("civicedge_devices_values_ahead", "Devices open data lists (neither retired nor revoked) "
                         "showing a newest value (latest_at, the observedAt open data shows) whose period ends more "
                         "than %d s after the gateway's clock, also when their board reports right again (until "
                         "that time comes), by kind; absent when civicedge_fleet_view_up is 0" % DATED_AHEAD_S,
                         ["kind"], registry=registry)
    up.set(0 if counts is None else 1)
    if counts is not None:
        age.set(round(age_s, 3))
        by_status, by_code, by_ahead, by_values_ahead = counts
        codes = alarm_codes(policy)
        for kind in sorted(set(codes) | {k for k, _ in by_status}):
            for status in STATUSES:
                devices.labels(kind, status).set(by_status.get((kind, status), 0))
            ahead.labels(kind).set(by_ahead.get(kind, 0))
            values_ahead.labels(kind).set(by_values_ahead.get(kind, 0))
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
    """(devices by (kind, status), open alarms by (kind, code), devices dated ahead and devices showing values
    dated ahead, by kind) as of now.
    The alarms of retired and revoked devices are not counted (no report of theirs is stored to clear them), nor
    their values dated ahead (open data does not list them: it shows none of their times).

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
    by_values_ahead: Tally[str] = Tally()
    for dev in fleet:
        by_status[(dev.kind, device_status(dev, now=now, policy=ctx.policy))] += 1
        # Not a retired or revoked device's: its frames are refused, so no report can clear its alarm, and
        # a bin taken off the street after a fire alarm would keep CivicedgeFireAlarm (page) firing 24 h.
        if not (dev.retired or dev.revoked):
            for alarm in dev.alarms:
                by_code[(dev.kind, alarm.code)] += 1
        # by its last stored report, not its newest values: a board fixed since (power-cycled) reports
        # right again at once, while its future-dated values stay the newest until their time comes
        if dev.last_end is not None and dev.last_end > now + DATED_AHEAD_S:
            by_ahead[dev.kind] += 1
        # only what open data shows: it lists neither a revoked nor a retired device (as the alarms above)
        if not (dev.retired or dev.revoked) and values_ahead(dev, now):
            by_values_ahead[dev.kind] += 1
    return by_status, by_code, by_ahead, by_values_ahead


def values_ahead(dev: DeviceView, now: float) -> bool:
    """Whether a newest value ``dev`` shows (its ``latest_at``, which open data publishes as ``observedAt``) ends
    more than :data:`DATED_AHEAD_S` after ``now`` (the gateway's clock), whichever clock dated it: it stays so
    after the board is put right, until that time comes or a later value replaces it."""
    return any(end > now + DATED_AHEAD_S for end in dev.latest_at.values())
