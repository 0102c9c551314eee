"""Public open-data answers never date a report's arrival finer than the data's own periods.

An alarm is sent at once, so its arrival time to the second dates the event finer than the minute
the device rounds it to (privacy audit F6). ``Last-Modified`` of the NGSI-LD and GeoJSON answers is
the newest time the body shows (a period end, an alarm's minute); the CSV's is the hh:05 mark that
published its newest report. And polling dates what changes an answer (QA LOW7): every public answer
is made of the reports received before the last publication mark (gateway/web/publication.py), a
quarter hour for the entities, hh:05 for the CSV, so it changes only at marks; operators see every
report at once.
"""

from __future__ import annotations

import copy
import csv
import logging
import io
from email.utils import parsedate_to_datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web.app import create_app
from gateway.web.opendata import INGEST_LAG_S
from gateway.web.publication import CSV_MARK_OFFSET_S, ENTITY_MARK_S, csv_mark, entity_mark, entity_mark_s

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_opendata_publishing import app_client

H = 3600


def _record(device: str, kind: str, seq: int, type_: str, w: int, l: int, m: dict[str, int], a: list[str],
            received_at: float) -> ReportRecord:
    return ReportRecord(device=device, seq=seq, kind=kind, zone="centre", type=type_, w=w, l=l, m=m, e={}, a=a,
                        fw=None, received_at=received_at, link="serial:/dev/pts/9", digest="%064x" % seq)


def _modified(headers: object) -> int:
    return int(parsedate_to_datetime(headers["Last-Modified"]).timestamp())  # type: ignore[index]


async def test_last_modified_is_the_time_the_body_shows_never_the_arrival_second(fleet: Fleet) -> None:
    tip_at = NOW + 600                      # the device rounds the alarm down to the minute
    fleet.store.insert_batch([
        _record("bin-01", "bin", 50_000, "alarm", tip_at, 60, {}, ["tip"], tip_at + 37),
        _record("sl-01", "streetlight", 50_000, "win", NOW, 900, {"lux": 20, "lvl": 50, "lamp": 0}, [], NOW + 912),
    ])
    async with app_client(fleet, clock=lambda: float(NOW + H + INGEST_LAG_S)) as c:  # the 12:00 hour complete
        got: dict[str, int] = {}
        for path in ("/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-01",
                     "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01",
                     "/opendata/ngsi-ld/v1/entities?type=Streetlight", "/opendata/ngsi-ld/v1/entities",
                     "/opendata/devices.geojson", f"/opendata/readings.csv?from={NOW}&to={NOW + H}"):
            resp = await c.get(path)
            assert resp.status == 200, path
            body = await resp.text()
            got[path] = _modified(resp.headers)
            assert got[path] % 60 == 0, (path, resp.headers["Last-Modified"])
            for second in ("12:10:37", "12:15:12"):  # no arrival time in any body either
                assert second not in body, (path, second)
            # the validator still works on the rounded answer
            again = await c.get(path, headers={"If-None-Match": resp.headers["ETag"]})
            assert again.status == 304 and again.headers["Last-Modified"] == resp.headers["Last-Modified"], path
    # the start of the alarm's 15-minute window (not its minute, nor its arrival 37 s later:
    # test_web_opendata_alarm_times.py); the window's end, not its arrival 12 s later
    assert got["/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-01"] == tip_at - tip_at % 900
    assert got["/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01"] == NOW + 900
    assert got["/opendata/ngsi-ld/v1/entities?type=Streetlight"] == NOW + 900  # the listed entities only
    assert got["/opendata/ngsi-ld/v1/entities"] == got["/opendata/devices.geojson"] == NOW + 900
    # received 12:15:12, published at 13:05: the hour, not the minute
    assert got[f"/opendata/readings.csv?from={NOW}&to={NOW + H}"] == NOW + H + INGEST_LAG_S


