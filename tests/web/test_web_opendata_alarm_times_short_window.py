"""An alarm's public time is never finer than 15 minutes, whatever the kind's window.

The open data dated an alarm to the start of its kind's window (test_web_opendata_alarm_times.py):
under a policy with 5-minute windows a tip at 12:28 was published as 12:25, finer than the quarter
hour docs/open-data.md ("Alarm times") promises. It is now the start of the 900 s period holding it
(the entities' mark step, which is longer only when a window is); the operators' ``/api`` keeps the minute.
"""

from __future__ import annotations

import copy
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web.app import create_app
from gateway.web.liveness import window_of
from gateway.web.ngsi import alarm_period_s, public_alarm_time
from gateway.web.opendata import INGEST_LAG_S

from .support import ADMIN_TOKEN, NOW, Fleet

H = 3600
ENTITIES = "/opendata/ngsi-ld/v1/entities"
SHORT_S = 300  # the policy's window of both kinds here: 5 minutes
TIP_AT = NOW + 28 * 60  # 12:28: its 5-minute window starts 12:25, its quarter hour 12:15
LAMP_FAIL_AT = NOW + 22 * 60  # 12:22: 12:20, 12:15
QUARTER = NOW + 15 * 60  # 12:15
# What the 5-minute windows would show (the minutes themselves too): no public answer may.
FINER = ("12:20", "12:22", "12:25", "12:28")
CLOCK = float(NOW + H + INGEST_LAG_S)  # 13:05: every mark (entities 13:00, CSV 13:05) is after both alarms


def _short_policy() -> dict[str, Any]:
    policy = copy.deepcopy(load_policy())
    for kind in ("bin", "streetlight"):
        policy["kinds"][kind]["window_s"] = SHORT_S
    return policy


def _alarm(device: str, kind: str, seq: int, at: int, code: str) -> ReportRecord:
    zone = "north" if device == "sl-03" else "centre"
    return ReportRecord(device=device, seq=seq, kind=kind, zone=zone, type="alarm", w=at, l=60, m={}, e={},
                        a=[code], fw=None, received_at=at + 20, link="serial:/dev/pts/9", digest="%064x" % seq)


def _client(fleet: Fleet) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=_short_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: CLOCK)
    return TestClient(TestServer(app, host="127.0.0.1", port=0))


def _raise_alarms(fleet: Fleet) -> None:
    """bin-01 tips at 12:28; sl-03, which last sent a window ending at 06:00, fails at 12:22: both alarms
    are later than any value the fixture's morning holds (its periods end at 12:00), so they decide
    Last-Modified and the catalogue's modified."""
    window = ReportRecord(device="sl-03", seq=60_000, kind="streetlight", zone="north", type="win",
                          w=NOW - 6 * H - SHORT_S, l=SHORT_S, m={"lux": 10, "lvl": 50, "lamp": 0}, e={}, a=[],
                          fw=None, received_at=NOW - 6 * H + 5, link="serial:/dev/pts/9", digest="%064x" % 60_000)
    fleet.store.insert_batch([window, _alarm("bin-01", "bin", 60_002, TIP_AT, "tip"),
                              _alarm("sl-03", "streetlight", 60_001, LAMP_FAIL_AT, "lamp_fail")])


def test_the_public_time_is_never_finer_than_a_quarter_hour() -> None:
    """The period is the entities' mark step (test_web_opendata_alarm_times_marks.py), a quarter hour
    under 5-minute windows, and no period given makes it finer."""
    policy = _short_policy()
    assert window_of(policy, "bin") == SHORT_S
    assert alarm_period_s(policy) == 900
    assert public_alarm_time(TIP_AT, alarm_period_s(policy)) == QUARTER
    assert public_alarm_time(TIP_AT, SHORT_S) == QUARTER  # a shorter period is raised to the quarter hour
    assert public_alarm_time(TIP_AT, H) == NOW  # a longer one coarsens more: its own start
    assert public_alarm_time(TIP_AT, 0) == QUARTER  # no period at all is no minute either


async def test_a_short_window_dates_an_alarm_to_its_quarter_hour(fleet: Fleet) -> None:
    """Before: observedAt 12:25 (tip) and 12:20 (lamp_fail), Last-Modified and modified 12:25."""
    _raise_alarms(fleet)
    async with _client(fleet) as c:
        resp = await c.get(ENTITIES)
        assert resp.status == 200
        by_id = {e["id"]: e for e in await resp.json(content_type=None)}
        tipped = by_id["urn:ngsi-ld:WasteContainer:bin-01"]["status"]
        assert (tipped["value"], tipped["observedAt"]) == ("dropped", "2026-11-21T12:15:00Z")
        failed = by_id["urn:ngsi-ld:Streetlight:sl-03"]["status"]
        assert (failed["value"], failed["observedAt"]) == ("defectiveLamp", "2026-11-21T12:15:00Z")
        for path in (ENTITIES, ENTITIES + "/urn:ngsi-ld:WasteContainer:bin-01", "/opendata/devices.geojson"):
            one = await c.get(path)
            assert one.status == 200, path
            assert int(parsedate_to_datetime(one.headers["Last-Modified"]).timestamp()) == QUARTER, path
        index = await c.get("/opendata")
        assert index.status == 200
        assert (await index.json(content_type=None))["modified"] == "2026-11-21T12:15:00Z"


async def test_no_public_answer_shows_a_time_finer_than_the_quarter_hour(fleet: Fleet) -> None:
    """Neither a body nor a Last-Modified of the open data names 12:20, 12:22, 12:25 or 12:28 (the
    catalogue's JSON-LD and the /opendata page included); /api/alarms keeps the minutes."""
    _raise_alarms(fleet)
    async with _client(fleet) as c:
        for path, headers in ((ENTITIES, {}), (ENTITIES + "?options=keyValues", {}),
                              (ENTITIES + "/urn:ngsi-ld:Streetlight:sl-03", {}), ("/opendata/devices.geojson", {}),
                              ("/opendata", {}), ("/opendata", {"Accept": "text/html"}),
                              ("/opendata/catalog.jsonld", {})):
            resp = await c.get(path, headers=headers)
            assert resp.status == 200, path
            shown = await resp.text() + resp.headers.get("Last-Modified", "")
            assert not [t for t in FINER if t in shown], (path, headers)
        api = await c.get("/api/alarms", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert api.status == 200
        times = {(a["device"], a["code"]): a["at"] for a in (await api.json())["alarms"]}
        assert times[("bin-01", "tip")] == TIP_AT and times[("sl-03", "lamp_fail")] == LAMP_FAIL_AT
