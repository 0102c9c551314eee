"""The publication mark saved in the store's ``meta`` table after a clock that was wrong.

The bound of each kind of public answer (entities, CSV: the newest report id published) never goes
back. The mark (the time the answer is as of, at which a device's silence is judged) followed it: a
clock once 30 days ahead left a mark 30 days ahead in ``meta``, read back at every start, so after a
restart with the right clock every device was silent in the public answers until the real clock
reached the saved mark. The mark is the clock's again once the clock is no longer behind the newest
stored report.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.errors import StorageError
from gateway.resources import load_policy
from gateway.storage.store import ReportRecord
from gateway.web import liveness, publication
from gateway.web.source import StoreFleetSource

from .support import NOW, Fleet

DAY = 86400
AHEAD = NOW + 30 * DAY


def window(seq: int, w: int, received_at: float, device: str = "sl-01") -> ReportRecord:
    """A streetlight window of ``device`` starting at ``w``, received at ``received_at``."""
    return ReportRecord(device=device, seq=seq, kind="streetlight", zone="centre", type="win", w=w, l=900,
                        m={"lux": 10, "lvl": 40, "lamp": 0}, e={}, a=[], fw=None, received_at=received_at,
                        link="serial:/dev/pts/9", digest="%064x" % seq)


def source(fleet: Fleet, clock: list[float]) -> StoreFleetSource:
    """The open data's source as the gateway builds it, saving what it published in the store."""
    async def save_meta(key: str, value: str) -> None:
        await fleet.ingest.run_in_store(fleet.store.save_meta, key, value)

    return StoreFleetSource(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                            clock=lambda: clock[0], save_meta=save_meta)


async def test_a_mark_saved_by_a_clock_once_ahead_comes_back_to_the_clock_after_a_restart(fleet: Fleet) -> None:
    """Fails before: the mark stayed 30 days ahead, every reporting device stale."""
    fleet.store.insert_batch([window(90_001, NOW, AHEAD - 10)])  # stamped by the clock 30 days ahead
    ahead_id = fleet.queries.last_report_id()
    running = source(fleet, [float(AHEAD + 60)])
    try:
        await running.devices(published=True)
        assert running.published_mark() == publication.entity_mark(AHEAD)
    finally:
        await running.aclose()

    # Restarted with the right clock: until a report stamped by it arrives, the clock is behind the newest
    # stored report, and what was published is held (a WARNING says so).
    clock = [float(NOW + 1700)]
    restarted = source(fleet, clock)
    try:
        await restarted.devices(published=True)
        assert restarted.published_mark() == publication.entity_mark(AHEAD)
        fleet.store.insert_batch([window(90_002, NOW + 900, NOW + 1850)])
        clock[0] = float(NOW + 1900)
        shown = {d.id: d for d in await restarted.devices(published=True)}
        # The clock's mark (12:30), and the report stamped ahead stays published: the bound never goes back.
        assert restarted.published_mark() == NOW + 1800
        assert shown["sl-01"].last_seen == AHEAD - 10
        # The fixture's devices reported at 11:55: not silent at 12:30 (they were at a mark 30 days ahead).
        assert liveness.stale_ids(shown.values(), now=restarted.published_mark(), policy=load_policy()) == set()
        clock[0] = float(NOW + 2 * 3600)
        devices = await restarted.devices(published=True)
        assert restarted.published_mark() == NOW + 2 * 3600
        assert {d.id: d.last_seen for d in devices}["sl-01"] == NOW + 1850
    finally:
        await restarted.aclose()
    bound, saved_mark = publication.decode_published(
        fleet.queries.meta_values("published:entities")["published:entities"])[:2]
    assert bound > ahead_id and saved_mark == NOW + 2 * 3600