async def test_the_csv_shows_a_report_that_arrives_in_time_only_at_five_past_the_hour(fleet: Fleet) -> None:
    """QA LOW7: docs/privacy.md said the public open data shows no arrival time, but an answer's ETag
    changes when what it is made of changes, so polling dates that. For the CSV, a report that arrives
    in time (a 15-minute window sent at its end) changes no range before hh:05, whatever 'to' a poller
    asks for: nothing finer than the hour. (Late reports still do: docs/privacy.md.)"""
    clock = [float(NOW + H + 60)]                    # 13:01
    path = f"/opendata/readings.csv?from={NOW}&to={NOW + 30 * H}"
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        before = await c.get(path)
        fleet.store.insert_batch([_record("bin-01", "bin", 60_000, "win", NOW + 2700, 900,
                                          {"temp": 12, "tilt": 0, "bat": 70}, [], NOW + H + 83)])  # 13:01:23
        for at in (NOW + H + 90, NOW + H + INGEST_LAG_S - 1):
            clock[0] = float(at)
            again = await c.get(path, headers={"If-None-Match": before.headers["ETag"]})
            assert again.status == 304, at
        clock[0] = float(NOW + H + INGEST_LAG_S)     # 13:05: the 12:00 row, with the window in it
        later = await c.get(path, headers={"If-None-Match": before.headers["ETag"]})
        assert later.status == 200 and "2026-11-21T12:00:00Z,bin-01" in await later.text()


def test_the_marks_are_quarter_hours_and_five_past_the_hour() -> None:
    assert CSV_MARK_OFFSET_S == INGEST_LAG_S  # the CSV's mark moves with its default 'to'
    assert [entity_mark(NOW + s) for s in (0, 899, 900, 1799)] == [NOW, NOW, NOW + 900, NOW + 900]
    assert [csv_mark(NOW + s) for s in (0, 299, 300, H + 299, H + 300)] == [
        NOW - H + 300, NOW - H + 300, NOW + 300, NOW + 300, NOW + H + 300]


async def _public(c: TestClient, paths: tuple[str, ...]) -> dict[str, tuple[str, str, str]]:
    """Body, ETag and Last-Modified of each public answer."""
    out = {}
    for path in paths:
        resp = await c.get(path)
        assert resp.status == 200, (path, await resp.text())
        out[path] = (await resp.text(), resp.headers["ETag"], resp.headers.get("Last-Modified", ""))
    return out


async def test_a_report_stored_between_quarter_hours_changes_no_entity_until_the_next_mark(fleet: Fleet) -> None:
    """QA LOW7: the entities changed the moment a report was stored, so polling them dated its arrival
    (a bin's late reports come at a lid opening's wake: a person's deposit). A window and a tip alarm
    received at 12:20 change no public answer (body, ETag, Last-Modified) before 12:30, then show;
    the operator's /api sees both at once. Fails before the publication marks."""
    entities = ("/opendata/ngsi-ld/v1/entities", "/opendata/ngsi-ld/v1/entities?options=keyValues",
                "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-01", "/opendata/devices.geojson",
                "/opendata", "/opendata/catalog.jsonld")
    clock = [float(NOW + 1200)]                                  # 12:20: the last mark was 12:15
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        before = await _public(c, entities)
        assert '"temperature":12' in before["/opendata/ngsi-ld/v1/entities?options=keyValues"][0]
        fleet.store.insert_batch([
            _record("bin-01", "bin", 70_000, "win", NOW + 300, 900, {"temp": 31, "tilt": 0, "bat": 70}, [], NOW + 1210),
            _record("bin-01", "bin", 70_001, "alarm", NOW + 1200, 60, {}, ["tip"], NOW + 1215),
        ])
        dev = await (await c.get("/api/devices/bin-01")).json()
        assert dev["latest"]["temp"] == 31 and "tip" in {a["code"] for a in dev["alarms"]}
        for at in (NOW + 1230, NOW + 1799):                     # 12:20:30, 12:29:59
            clock[0] = float(at)
            assert await _public(c, entities) == before, at
            for path, (_, etag, _) in before.items():
                assert (await c.get(path, headers={"If-None-Match": etag})).status == 304, (path, at)
        clock[0] = float(NOW + 1800)                             # 12:30: published
        after = await _public(c, entities)
        for path in entities:
            assert after[path][1] != before[path][1], path
        shown = await (await c.get(entities[2] + "?options=keyValues")).json(content_type=None)
        assert shown["temperature"] == 31.0 and shown["status"] == "dropped"
        assert _modified({"Last-Modified": after[entities[2]][2]}) == NOW + 1200  # the window's end, the alarm's minute


