"""Fleet gauges in /metrics: devices by kind and status and open alarms by kind and code, as /api/devices
shows them, every policy combination pre-set; absent (and civicedge_fleet_view_up 0) when the store is
unreadable, while the rest of /metrics still answers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from .support import ADMIN_TOKEN, NOW, Fleet
from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.fleet_metrics import STATUSES, alarm_codes
from gateway.web.liveness import STALE_WINDOWS, window_of
from gateway.web.reads import DEFAULT_BULK_THREADS


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {fam.name: [(s.labels, s.value) for s in fam.samples] for fam in text_string_to_metric_families(text)}


def _by(samples: list[tuple[dict[str, str], float]], a: str, b: str) -> dict[tuple[str, str], float]:
    return {(labels[a], labels[b]): value for labels, value in samples}


async def _scrape_and_devices(fleet: Fleet, now: int) -> tuple[dict[str, list[tuple[dict[str, str], float]]],
                                                                 list[dict[str, object]], list[dict[str, object]]]:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, clock=lambda: float(now))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/metrics")
        assert resp.status == 200
        families = _families(await resp.text())  # the parser refuses an invalid exposition
        devices = (await (await c.get("/api/devices")).json())["devices"]
        alarms = (await (await c.get("/api/alarms")).json())["alarms"]
    return families, devices, alarms


async def test_fleet_gauges_count_what_api_devices_shows(fleet: Fleet) -> None:
    policy = load_policy()
    families, devices, alarms = await _scrape_and_devices(fleet, NOW)
    assert families["civicedge_fleet_view_up"] == [({}, 1.0)]
    by_status = _by(families["civicedge_devices"], "kind", "status")
    # every policy kind and status is there, 0 where no device is
    assert set(by_status) == {(k, s) for k in policy["kinds"] for s in STATUSES}
    want = Counter((d["kind"], d["status"]) for d in devices)
    assert {k: v for k, v in by_status.items() if v} == dict(want)
    # the fixture's fleet: sl-02 lamp_fail and bin-02 fire open, sl-03 never reported, bin-03 revoked
    assert by_status[("streetlight", "alarm")] == 1 and by_status[("bin", "alarm")] == 1
    assert by_status[("streetlight", "never")] == 1 and by_status[("bin", "revoked")] == 1
    open_alarms = _by(families["civicedge_open_alarms"], "kind", "code")
    assert set(open_alarms) == {(k, c) for k, codes in alarm_codes(policy).items() for c in codes}
    assert {k: v for k, v in open_alarms.items() if v} == dict(Counter((a["kind"], a["code"]) for a in alarms))
    assert open_alarms[("bin", "fire")] == 1 and open_alarms[("bin", "tip")] == 0


async def test_a_retired_or_revoked_devices_alarm_is_not_counted_open(fleet: Fleet) -> None:
    """A bin taken off the street after its fire alarm is retired: its frames are refused, so nothing clears
    the alarm, and before it kept civicedge_open_alarms{code="fire"} (CivicedgeFireAlarm, page) up for 24 h.
    Reinstated, its alarm counts again; revoked, it does not."""
    families, _, _ = await _scrape_and_devices(fleet, NOW)
    assert _by(families["civicedge_open_alarms"], "kind", "code")[("bin", "fire")] == 1  # bin-02's
    fleet.registry.retire("bin-02")
    families, devices, alarms = await _scrape_and_devices(fleet, NOW)
    open_alarms = _by(families["civicedge_open_alarms"], "kind", "code")
    assert open_alarms[("bin", "fire")] == 0
    assert set(open_alarms) == {(k, c) for k, codes in alarm_codes(load_policy()).items() for c in codes}
    assert [d["status"] for d in devices if d["id"] == "bin-02"] == ["retired"]
    assert [a["code"] for a in alarms if a["device"] == "bin-02"] == ["fire"]  # still listed, for the record
    assert _by(families["civicedge_open_alarms"], "kind", "code")[("streetlight", "lamp_fail")] == 1
    fleet.registry.reinstate("bin-02")
    families, _, _ = await _scrape_and_devices(fleet, NOW)
    assert _by(families["civicedge_open_alarms"], "kind", "code")[("bin", "fire")] == 1
    fleet.registry.revoke("bin-02")
    families, _, _ = await _scrape_and_devices(fleet, NOW)
    assert _by(families["civicedge_open_alarms"], "kind", "code")[("bin", "fire")] == 0


async def test_silent_devices_count_as_stale(fleet: Fleet) -> None:
    policy = load_policy()
    # past every kind's silence limit, within the 24 h alarms stay open
    later = NOW + STALE_WINDOWS * max(window_of(policy, k) for k in policy["kinds"]) + 60
    families, devices, _ = await _scrape_and_devices(fleet, later)
    by_status = _by(families["civicedge_devices"], "kind", "status")
    want = Counter((d["kind"], d["status"]) for d in devices)
    assert want[("streetlight", "ok")] == 0 and want[("bin", "ok")] == 0  # sl-01 and bin-01 went silent
    assert {k: v for k, v in by_status.items() if v} == dict(want)
    assert by_status[("streetlight", "stale")] == 1 and by_status[("bin", "stale")] == 1


async def test_unreadable_store_leaves_fleet_gauges_out_and_metrics_answering(fleet: Fleet) -> None:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW))
    fleet.queries.close()  # the read connection is gone: every query fails
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        resp = await c.get("/metrics")
        assert resp.status == 200
        families = _families(await resp.text())
    assert families["civicedge_fleet_view_up"] == [({}, 0.0)]
    assert families["civicedge_devices"] == [] and families["civicedge_open_alarms"] == []
    assert families["civicedge_reports_stored"]  # the gateway's registry is served as before


async def test_a_slow_fleet_read_serves_the_last_counts_with_their_age(fleet: Fleet, monkeypatch: Any) -> None:
    """A read that takes longer than the scrape's wait (the quick read thread busy with a probe or a
    re-read) serves the last counts and their age: the series never vanish for a scrape, which made
    Prometheus resolve and re-fire FireAlarm and restart BoardSilent's `for:` (review rev-obs M1)."""
    import gateway.web.fleet_metrics as fm
    from gateway.web.context import CONTEXT_KEY

    monkeypatch.setattr(fm, "SCRAPE_WAIT_S", 0.5)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        first = _families(await (await c.get("/metrics")).text())
        assert first["civicedge_fleet_view_up"] == [({}, 1.0)]
        assert first["civicedge_fleet_view_age_seconds"] == [({}, 0.0)]
        # the single quick read thread busy for 1.5 s: the next refresh waits behind it
        busy = asyncio.ensure_future(app[CONTEXT_KEY].fleet._reads.quick(lambda: time.sleep(1.5)))  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        second = _families(await (await c.get("/metrics")).text())
        await busy
        third = _families(await (await c.get("/metrics")).text())
    assert second["civicedge_fleet_view_up"] == [({}, 1.0)]
    assert second["civicedge_devices"] == first["civicedge_devices"]
    assert second["civicedge_open_alarms"] == first["civicedge_open_alarms"]
    assert _by(second["civicedge_open_alarms"], "kind", "code")[("bin", "fire")] == 1
    (_, age), = second["civicedge_fleet_view_age_seconds"]
    assert 0.5 <= age < 5.0, age
    assert third["civicedge_fleet_view_age_seconds"] == [({}, 0.0)]


