"""Fleet gauges for /metrics, computed at each scrape from the fleet view ``/api/devices`` shows.

``civicedge_devices{kind, status}`` counts devices by :func:`gateway.web.read_api.device_status`
(ok, alarm, stale, never, revoked) and ``civicedge_open_alarms{kind, code}`` the open alarms, with
every kind of the policy (and, for alarms, every code its kind declares) pre-set to 0, so an alert
sees a 0 before the first one. Labels are bounded: no device ids (a fleet of 1,000 devices).

The counts come from the incrementally refreshed fleet snapshot (:mod:`gateway.web.snapshot`), so a
scrape reads only what was stored since the previous read. The snapshot's first load reads the
whole store (seconds on a large one): a scrape waits for it at most :data:`SCRAPE_WAIT_S` and the
load goes on in the background. When the view is not there in time, or the store cannot be read,
the two gauges have no samples and ``civicedge_fleet_view_up`` is 0; /metrics still answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from gateway.log_limit import LogLimiter, more_since
from gateway.web.context import WebContext
from gateway.web.read_api import device_status

log = logging.getLogger(__name__)

STATUSES = ("ok", "alarm", "stale", "never", "revoked")
# What a scrape waits for the fleet view: Prometheus' default scrape timeout is 10 s.
SCRAPE_WAIT_S = 3.0
FAILURE_LOG_EVERY_S = 600.0
_failure_log = LogLimiter(FAILURE_LOG_EVERY_S, time.monotonic)


def alarm_codes(policy: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Kind -> the alarm codes the policy declares for it (``kinds.<kind>.alarms``), sorted."""
    return {kind: tuple(sorted(spec.get("alarms", {}))) for kind, spec in policy.get("kinds", {}).items()}


def fleet_exposition(counts: tuple[Tally[tuple[str, str]], Tally[tuple[str, str]]] | None,
                     policy: Mapping[str, Any]) -> bytes:
    """The fleet gauges in the Prometheus text format: ``counts`` is (devices by (kind, status), open
    alarms by (kind, code)), or None when the fleet view could not be read (then only
    ``civicedge_fleet_view_up 0`` and the two gauges' HELP and TYPE, without samples)."""
    registry = CollectorRegistry(auto_describe=True)
    up = Gauge("civicedge_fleet_view_up", "1 if the fleet view (the store's reports, as /api/devices shows them) "
               "was read for this scrape; 0: civicedge_devices and civicedge_open_alarms have no samples",
               registry=registry)
    devices = Gauge("civicedge_devices", "Devices by kind and status as /api/devices shows them (ok, alarm, stale: "
                    "silent for 3 windows of its kind, never: no report yet, revoked); absent when "
                    "civicedge_fleet_view_up is 0", ["kind", "status"], registry=registry)
    alarms = Gauge("civicedge_open_alarms", "Open alarms (raised in the last 24 h and not cleared) by kind and "
                   "code; absent when civicedge_fleet_view_up is 0", ["kind", "code"], registry=registry)
    up.set(0 if counts is None else 1)
    if counts is not None:
        by_status, by_code = counts
        codes = alarm_codes(policy)
        for kind in sorted(set(codes) | {k for k, _ in by_status}):
            for status in STATUSES:
                devices.labels(kind, status).set(by_status.get((kind, status), 0))
        for kind, code in sorted({(k, c) for k, cs in codes.items() for c in cs} | set(by_code)):
            alarms.labels(kind, code).set(by_code.get((kind, code), 0))
    return generate_latest(registry)


async def fleet_counts(ctx: WebContext) -> tuple[Tally[tuple[str, str]], Tally[tuple[str, str]]] | None:
    """(devices by (kind, status), open alarms by (kind, code)) as of now, or None when the fleet view
    cannot be read within :data:`SCRAPE_WAIT_S` (logged at most once per :data:`FAILURE_LOG_EVERY_S`)."""
    try:
        # devices() awaits a shielded load/refresh: a timeout here leaves it running for the next scrape.
        fleet = await asyncio.wait_for(ctx.fleet.devices(), SCRAPE_WAIT_S)
    except Exception as exc:  # noqa: BLE001 - any store failure leaves the gauges absent, never fails /metrics
        skipped = _failure_log.allow()
        if skipped is not None:
            why = "not read within %.0f s" % SCRAPE_WAIT_S if isinstance(exc, TimeoutError) else type(exc).__name__
            log.warning("/metrics: fleet view unavailable (%s): civicedge_devices and civicedge_open_alarms left "
                        "out%s", why, more_since(skipped, "scrape(s) without them"))
        return None
    now = ctx.now()
    by_status: Tally[tuple[str, str]] = Tally()
    by_code: Tally[tuple[str, str]] = Tally()
    for dev in fleet:
        by_status[(dev.kind, device_status(dev, now=now, policy=ctx.policy))] += 1
        for alarm in dev.alarms:
            by_code[(dev.kind, alarm.code)] += 1
    return by_status, by_code
