"""Adapters from the gateway's storage read API and registry to the web layer's views.

:class:`StoreFleetSource` joins the registry (kind, zone, location, revoked) with the report
store (last seen, link, latest released values, alarms); :class:`RegistryAdmin` performs admin
changes on the registry and the retention settings.

The public open data reads the same store only up to a publication mark
(:mod:`gateway.web.publication`): ``published=True`` on :meth:`StoreFleetSource.devices` (the
entities' mark), ``received_before`` (the CSV's mark) on :meth:`~StoreFleetSource.device_hours` and
:meth:`~StoreFleetSource.range_stamp`.

Store reads run on worker threads (:class:`gateway.web.reads.StoreReads`): the event loop that
awaits them also reads the serial ports and sends the ACKs. The registry, a small table the
ingest pipeline also reads on the loop, is read on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from typing import Any, Awaitable, Callable, Mapping, NamedTuple, Sequence

from gateway.errors import RegistryError, StorageError
from gateway.retention_clock import CLOCK_BACK_TOLERANCE_S
from gateway.storage.queries import ReportQueries
from gateway.web import publication
from gateway.web.errors import BadParameter, Conflict, NotFound, Unavailable
from gateway.web.reads import StoreReads
from gateway.web.retention import RetentionSettings
from gateway.web.snapshot import FleetData, FleetState
from gateway.web.views import DeviceHourAggregate, DeviceView, HourlyAggregate, ReadingKey, ReadingView

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0
# Publication marks whose bound (newest report id received before the mark) is kept: the entities'
# and the CSV's current marks, and the previous ones while a request still uses them.
_MARKS_KEPT = 8


class _Published(NamedTuple):
    """What a kind of public answer published: the newest report id (``bound``), the mark the answer is
    as of, and the receive time of report ``bound`` (0.0 for none), which ties a saved value to its store."""

    bound: int
    mark: int
    received: float

    def consistent(self) -> bool:
        """Whether report ``bound`` was received before the mark (or nothing is published): what every
        bound read at a mark is, and what a value read back at start must be."""
        return self.bound == 0 or self.received < self.mark

    @classmethod
    def of_saved(cls, queries: ReportQueries, saved: tuple[int, int, int]) -> _Published | None:
        """The value saved as ``(bound, mark, receive time in µs)``, if this store's publication can have
        saved it (:meth:`StoreFleetSource._read_published`), else None; on a store thread."""
        bound, mark, received_us = saved
        if bound == 0:
            return cls(0, mark, 0.0) if received_us == 0 else None
        row = queries.reports_by_id([bound]).get(bound)
        if row is None or publication.micros(row.received_at) != received_us:
            return None
        got = cls(bound, mark, row.received_at)
        return got if got.consistent() else None


_NOTHING = _Published(0, 0, 0.0)


class StoreFleetSource:
    """Read views over ``gateway.storage.ReportQueries`` and ``gateway.registry.Registry``.

    Args:
        store: the storage read API, or None (then every store read fails ``read_failed``).
        registry: the device registry (source of location and revocation), or None: then only
            devices that reported are listed, without a location (lat = lon = 0).
        policy: the privacy policy (fields per kind).
        clock: unix-seconds clock.
        reads: the worker threads store reads run on (a private set when None; closed by
            :meth:`aclose` either way).
        save_meta: writes ``(key, value)`` into the store's ``meta`` table, through the store's writer
            (the web layer reads the store read-only); what the public answers published is saved
            with it at each new mark, in the background (no request waits for it), and read back at
            start, so it never goes back across a restart either. None: kept in memory only.
    """

    def __init__(self, *, store: ReportQueries | None, registry: Any | None, policy: Mapping[str, Any],
                 clock: Callable[[], float] = time.time, reads: StoreReads | None = None,
                 save_meta: Callable[[str, str], Awaitable[object]] | None = None) -> None:
        self._store = store
        self._registry = registry
        self._policy = policy
        self._clock = clock
        self._reads = reads if reads is not None else StoreReads()
        # The operators' fleet: None until the first read, which forks it from the published one.
        self._state: FleetState | None = None
        # The fleet as published at the entities' last mark (module gateway.web.publication).
        self._public = FleetState(store, bounded=True) if store is not None else None
        self._loading: asyncio.Future[FleetData] | None = None
        self._refreshing: dict[bool, asyncio.Future[FleetData]] = {}
        # (kind, mark) -> the highest id of the reports received before the mark, the mark the answer is
        # as of (the same unless the clock is behind the stored reports) and whether it was (the mark
        # held), read once per mark:
        # a report received just before a mark but committed after the read shows at the next mark,
        # and an answer never changes between marks.
        self._bounds: dict[tuple[str, int], tuple[_Published, bool]] = {}
        # kind -> the (bound, mark) published last: the bound never goes back, even when the clock does; the
        # mark neither while the clock is behind the stored reports. Read back from the store's meta table
        # at the first bound (_restore), saved there when it changes (save_meta); see _read_bound for a
        # store without it.
        self._floors: dict[str, _Published] = {}
        self._save_meta = save_meta
        self._saved: dict[str, _Published] = {}
        # The values still to save (kind -> the newest) and the one background save (_save_later).
        self._pending: dict[str, _Published] = {}
        self._saving: asyncio.Future[None] | None = None
        self._restoring: asyncio.Future[None] | None = None
        self._clock_behind = False
        # ((entities' bound, since, revoked devices), the earliest period start of the value reports up to
        # that bound): read once per bound, day and revocation
        self._oldest: tuple[tuple[int, int, tuple[str, ...]], int | None] | None = None
        # CSV bound -> device -> whether it has a report up to that bound (devices_reported)
        self._reported: dict[int, dict[str, bool]] = {}
        # The mark function of each kind of public answer (a bound is kept per kind: the CSV's is older).
        entity_step = publication.entity_mark_s(policy)
        self._mark_of: dict[str, Callable[[float], int]] = {
            "entities": functools.partial(publication.entity_mark, step=entity_step), "csv": publication.csv_mark}

    async def aclose(self) -> None:
        """Let a save of what was published finish (at most :data:`HEALTH_TIMEOUT_S`), then stop the
        worker threads (the application's cleanup calls this)."""
        saving = self._saving
        if saving is not None and not saving.done():
            try:
                await asyncio.wait_for(asyncio.shield(saving), HEALTH_TIMEOUT_S)
            except asyncio.TimeoutError:
                logger.warning("open data: saving what was published in the store did not end in %.0f s; "
                               "stopping without it", HEALTH_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - logged by _saved_or_failed
                pass
        self._reads.close()

    def _fields(self) -> list[str]:
        return sorted({f for k in self._policy.get("kinds", {}).values() for f in k.get("fields", {})})

    def _queries(self) -> ReportQueries:
        if self._store is None:
            raise StorageError("no report store attached to the web app", reason="read_failed")
        return self._store

    async def _bound(self, kind: str, mark: int) -> tuple[int, int]:
        """The highest id of the reports received before ``mark`` (read once per mark) and the mark the
        answer is as of. The id is never below what was published before for that ``kind`` (``entities``
        or ``csv``), whatever the clock does, nor below what the store's ``meta`` says was published; the
        mark neither while the clock is behind the newest stored report, and is ``mark`` once it is not."""
        await self._restore()
        got = self._bounds.get((kind, mark))
        if got is None:
            read = functools.partial(self._read_bound, kind, mark, self._floors.get(kind), self._clock())
            read_got, behind_s = await self._reads.quick(read, timeout_s=HEALTH_TIMEOUT_S)
            got = self._bounds.setdefault((kind, mark), (read_got, behind_s > CLOCK_BACK_TOLERANCE_S))
            while len(self._bounds) > _MARKS_KEPT:  # (a concurrent read's, above, if it came first)
                del self._bounds[next(iter(self._bounds))]
            self._note_clock(behind_s)
        (bound, at_mark, received), held = got
        floor = self._floors.get(kind, _NOTHING)
        if floor.bound > bound:
            bound, received = floor.bound, floor.received
        # The bound never goes down: what was published stays. The mark is the clock's once the clock is
        # not behind the stored reports: a mark saved by a clock that was ahead (and read back at start)
        # would else judge every device silent until the real clock reached it (review MEDIUM 1).
        self._floors[kind] = top = _Published(bound, max(at_mark, floor.mark) if held else at_mark, received)
        # Saved only as the reader at start accepts it: the bound's report received before the mark. Not
        # so just after a clock that ran ahead was set right (the bound is a report stamped ahead): the
        # value saved before stays until the bound moves on.
        if self._save_meta is not None and top != self._saved.get(kind) and top.consistent():
            self._save_later(kind, top)
        return top.bound, top.mark

    def _save_later(self, kind: str, top: _Published) -> None:
        """Save ``top`` in the store's ``meta`` in the background: a public request never waits for the
        store's writer (review LOW 2). One save in flight at most; a newer value of a kind replaces one
        still waiting."""
        self._saved[kind] = top  # first, so concurrent requests at a new mark save it once
        self._pending[kind] = top
        if self._saving is None or self._saving.done():
            self._saving = task = asyncio.ensure_future(self._save_pending())
            task.add_done_callback(self._saved_or_failed)

    async def _save_pending(self) -> None:
        assert self._save_meta is not None
        while self._pending:
            kind = next(iter(self._pending))
            top = self._pending.pop(kind)
            await self._save_meta(publication.published_key(kind), publication.encode_published(*top))

    def _saved_or_failed(self, task: asyncio.Future[None]) -> None:
        """The background save's end: a failure is logged and the values are saved again at the next
        bound (the answers were given: only a restart with the clock behind would lose what they
        published)."""
        if self._saving is task:
            self._saving = None
        if task.cancelled():
            self._saved.clear()
            return
        exc = task.exception()
        if exc is not None:
            self._saved.clear()
            self._pending.clear()
            if isinstance(exc, StorageError):
                logger.warning("open data: could not save what was published in the store (%s); it is kept in "
                               "memory and saved again at the next mark", exc)
            else:
                logger.error("open data: saving what was published in the store failed", exc_info=exc)
        elif self._pending and self._saving is None:  # a value added as the loop ended
            self._saving = again = asyncio.ensure_future(self._save_pending())
            again.add_done_callback(self._saved_or_failed)

    async def _restore(self) -> None:
        """Read back, once, what the store's ``meta`` says the public answers published (on the quick
        thread); after a failed read the next bound tries again."""
        restoring = self._restoring
        if restoring is None:
            restoring = self._restoring = asyncio.ensure_future(self._restore_once())

            def done(fut: asyncio.Future[None]) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    self._restoring = None

            restoring.add_done_callback(done)
        await asyncio.shield(restoring)

    async def _restore_once(self) -> None:
        for kind, got in (await self._reads.quick(self._read_published, timeout_s=HEALTH_TIMEOUT_S)).items():
            floor = self._floors.get(kind, _NOTHING)
            self._floors[kind] = got if got.bound >= floor.bound else floor._replace(mark=max(got.mark, floor.mark))
            self._saved[kind] = got

    def _read_published(self) -> dict[str, _Published]:
        """The saved (bound, mark, bound's receive time) of each kind; on a store thread.

        A value is used only if this store's publication can have saved it: report ``bound`` is in the
        store, with the receive time saved with it (a value copied from another store, or edited, names
        another), and was received before the saved mark. Anything else is ignored with a WARNING: it
        could publish at once reports received after the last mark (review MEDIUM 3). One id lookup.
        """
        queries = self._queries()
        saved = queries.meta_values(publication.PUBLISHED_KEY_PREFIX)
        out: dict[str, _Published] = {}
        for key, text in sorted(saved.items()):
            kind = key[len(publication.PUBLISHED_KEY_PREFIX):]
            decoded = publication.decode_published(text)
            got = _Published.of_saved(queries, decoded) if kind in self._mark_of and decoded is not None else None
            if got is None:
                logger.warning("open data: ignoring meta %s = %r of the report store: not what this store's "
                               "publication saved (its report id, receive time and mark disagree with the "
                               "store); publication resumes as on a store without it", key, text)
                continue
            out[kind] = got
        return out

    def _read_bound(self, kind: str, mark: int, floor: _Published | None,
                    now: float) -> tuple[_Published, float]:
        """The bound and the mark of ``mark``'s answer (with the bound's receive time), and how far the
        clock is behind the newest stored report (s); on a store thread.

        Only the ids above the bound published before are walked. A clock behind the newest stored
        report's receive time (set back, or a boot before NTP) holds what was published: its marks
        are earlier. What was published is saved in the store (``save_meta``) and read back at start;
        without it (no saved value: a store last run without ``save_meta``), after a restart with the
        clock behind, the gateway that stamped the newest report had reached that time, so the mark
        at or before it is where publication starts again (what was published at later marks before
        the stop, if the gateway ran past one without a new report, shows again when the clock
        passes them).
        """
        queries = self._queries()
        stamp = queries.last_report_stamp()
        if stamp is None:
            return (floor if floor is not None else _NOTHING._replace(mark=mark)), 0.0
        behind_s = stamp[1] - now
        if behind_s > CLOCK_BACK_TOLERANCE_S:
            if floor is not None:
                return floor, behind_s
            mark = self._mark_of[kind](stamp[1])
        above = floor if floor is not None else _NOTHING
        bound = queries.last_id_received_before(mark, above=above.bound)
        if bound == above.bound:
            return above._replace(mark=mark), behind_s
        return _Published(bound, mark, queries.reports_by_id([bound])[bound].received_at), behind_s

    def published_mark(self) -> int:
        """The mark the last published entities are as of (0 before any): the entities' mark, or while
        the clock is behind the stored reports the mark held (a device's silence is judged at it)."""
        return self._floors.get("entities", _NOTHING).mark

    def _note_clock(self, behind_s: float) -> None:
        """One WARNING when the clock falls behind the stored reports, one INFO when it has caught up."""
        behind = behind_s > CLOCK_BACK_TOLERANCE_S
        if behind and not self._clock_behind:
            logger.warning("open data: the gateway clock is %.0f s behind the newest stored report's receive time "
                           "(set back?); the open data holds what it published until the clock passes it", behind_s)
        elif self._clock_behind and not behind:
            logger.info("open data: the gateway clock is past the newest stored report again; publication marks resume")
        self._clock_behind = behind

    async def _fleet(self, published: bool = False) -> FleetData:
        """The fleet as of now, or as published at the entities' last mark: one refresh at a time,
        shared by the requests that wait for it.

        A refresh reads only the reports stored since the previous one (up to the mark's bound when
        published); the first read of both is :meth:`_load`.
        """
        self._queries()
        if self._state is None:
            loaded = await self._load()
            if not published:
                return loaded
        state = self._public if published else self._state
        assert state is not None
        refreshing = self._refreshing.get(published)
        if refreshing is None:
            if published:
                upto, mark = await self._bound("entities", self._mark_of["entities"](self._clock()))
                read = functools.partial(state.refresh, mark, upto=upto)
            else:
                read = functools.partial(state.refresh, int(self._clock()))
            refreshing = self._refreshing.get(published)  # another request may have started one meanwhile
        if refreshing is None:
            run = self._reads.quick if state.loaded else self._reads.bulk
            task = asyncio.ensure_future(run(read))
            self._refreshing[published] = refreshing = task

            def done(fut: asyncio.Future[FleetData]) -> None:
                if self._refreshing.get(published) is fut:
                    del self._refreshing[published]
                if not fut.cancelled():
                    fut.exception()  # retrieved here too: every waiter may have gone

            task.add_done_callback(done)
        return await asyncio.shield(refreshing)

    async def _load(self) -> FleetData:
        """Read the store once for both fleets, on a bulk thread (seconds on a large store), so the
        quick thread stays free: the published one up to the entities' current bound, then the
        operators' one as a copy of it plus the reports stored since (each read the whole store on
        its own before: ~13 s each on a million reports). One load at a time, shared by the
        requests that wait for it; after a failure the next request tries again. Returns the
        operators' fleet as of now."""
        loading = self._loading
        if loading is None:
            loading = self._loading = asyncio.ensure_future(self._load_once())

            def done(fut: asyncio.Future[FleetData]) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    self._loading = None  # retried by the next request (the exception is retrieved here)

            loading.add_done_callback(done)
        return await asyncio.shield(loading)

    async def _load_once(self) -> FleetData:
        upto, mark = await self._bound("entities", self._mark_of["entities"](self._clock()))
        self._state, data = await self._reads.bulk(functools.partial(self._read_both, mark, upto))
        return data

    def _read_both(self, mark: int, upto: int) -> tuple[FleetState, FleetData]:
        """The published fleet as of ``mark`` (reports up to ``upto``), and from it the operators' fleet
        as of now (the state and its data); on a bulk thread."""
        public = self._public
        assert public is not None
        if not public.loaded:  # else loaded by an attempt whose operators' part failed
            public.refresh(mark, upto=upto)
        state = public.fork()
        return state, state.refresh(int(self._clock()))

    async def devices(self, *, published: bool = False) -> Sequence[DeviceView]:
        """All devices, registry first; reporting state from the store (followed incrementally), or
        when ``published`` as of the entities' last publication mark (the reports received before it)."""
        data = await self._fleet(published)
        if self._registry is not None:
            base = [(r.id, r.kind, r.zone, float(r.lat), float(r.lon), bool(r.revoked)) for r in self._registry.list()]
        else:
            base = [(dev, st.kind, st.zone, 0.0, 0.0, False) for dev, st in data.devices.items()]
        out = []
        for dev_id, kind, zone, lat, lon, revoked in base:
            st = data.devices.get(dev_id)
            if st is None:
                out.append(DeviceView(id=dev_id, kind=kind, zone=zone, lat=lat, lon=lon, revoked=revoked))
                continue
            out.append(DeviceView(
                id=dev_id, kind=kind, zone=zone, lat=lat, lon=lon, revoked=revoked, last_seen=st.last_seen,
                link=st.link, latest=st.latest, latest_at=st.latest_at, alarms=st.alarms,
                lamp_changed_at=st.lamp_changed_at,
            ))
        return sorted(out, key=lambda d: d.id)

    async def device_count(self) -> int:
        """Registered devices (else devices that reported), after one cheap read of the store (an
        index lookup, or without a registry the device ids' skip-scan, whatever the store's size);
        raises when the store cannot be read in time."""
        store = self._queries()
        if self._registry is None:
            # Reading the device ids is the store probe itself.
            return len(await self._reads.quick(store.device_ids, timeout_s=HEALTH_TIMEOUT_S))
        await self._reads.quick(store.last_report_id, timeout_s=HEALTH_TIMEOUT_S)
        return len(self._registry.list())

    async def readings(self, *, since: int, until: int, device: str | None, fields: Sequence[str] | None,
                       limit: int, after: ReadingKey | None = None) -> Sequence[ReadingView]:
        """Released values starting in ``[since, until)`` after the position ``after``, in the order
        (start, device, report id, field), at most ``limit``."""
        read = functools.partial(self._queries().readings_page, fields=list(fields or self._fields()),
                                 start=since, end=until, device=device, after=after, limit=limit)
        rows = await self._reads.bulk(read)
        return [ReadingView(r.device, r.kind, r.zone, r.field, r.w, r.l, r.value, r.report_id) for r in rows]

    async def hourly(self, *, since: int, until: int, zone: str | None,
                     fields: Sequence[str] | None) -> Sequence[HourlyAggregate]:
        """Per zone/hour/field aggregates of values starting in ``[since, until)``, by hour, zone, field."""
        read = functools.partial(self._queries().hourly_aggregates_of, fields=list(fields or self._fields()),
                                 start=since, end=until, zone=zone)
        return await self._reads.bulk(read)

    async def device_hours(self, *, since: int, until: int, devices: Sequence[str], fields: Sequence[str] | None,
                           zone: str | None, received_before: int | None = None) -> Sequence[DeviceHourAggregate]:
        """Per device/hour/zone/field count, sum and end of the values of ``devices``, for the rows whose
        period ends in ``(since, until]`` (see ``ReportQueries.device_hourly``); of the reports received
        before ``received_before`` only, when given (a publication mark)."""
        if not devices:
            return []
        max_id = (await self._bound("csv", received_before))[0] if received_before is not None else None
        read = functools.partial(self._queries().device_hourly, fields=list(fields or self._fields()),
                                 start=since, end=until, devices=list(devices), zone=zone,
                                 max_period_s=self._max_period_s(), max_id=max_id)
        return await self._reads.bulk(read)

    async def reported(self, devices: Sequence[str], *, received_before: int) -> frozenset[str]:
        """Those of ``devices`` that have a report received before ``received_before`` (a CSV
        publication mark): the devices the CSV shows, and whose zones it names, change only at its
        marks, not at the entities' (review LOW4). Read once per device and mark, on a bulk thread."""
        bound = (await self._bound("csv", received_before))[0]
        known = self._reported.get(bound)
        if known is None:
            known = self._reported[bound] = {}
            while len(self._reported) > 2:
                del self._reported[next(iter(self._reported))]
        missing = [dev for dev in devices if dev not in known]
        if missing:
            got = await self._reads.bulk(functools.partial(self._queries().devices_reported, missing, max_id=bound))
            known.update((dev, dev in got) for dev in missing)
        return frozenset(dev for dev in devices if known.get(dev))

    def _max_period_s(self) -> int:
        """The longest period a stored value can have: a day (``day`` reports), or a longer window or
        release period of the policy."""
        periods = [86400]
        for kspec in self._policy.get("kinds", {}).values():
            periods.append(int(kspec.get("window_s", 0) or 0))
            periods.extend(int(f.get("release_every_s", 0) or 0) for f in kspec.get("fields", {}).values())
        return max(periods)

    async def range_stamp(self, *, since: int, until: int,
                          received_before: int | None = None) -> tuple[int, int, float | None]:
        """What the rows :meth:`device_hours` gives for ``(since, until]`` are made of: the store's data
        version (retention removals), and the id and receive time of the newest report among the
        periods those rows may hold (0 and None when there is none). With ``received_before`` (a CSV
        publication mark): of the reports received before it, and instead of the receive time the
        CSV mark that first published that report (no arrival finer than the hour). Read on a bulk
        thread: a range scan of the period-start index."""
        max_id = (await self._bound("csv", received_before))[0] if received_before is not None else None
        read = functools.partial(self._queries().range_stamp, start=since - self._max_period_s() - 3600, end=until,
                                 max_id=max_id)
        stamp = await self._reads.bulk(read)
        at = stamp.newest_at
        if received_before is not None and at is not None:
            at = float(publication.csv_published_at(at))
        return stamp.data_version, stamp.newest_id, at

    async def oldest_published(self, *, since: int = 0) -> int | None:
        """The earliest period start, at or after ``since``, of the value reports (``win``, ``hour``,
        ``day``: not a board's ``boot`` report, its period near the epoch when its clock was never set,
        nor alarms) the entities publish: received before their last mark, of the devices not revoked.
        None when there is none: where the published data can begin (the catalogue's ``temporal``;
        ``since``, the day values older than the longest retention are removed by, keeps the index
        walk short). When every such report is older than ``since`` (retention held or skipped keeps
        their values), ``since`` itself. One index walk per entities' bound, ``since`` and revocation, on the quick thread."""
        bound = (await self._bound("entities", self._mark_of["entities"](self._clock())))[0]
        revoked = tuple(sorted(r.id for r in self._registry.list() if r.revoked)) if self._registry is not None else ()
        key = (bound, int(since), revoked)
        held = self._oldest
        if held is None or held[0] != key:
            oldest = await self._oldest_from(bound, int(since), revoked) if bound > 0 else None
            if oldest is None and bound > 0 and since > 0:
                # Nothing from ``since`` on, but published values may all be older (retention held or
                # skipped keeps them): the data then begins at or before ``since``, not nowhere.
                older = await self._oldest_from(bound, 0, revoked)
                oldest = None if older is None else int(since)
            self._oldest = held = (key, oldest)
        return held[1]

    async def _oldest_from(self, bound: int, since: int, revoked: tuple[str, ...]) -> int | None:
        read = functools.partial(self._queries().oldest_period_start, max_id=bound, since=since, excluded=revoked)
        result: int | None = await self._reads.quick(read, timeout_s=HEALTH_TIMEOUT_S)
        return result

    async def latest_stored(self) -> tuple[int, float] | None:
        """Id and receive time of the most recently stored report (None for an empty store); one index
        lookup."""
        return await self._reads.quick(self._queries().last_report_stamp, timeout_s=HEALTH_TIMEOUT_S)


class RegistryAdmin:
    """Admin operations on ``gateway.registry.Registry`` and :class:`RetentionSettings`.

    Args:
        registry: the device registry.
        policy: the privacy policy (retention maxima).
        retention: retention settings shared with the gateway's retention task; a private
            in-memory one when None.
    """

    def __init__(self, *, registry: Any, policy: Mapping[str, Any],
                 retention: RetentionSettings | None = None) -> None:
        self._registry = registry
        self._retention = retention if retention is not None else RetentionSettings(policy)
        # Writes run on worker threads (off the event loop); one at a time, so two requests for one
        # device cannot interleave a check with the other's write.
        self._writes = threading.Lock()

    def _record(self, device_id: str) -> Any:
        try:
            return self._registry.get(device_id)
        except RegistryError as exc:
            if exc.reason == "unknown_device":
                raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id") from None
            raise Unavailable(f"registry error ({exc.reason})", code="registry") from None

    def locations(self) -> Mapping[str, tuple[str, str]]:
        """Registered ``(lat, lon)`` per device id, as stored (decimal strings with the digits given)."""
        try:
            return {r.id: (r.lat, r.lon) for r in self._registry.list()}
        except RegistryError as exc:
            raise Unavailable(f"registry error ({exc.reason})", code="registry") from None

    def revoke(self, device_id: str) -> None:
        """Revoke; 409 when already revoked."""
        with self._writes:
            self._revoke(device_id)

    def _revoke(self, device_id: str) -> None:
        if self._record(device_id).revoked:
            raise Conflict(f"device '{device_id}' is already revoked", code="already_revoked", param="device_id")
        self._registry.revoke(device_id)

    def rotate_key(self, device_id: str) -> Mapping[str, Any]:
        """New key written to the registry's key file; returns its path and key version (409 when revoked)."""
        with self._writes:
            return self._rotate_key(device_id)

    def _rotate_key(self, device_id: str) -> Mapping[str, Any]:
        if self._record(device_id).revoked:
            raise Conflict(f"device '{device_id}' is revoked; its key is not rotated (provision the board under "
                           "a new id)", code="revoked", param="device_id")
        path = self._registry.rotate_key(device_id)
        return {"key_file": str(path), "key_version": int(self._registry.get(device_id).key_version)}

    def enroll(self, device_id: str, *, kind: str, zone: str, lat: str, lon: str, key: bytes,
               replace: bool) -> Mapping[str, Any]:
        """Register (or confirm) a device; 400 for bad values, 409 when registered differently."""
        try:
            with self._writes:
                result = self._registry.enroll(device_id, kind=kind, zone=zone, lat=lat, lon=lon, key=key,
                                               replace=replace)
        except RegistryError as exc:
            reason = exc.reason or "registry"
            if reason in ("bad_value", "bad_key"):
                raise BadParameter(str(exc), param=exc.field or "body") from None
            if reason in ("conflict", "moved", "revoked", "exists"):
                raise Conflict(str(exc), code=reason, param="device_id") from None
            raise Unavailable(f"registry error ({reason})", code="registry") from None
        return {"result": result, "key_version": int(self._registry.get(device_id).key_version)}

    def move(self, device_id: str, *, lat: str, lon: str, zone: str | None) -> Mapping[str, Any]:
        """New location (and zone) of a registered device; 400 bad values, 404 unknown, 409 revoked."""
        try:
            with self._writes:
                before = self._registry.get(device_id)
                rec, changed = self._registry.move(device_id, lat=lat, lon=lon, zone=zone)
        except RegistryError as exc:
            reason = exc.reason or "registry"
            if reason == "bad_value":
                raise BadParameter(str(exc), param=exc.field or "body") from None
            if reason == "unknown_device":
                raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id") from None
            if reason == "revoked":
                raise Conflict(str(exc), code="revoked", param="device_id") from None
            raise Unavailable(f"registry error ({reason})", code="registry") from None
        return {"result": "moved" if changed else "unchanged", "zone": rec.zone, "lat": rec.lat, "lon": rec.lon,
                "was": {"zone": before.zone, "lat": before.lat, "lon": before.lon}}

    def retention(self) -> Mapping[str, Mapping[str, int]]:
        """Effective retention ``kind -> field -> days``."""
        return self._retention.as_json()

    def set_retention(self, kind: str, field: str, days: int) -> None:
        """Shorten one field's retention (validated against the policy)."""
        self._retention.set(kind, field, days)