async def test_a_slow_first_read_leaves_the_gauges_out(fleet: Fleet, monkeypatch: Any) -> None:
    """Before any read succeeded there are no last counts: no samples, up 0, and no age."""
    import gateway.web.fleet_metrics as fm
    from gateway.web.context import CONTEXT_KEY

    monkeypatch.setattr(fm, "SCRAPE_WAIT_S", 0.3)
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=None, clock=lambda: float(NOW))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        reads = app[CONTEXT_KEY].fleet._reads  # type: ignore[attr-defined]
        # every bulk thread busy for 1 s: the first load queues behind them
        busy = [asyncio.ensure_future(reads.bulk(lambda: time.sleep(1.0))) for _ in range(DEFAULT_BULK_THREADS)]
        await asyncio.sleep(0.05)
        families = _families(await (await c.get("/metrics")).text())
        await asyncio.gather(*busy)
    assert families["civicedge_fleet_view_up"] == [({}, 0.0)]
    assert families["civicedge_devices"] == [] and "civicedge_fleet_view_age_seconds" not in families


async def test_devices_whose_values_are_dated_after_the_gateways_clock_are_counted(fleet: Fleet) -> None:
    """QA on-call drill: boards synced 200 days ahead by a wrong gateway clock kept sending future-dated
    values after the gateway's clock was put right, and nothing in /metrics showed it."""
    policy = load_policy()
    families, devices, _ = await _scrape_and_devices(fleet, NOW)
    ahead = {labels["kind"]: value for labels, value in families["civicedge_devices_dated_ahead"]}
    assert ahead == {kind: 0.0 for kind in policy["kinds"]}  # every kind pre-set, none ahead
    # A gateway clock a day behind the stored reports: every device that reported is dated ahead of it.
    families, devices, _ = await _scrape_and_devices(fleet, NOW - 86400)
    ahead = {labels["kind"]: value for labels, value in families["civicedge_devices_dated_ahead"]}
    want = Counter(d["kind"] for d in devices if d["last_seen"] is not None)
    assert want and ahead == {kind: float(want.get(kind, 0)) for kind in policy["kinds"]}


