"""Review L5: an unknown ``/api/readings?device=`` id's did-you-mean read the store's device ids twice on the
quick thread (the one ``/healthz`` probes the store on) and listed the registry on the event loop, for every
such request. Now the stored ids are the operators' fleet's, held in memory once it is loaded, whether an id
is stored is one index seek, and the registry is listed again only when it changed."""

from __future__ import annotations

from typing import Any, Callable

from gateway.storage.store import ReportRecord

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_opendata_publishing import app_client


def _count(monkeypatch: Any, obj: object, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


async def _message(resp: Any) -> str:
    assert resp.status == 400
    return str((await resp.json())["error"]["message"])


async def test_the_did_you_mean_reads_the_fleet_in_memory_and_the_registry_once_per_change(
        fleet: Fleet, monkeypatch: Any) -> None:
    walks = _count(monkeypatch, fleet.queries, "device_ids")
    lists = _count(monkeypatch, fleet.registry, "list")
    async with app_client(fleet) as c:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await c.get("/api/devices", headers=headers)).status == 200  # the operators' fleet is loaded
        listed = len(lists)
        for _ in range(3):
            message = await _message(await c.get("/api/readings", params={"device": "sl-1"}, headers=headers))
            assert message.startswith("unknown device 'sl-1'") and "'sl-01'" in message
        assert walks == [] and len(lists) == listed + 1
        # A device registered since: the registry's version moved, so it is listed again and named.
        fleet.registry.add("sl-1x", kind="streetlight", zone="centre", lat="52.0", lon="4.0")
        message = await _message(await c.get("/api/readings", params={"device": "sl-1"}, headers=headers))
        assert "'sl-1x'" in message and len(lists) == listed + 2 and walks == []
        # A device with stored reports that the registry does not list is known (one index seek), not a 400.
        fleet.store.insert_batch([ReportRecord(device="zz-99", seq=1, kind="streetlight", zone="centre", type="win",
                                               w=NOW - 900, l=900, m={"lux": 1}, e={}, a=[], fw=None,
                                               received_at=float(NOW - 10), link="x", digest="%064x" % 99)])
        assert (await c.get("/api/readings", params={"device": "zz-99"}, headers=headers)).status == 200
        assert (await c.get("/api/readings", params={"device": "zz-98"}, headers=headers)).status == 400
        assert walks == []
