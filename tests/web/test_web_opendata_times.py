"""Public open-data answers never date a report to the second (privacy audit F6).

An alarm is sent at once, so its arrival time to the second dates the event finer than the minute
the device rounds it to. ``Last-Modified`` of the NGSI-LD and GeoJSON answers is the newest time the
body shows (a period end, an alarm's minute); the CSV's is the newest arrival, to the minute.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from gateway.storage.store import ReportRecord
from gateway.web.opendata import INGEST_LAG_S

from .support import NOW, Fleet
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
    # the alarm's minute, not its arrival 37 s later; the window's end, not its arrival 12 s later
    assert got["/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-01"] == tip_at
    assert got["/opendata/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:sl-01"] == NOW + 900
    assert got["/opendata/ngsi-ld/v1/entities?type=Streetlight"] == NOW + 900  # the listed entities only
    assert got["/opendata/ngsi-ld/v1/entities"] == got["/opendata/devices.geojson"] == NOW + 900
    assert got[f"/opendata/readings.csv?from={NOW}&to={NOW + H}"] == NOW + 900  # 12:15:12 to the minute


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