async def test_a_late_report_for_a_past_csv_range_shows_only_at_the_next_five_past(fleet: Fleet) -> None:
    """QA LOW7: a late report (a backlog) changed its past range's CSV at the second it was stored, and
    Last-Modified dated it to the minute. Now the range changes at the next hh:05 and Last-Modified is
    that mark; /api/readings shows the report at once. Fails before the publication marks."""
    past = f"/opendata/readings.csv?from={NOW - 6 * H}&to={NOW - 3 * H}"
    clock = [float(NOW + H + 600)]                               # 13:10: the last CSV mark was 13:05
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        before = (await _public(c, (past,)))[past]
        assert before[2] == "Sat, 21 Nov 2026 12:05:00 GMT"      # the fixture, received 11:59:55
        fleet.store.insert_batch([_record("bin-02", "bin", 70_000, "win", NOW - 5 * H + 1800, 900,
                                          {"temp": 9, "tilt": 0, "bat": 60}, [], NOW + H + 620)])  # 13:10:20
        api = await (await c.get(f"/api/readings?from={NOW - 5 * H}&to={NOW - 4 * H}&device=bin-02"
                                 "&field=temp")).json()
        assert 9 in [r["value"] for r in api["readings"]]
        for at in (NOW + H + 630, NOW + H + 900, NOW + 2 * H + INGEST_LAG_S - 1):  # 13:10:30, 13:15, 14:04:59
            clock[0] = float(at)
            assert (await _public(c, (past,)))[past] == before, at
            assert (await c.get(past, headers={"If-None-Match": before[1]})).status == 304, at
        clock[0] = float(NOW + 2 * H + INGEST_LAG_S)             # 14:05: published
        body, etag, modified = (await _public(c, (past,)))[past]
        assert etag != before[1] and body != before[0]
        assert modified == "Sat, 21 Nov 2026 14:05:00 GMT"       # the mark, not 13:10
        temps = [r["value"] for r in csv.DictReader(io.StringIO(body))
                 if r["device"] == "bin-02" and r["field"] == "temp" and r["hour"] == "2026-11-21T07:00:00Z"]
        assert temps and float(temps[0]) < 13.0  # the 9 °C window is in the 07:00 mean now (else 13)