async def _shown_after_a_saved_value(fleet: Fleet, text: str, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """sl-03's first report is received at 12:01, after the 12:00 mark; ``text`` is saved as what the
    entities published, and a gateway starts at 12:02: the published last_seen of each device, and
    whether the saved value was ignored."""
    fleet.store.insert_batch([window(90_003, NOW, NOW + 60, device="sl-03")])
    fleet.store.save_meta(publication.published_key("entities"), text)
    started = source(fleet, [float(NOW + 120)])
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.web.published_marks"):
            shown = {d.id: d.last_seen for d in await started.devices(published=True)}
    finally:
        await started.aclose()
    ignored = any(r.getMessage().startswith("open data: ignoring meta published:entities") for r in caplog.records)
    return {"shown": shown, "ignored": ignored}


@pytest.mark.parametrize("received", [None, NOW - 7 * DAY - 100])
async def test_a_saved_value_from_another_store_is_ignored(fleet: Fleet, caplog: pytest.LogCaptureFixture,
                                                           received: float | None) -> None:
    """Fails before: a bound copied from another store (or edited) made the reports received after the
    last publication mark public at once; only ``bound <= newest id`` was checked. Without the receive
    time of report ``bound`` (the form saved before) nothing ties the value to this store; with another
    one, report ``bound`` of this store is not the one it names."""
    newest = fleet.queries.last_report_id() + 1  # sl-03's report, inserted next
    text = ("%d %d" % (newest, NOW - 7 * DAY) if received is None
            else publication.encode_published(newest, NOW - 7 * DAY, received))
    got = await _shown_after_a_saved_value(fleet, text, caplog)
    assert got["ignored"]
    assert got["shown"]["sl-03"] is None  # received at 12:01, after the 12:00 mark: not published at 12:02


async def test_a_saved_bound_received_after_its_mark_is_ignored(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """The right receive time, but a bound received after the saved mark: no mark published it."""
    newest = fleet.queries.last_report_id() + 1
    got = await _shown_after_a_saved_value(fleet, publication.encode_published(newest, NOW, NOW + 60), caplog)
    assert got["ignored"] and got["shown"]["sl-03"] is None


async def test_a_value_this_store_saved_is_used(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """The check lets through what the store's own publication saved: the bound received before the mark
    (published at 12:15; the clock then set back to 12:02 and the gateway restarted: the bound stays)."""
    newest = fleet.queries.last_report_id() + 1
    got = await _shown_after_a_saved_value(fleet, publication.encode_published(newest, NOW + 900, NOW + 60), caplog)
    assert not got["ignored"] and got["shown"]["sl-03"] == NOW + 60


class SlowMeta:
    """A ``save_meta`` that waits until released (a store writer busy with a large batch), records what it
    saved and how many saves ran at once, or fails."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.release = asyncio.Event()
        self.saved: list[tuple[str, str]] = []
        self.running = self.most = 0
        self.fail = fail

    async def __call__(self, key: str, value: str) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            if self.fail is not None:
                raise self.fail
            self.saved.append((key, value))
        finally:
            self.running -= 1

    def entity_marks(self) -> list[int]:
        """The marks of the entities' values saved, in order."""
        decoded = [publication.decode_published(v) for k, v in self.saved if k == "published:entities"]
        return [d[1] for d in decoded if d is not None]


async def test_a_request_never_waits_for_the_save_and_the_newest_value_wins(fleet: Fleet) -> None:
    """Fails before: the public request awaited the save on the store's single writer thread, with no
    timeout. Now the request is answered while the save waits; one save runs at a time, and of the
    values that came meanwhile only the newest of each kind is saved."""
    meta = SlowMeta()
    clock = [float(NOW + 60)]
    src = StoreFleetSource(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                           clock=lambda: clock[0], save_meta=meta)
    try:
        await asyncio.wait_for(src.devices(published=True), 5)  # 12:00, its save held
        for at in (NOW + 900, NOW + 1800):  # 12:15, 12:30: saved once the first one ends, 12:15 replaced
            fleet.store.insert_batch([window(90_010 + at - NOW, at - 900, at - 60, device="sl-03")])
            clock[0] = float(at + 60)
            await asyncio.wait_for(src.devices(published=True), 5)
        assert src.published_mark() == NOW + 1800 and meta.saved == []
        meta.release.set()
    finally:
        await src.aclose()  # lets the save end
    assert meta.entity_marks() == [NOW, NOW + 1800] and meta.most == 1


@pytest.mark.parametrize("failure", [StorageError("disk full", reason="write_failed"), RuntimeError("bug")])
async def test_a_failed_save_is_logged_and_saved_again_at_the_next_mark(
        fleet: Fleet, caplog: pytest.LogCaptureFixture, failure: BaseException) -> None:
    meta = SlowMeta(failure)
    meta.release.set()
    clock = [float(NOW + 60)]
    src = StoreFleetSource(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                           clock=lambda: clock[0], save_meta=meta)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.web.published_marks"):
            await src.devices(published=True)
            for _ in range(20):  # the background save fails and is logged
                await asyncio.sleep(0)
        assert any("saving what was published" in r.getMessage() or "could not save what was published"
                   in r.getMessage() for r in caplog.records)
        meta.fail = None
        clock[0] = float(NOW + 960)  # 12:15: saved this time
        await src.devices(published=True)
    finally:
        await src.aclose()
    assert meta.entity_marks() == [NOW + 900]