async def test_a_board_put_right_is_no_longer_counted_though_its_future_values_stay_newest(fleet: Fleet) -> None:
    """Counted by the device's last stored report: after a power cycle the board reports right at once, so
    civicedge_devices_dated_ahead (and its alert) falls back, while the values it dated in the future stay its
    newest (by period) until their time comes: civicedge_devices_values_ahead counts those (what open data
    shows as observedAt), until the gateway's clock reaches them."""
    ahead_w = NOW + 200 * 86400 - (NOW + 200 * 86400) % 900
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": ahead_w, "l": 900,
                                 "m": {"lux": 20, "lvl": 50, "lamp": 0}})
    families, devices, _ = await _scrape_and_devices(fleet, NOW)
    ahead = {labels["kind"]: value for labels, value in families["civicedge_devices_dated_ahead"]}
    assert ahead["streetlight"] == 1.0
    [sl01] = [d for d in devices if d["id"] == "sl-01"]
    assert sl01["last_end"] == ahead_w + 900 > sl01["last_seen"] + 900  # /api/devices shows it ahead
    right_w = NOW - NOW % 900 - 900
    await fleet.report("sl-01", {"t": "win", "k": "streetlight", "w": right_w, "l": 900,
                                 "m": {"lux": 20, "lvl": 50, "lamp": 0}})
    families, devices, _ = await _scrape_and_devices(fleet, NOW)
    ahead = {labels["kind"]: value for labels, value in families["civicedge_devices_dated_ahead"]}
    shown = {labels["kind"]: value for labels, value in families["civicedge_devices_values_ahead"]}
    assert ahead["streetlight"] == 0.0 and shown["streetlight"] == 1.0
    [sl01] = [d for d in devices if d["id"] == "sl-01"]
    assert sl01["latest_at"]["lux"] == ahead_w + 900  # the future value is still the newest by period
    assert sl01["last_end"] == right_w + 900 and sl01["last_end"] <= sl01["last_seen"] + 900  # put right
    families, _, _ = await _scrape_and_devices(fleet, ahead_w + 900)  # its time has come
    shown = {labels["kind"]: value for labels, value in families["civicedge_devices_values_ahead"]}
    assert shown["streetlight"] == 0.0