async def test_a_clock_behind_the_stored_reports_never_retracts_published_data(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """Review M1: after a restart with the clock at 11:40 while reports were received up to 12:50, a
    past CSV range became header-only and the entities empty (their marks' bounds were the reports
    received before 11:05 / 11:30). A clock behind the newest stored report holds what was published
    (a restart: what was received before the stop), says so once, and the bound never goes down
    when the clock steps back while running. Fails before."""
    past = f"/opendata/readings.csv?from={NOW - 6 * H}&to={NOW - 3 * H}"
    paths = (past, "/opendata/ngsi-ld/v1/entities?options=keyValues", "/opendata/devices.geojson")
    fleet.store.insert_batch([_record("bin-02", "bin", 70_000, "win", NOW + 1800, 900,
                                      {"temp": 9, "tilt": 0, "bat": 60}, [], NOW + 3000)])  # 12:50
    async with app_client(fleet, clock=lambda: float(NOW + 3300)) as c:  # 12:55: marks 12:45 and 12:05
        published = await _public(c, paths)
    assert len(published[past][0].splitlines()) > 1 and "bin-02" in published[paths[1]][0]
    # After a restart the bound published before is not known; the gateway had reached its newest
    # report's receive time (12:50), so the marks at or before it (12:45, 12:05) are published again.
    clock = [float(NOW - 1200)]                                  # restarted at 11:40
    with caplog.at_level(logging.WARNING, logger="gateway.web.published_marks"):
        async with app_client(fleet, clock=lambda: clock[0]) as c:
            assert await _public(c, paths) == published
            clock[0] = float(NOW - 1200 + 900)                   # 11:55: a mark, still behind
            assert await _public(c, paths) == published
    warned = [r for r in caplog.records if "behind the newest stored report" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    clock[0] = float(NOW + 3300)                                 # running at 12:55, then set back
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        assert await _public(c, paths) == published
        clock[0] = float(NOW + 600)                              # 12:10: marks 12:00 and 11:05
        assert await _public(c, paths) == published


async def test_a_report_committed_after_its_marks_bound_was_read_waits_for_the_next_mark(fleet: Fleet) -> None:
    """The bound of a mark is read once: a report received at 12:14:59 but stored after the first
    answer at 12:15 read it (a batch still in the writer) changes no answer before 12:30, though it
    was received before 12:15; then it shows."""
    path = "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-01?options=keyValues"
    clock = [float(NOW + 910)]                                   # 12:15:10
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        before = await _public(c, (path,))
        fleet.store.insert_batch([_record("bin-01", "bin", 70_000, "win", NOW, 900,
                                          {"temp": 31, "tilt": 0, "bat": 70}, [], NOW + 899)])  # 12:14:59
        for at in (NOW + 911, NOW + 1799):
            clock[0] = float(at)
            assert await _public(c, (path,)) == before, at
        clock[0] = float(NOW + 1800)                             # 12:30
        shown = await (await c.get(path)).json(content_type=None)
        assert shown["temperature"] == 31.0


async def test_entity_marks_are_as_long_as_the_longest_window_of_the_policy(fleet: Fleet) -> None:
    """Review LOW6: the entities' mark was a fixed quarter hour while a kind's window_s can be set in
    the policy: with hourly bin windows a quarter-hour mark dated a report's arrival finer than the
    data. The mark is now the longest window (an hour here): a report received at 12:20 changes no
    entity at 12:30 or 12:59:59, and shows at 13:00. Fails before."""
    policy = copy.deepcopy(load_policy())
    policy["kinds"]["bin"]["window_s"] = H
    assert entity_mark_s(policy) == H and entity_mark_s(load_policy()) == ENTITY_MARK_S
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=policy,
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: clock[0])
    path = "/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-01?options=keyValues"
    clock = [float(NOW + 1200)]                                  # 12:20
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        before = await _public(c, (path,))
        fleet.store.insert_batch([_record("bin-01", "bin", 70_000, "win", NOW, H,
                                          {"temp": 31, "tilt": 0, "bat": 70}, [], NOW + 1210)])
        for at in (NOW + 1800, NOW + H - 1):                    # 12:30, 12:59:59
            clock[0] = float(at)
            assert await _public(c, (path,)) == before, at
        clock[0] = float(NOW + H)                               # 13:00
        assert (await _public(c, (path,)))[path][1] != before[path][1]


async def test_a_new_devices_first_report_changes_the_csv_only_at_five_past(fleet: Fleet) -> None:
    """Review LOW4: the CSV's device list and zones came from the entities' state (their quarter-hour
    mark): a new device's first report (received 13:12) changed the CSV's ETag at 13:15 with the same
    body, and made its zone known then. Both follow the CSV's mark now (14:05). Fails before."""
    fleet.registry.add("sl-09", kind="streetlight", zone="east", lat="52.37", lon="4.90")
    east = "/opendata/readings.csv?zone=east"
    everything = "/opendata/readings.csv"
    clock = [float(NOW + H + 600)]                               # 13:10: the CSV mark was 13:05
    async with app_client(fleet, clock=lambda: clock[0]) as c:
        refused = await c.get(east)
        assert refused.status == 400                             # sl-09 never reported: east unknown
        before = await _public(c, (everything,))
        fleet.store.insert_batch([_record("sl-09", "streetlight", 1, "win", NOW + H, 900, {"lux": 3}, [], NOW + H + 720)])
        for at in (NOW + H + 900, NOW + 2 * H + INGEST_LAG_S - 1):  # 13:15 (an entity mark), 14:04:59
            clock[0] = float(at)
            assert (await c.get(east)).status == 400, at
            assert await _public(c, (everything,)) == before, at
        clock[0] = float(NOW + 2 * H + INGEST_LAG_S)             # 14:05
        assert (await c.get(east)).status == 200


async def test_without_a_registry_a_new_device_changes_no_csv_etag_at_a_quarter_hour(fleet: Fleet) -> None:
    """Review LOW4, without a registry (the devices listed are those that reported, as of the entities'
    mark): a new device's first report changed the CSV's ETag at the next quarter hour. Fails before."""
    app = create_app(store=fleet.queries, registry=None, policy=load_policy(), metrics_registry=None,
                     admin_token=ADMIN_TOKEN, clock=lambda: clock[0])
    clock = [float(NOW + H + 600)]                               # 13:10
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        before = await _public(c, ("/opendata/readings.csv",))
        fleet.store.insert_batch([_record("sl-77", "streetlight", 1, "win", NOW + H, 900, {"lux": 3}, [], NOW + H + 720)])
        clock[0] = float(NOW + H + 900)                          # 13:15
        assert await _public(c, ("/opendata/readings.csv",)) == before
        resp = await c.get("/opendata/readings.csv", headers={"If-None-Match": before["/opendata/readings.csv"][1]})
        assert resp.status == 304
