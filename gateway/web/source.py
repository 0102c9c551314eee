"""Adapters from the gateway's storage read API and registry to the web layer's views.

:class:`StoreFleetSource` joins the registry (kind, zone, location, revoked) with the report
store (last seen, link, latest released values, alarms); :class:`RegistryAdmin` performs admin
changes on the registry and the retention settings.

The public open data reads the same store only up to a publication mark
(:mod:`gateway.web.publication`): ``published=True`` on :meth:`StoreFleetSource.devices` (the
entities' mark), ``received_before`` (the CSV's mark) on :meth:`~StoreFleetSource.device_hours` and
:meth:`~StoreFleetSource.rows_stamp`; :class:`gateway.web.published_marks.PublishedMarks` keeps those
marks' bounds from going back and saves them in the store.

Store reads run on worker threads (:class:`gateway.web.reads.StoreReads`): the event loop that
awaits them also reads the serial ports and sends the ACKs. The registry, a small table the
ingest pipeline also reads on the loop, is read on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import functools
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Mapping, Sequence

from gateway.errors import RegistryError, StorageError
from gateway.health import Problem
from gateway.registry.removal import SETTLE_MARGIN_S, api_advice, keyless_advice
from gateway.storage.device_traces import device_traces
from gateway.storage.queries import ReportQueries
from gateway.storage.store_files import store_writer
from gateway.web import range_stamps
from gateway.web.errors import BadParameter, Conflict, NotFound, Unavailable
from gateway.web.published_marks import REPEATS, PublishedMarks
from gateway.web.reads import StoreReads
from gateway.web.retention import RetentionSettings
from gateway.web.snapshot import FleetData, FleetState
from gateway.web.views import DaySpend, DeviceHourAggregate, DeviceView, HourlyAggregate, ReadingKey, ReadingView

HEALTH_TIMEOUT_S = 5.0
#: How long a device removal through the admin API waits for the gateway to commit the device's reports it
#: accepted before the device was retired (the writer's backlog of up to 2 x max_in_flight reports, a poison
#: split, a retention batch, a slow fsync: seconds, not minutes); beyond it the removal is put back (503).
REMOVAL_SETTLE_LIMIT_S = 30.0
# No bound on a report id (SQLite's largest integer): "any stored report".
_ANY_ID = 2**63 - 1


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
            start, so it never goes back across a restart either; only ``published:`` keys are written
            through it (:class:`gateway.web.published_marks.PublishedMarks`). None: kept in memory only.
    """

    def __init__(self, *, store: ReportQueries | None, registry: Any | None, policy: Mapping[str, Any],
                 clock: Callable[[], float] = time.time, reads: StoreReads | None = None,
                 save_meta: Callable[[str, str], Awaitable[object]] | None = None) -> None:
        self._store = store
        self._registry = registry
        self._policy = policy
        self._clock = clock
        # Given the store's file, reads wait (bounded) while its -wal is over its limit (gateway.web.wal_gate).
        self._reads = reads if reads is not None else StoreReads(store_path=getattr(store, "db_path", None))
        # The operators' fleet: None until the first read, which forks it from the published one.
        self._state: FleetState | None = None
        # The fleet as published at the entities' last mark (module gateway.web.publication).
        self._public = FleetState(store, bounded=True) if store is not None else None
        self._loading: asyncio.Future[FleetData] | None = None
        self._refreshing: dict[bool, asyncio.Future[FleetData]] = {}
        # The bound and mark of each kind of public answer, and their saving in the store's meta.
        self._marks = PublishedMarks(queries=self._queries, reads=self._reads, policy=policy, clock=clock,
                                     save_meta=save_meta, timeout_s=HEALTH_TIMEOUT_S)
        # ((entities' bound, since, revoked devices), the earliest period start of the value reports up to
        # that bound): read once per bound, day and revocation
        self._oldest: tuple[tuple[int, int, tuple[str, ...]], int | None] | None = None
        # CSV bound -> device -> whether it has a report up to that bound (devices_reported)
        self._reported: dict[int, dict[str, bool]] = {}
        # the CSV exports' stamps, per query, mark bound and data version (review L1)
        self._stamps = range_stamps.StampCache()
        # (the registry's version, its device ids): an unknown device's did-you-mean reads them once per change
        self._registry_ids: tuple[object, tuple[str, ...]] | None = None

    async def aclose(self) -> None:
        """Let a save of what was published finish (at most :data:`HEALTH_TIMEOUT_S`), then stop the
        worker threads (the application's cleanup calls this)."""
        await self._marks.aclose()
        self._reads.close()

    def _fields(self) -> list[str]:
        return sorted({f for k in self._policy.get("kinds", {}).values() for f in k.get("fields", {})})

    def _queries(self) -> ReportQueries:
        if self._store is None:
            raise StorageError("no report store attached to the web app", reason="read_failed")
        return self._store

    def published_mark(self) -> int:
        """The mark the last published entities are as of (0 before any): the entities' mark, or while
        the clock is behind the stored reports the mark held (a device's silence is judged at it)."""
        return self._marks.published_mark()

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
                upto, mark = await self._marks.current("entities")
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
        upto, mark = await self._marks.current("entities")
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
            base = [(r.id, r.kind, r.zone, float(r.lat), float(r.lon), bool(r.revoked), bool(r.retired))
                    for r in self._registry.list()]
        else:
            base = [(dev, st.kind, st.zone, 0.0, 0.0, False, False) for dev, st in data.devices.items()]
        out = []
        for dev_id, kind, zone, lat, lon, revoked, retired in base:
            st = data.devices.get(dev_id)
            if st is None:
                out.append(DeviceView(id=dev_id, kind=kind, zone=zone, lat=lat, lon=lon, revoked=revoked,
                                      retired=retired))
                continue
            out.append(DeviceView(
                id=dev_id, kind=kind, zone=zone, lat=lat, lon=lon, revoked=revoked, last_seen=st.last_seen,
                link=st.link, latest=st.latest, latest_at=st.latest_at, alarms=st.alarms,
                lamp_changed_at=st.lamp_changed_at, fw=st.fw, last_end=st.last_end, retired=retired,
            ))
        return sorted(out, key=lambda d: d.id)

    async def device_count(self) -> int:
        """Registered devices (else devices that reported), after one cheap read of the store (an
        index lookup, or without a registry the device ids' skip-scan, whatever the store's size);
        raises when the store cannot be read in time, and :class:`Unavailable` (code ``registry``) when
        the registry cannot be read."""
        store = self._queries()
        if self._registry is None:
            # Reading the device ids is the store probe itself.
            return len(await self._reads.quick(store.device_ids, timeout_s=HEALTH_TIMEOUT_S))
        await self._reads.quick(store.last_report_id, timeout_s=HEALTH_TIMEOUT_S)
        try:
            return len(self._registry.list())
        except RegistryError as exc:
            # A registry briefly locked (a CLI ``devices add``) is the documented warning, not the store's
            # critical ``store_unreadable``: the reports are readable.
            raise Unavailable(f"registry cannot be read ({exc.reason or 'registry'})", code="registry") from None

    async def device_known(self, device: str) -> bool:
        """Whether ``device`` is registered (revoked and retired ones too) or has stored reports (a store
        without a registry, or a device the registry no longer lists): what ``/api/readings?device=``
        accepts. The registry read on the loop (its primary key); the store only for an id the registry
        does not list: one seek in its ``(device, w)`` index, on the quick thread."""
        if self._registry is not None:
            try:
                if self._registry.lookup(device) is not None:
                    return True
            except RegistryError as exc:
                raise Unavailable(f"registry cannot be read ({exc.reason or 'registry'})", code="registry") from None
        read = functools.partial(self._queries().devices_reported, [device], max_id=_ANY_ID)
        return device in await self._reads.quick(read, timeout_s=HEALTH_TIMEOUT_S)

    async def similar_devices(self, device: str) -> list[str]:
        """The known device ids (:meth:`device_known`) close to ``device`` (a typo's did-you-mean), at most
        three, closest first. The stored ids are the operators' fleet's, held in memory (refreshed with the
        reports stored since its last read, as ``/api/devices``); only before its first load, one walk of the
        store's device ids. The registry's ids are read again only when it changed (its version)."""
        ids = set(self._registered_ids())
        state = self._state
        if state is not None and state.loaded:
            ids.update((await self._fleet()).devices)
        else:
            ids.update(await self._reads.quick(self._queries().device_ids, timeout_s=HEALTH_TIMEOUT_S))
        return difflib.get_close_matches(device, sorted(ids), n=3, cutoff=0.6)

    def _registered_ids(self) -> tuple[str, ...]:
        """The registry's device ids (none without one), listed again only when its version moved (a
        registry without a version: every time)."""
        if self._registry is None:
            return ()
        try:
            version = getattr(self._registry, "version", None)
            held = self._registry_ids
            if version is not None and held is not None and held[0] == version:
                return held[1]
            ids = tuple(r.id for r in self._registry.list())
        except RegistryError as exc:
            raise Unavailable(f"registry cannot be read ({exc.reason or 'registry'})", code="registry") from None
        if version is not None:
            self._registry_ids = (version, ids)
        return ids

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
        max_id = (await self._marks.bound("csv", received_before))[0] if received_before is not None else None
        read = functools.partial(self._queries().device_hourly, fields=list(fields or self._fields()),
                                 start=since, end=until, devices=list(devices), zone=zone,
                                 max_period_s=self._max_period_s(), max_id=max_id)
        return await self._reads.bulk(read)

    async def reported(self, devices: Sequence[str], *, received_before: int) -> frozenset[str]:
        """Those of ``devices`` that have a report received before ``received_before`` (a CSV
        publication mark): the devices the CSV shows, and whose zones it names, change only at its
        marks, not at the entities' (review LOW4). Read once per device and mark, on a bulk thread."""
        bound = (await self._marks.bound("csv", received_before))[0]
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
        # the policy's default window is the window of a kind without its own (liveness.window_of)
        periods = [86400, int(self._policy.get("defaults", {}).get("window_s", 0) or 0)]
        for kspec in self._policy.get("kinds", {}).values():
            periods.append(int(kspec.get("window_s", 0) or 0))
            periods.extend(int(f.get("release_every_s", 0) or 0) for f in kspec.get("fields", {}).values())
        return max(periods)

    async def rows_stamp(self, *, since: int, until: int, devices: Sequence[str], zone: str | None,
                         received_before: int) -> tuple[int, int, int, float | None]:
        """What the rows :meth:`device_hours` gives for ``(since, until]`` of ``devices`` (and ``zone``) are
        made of, of the reports published at the CSV mark ``received_before``: the store's data version
        (retention removals), the id of the newest report those rows hold and how many they hold
        (:func:`gateway.web.range_stamps.csv_rows_stamp`; a report for another range changes neither), and
        the CSV mark that first published that newest report (None when there is none; no arrival finer
        than the hour). One read of the range's report rows on a bulk thread (no value read), kept per
        query, mark bound and data version (:meth:`_cached_stamp`)."""
        read = functools.partial(range_stamps.csv_rows_stamp, since=since, until=until)
        return await self._range_stamp(("rows", int(since), int(until)), read, devices=devices, zone=zone,
                                       received_before=received_before)

    async def spend_stamp(self, *, first: int, end: int, devices: Sequence[str], zone: str | None,
                          received_before: int) -> tuple[int, int, int, float | None]:
        """As :meth:`rows_stamp`, of the stored releases :meth:`privacy_spend` counts for the days
        ``[first, end)`` (:func:`gateway.web.range_stamps.spend_stamp`: the period ends in them); the
        repeat releases are bounded apart (:meth:`repeats_bound`)."""
        read = functools.partial(range_stamps.spend_stamp, first=first, end=end)
        return await self._range_stamp(("spend", int(first), int(end)), read, devices=devices, zone=zone,
                                       received_before=received_before)

    async def _range_stamp(self, query: tuple[Any, ...], read: Callable[..., range_stamps.RowsStamp], *,
                           devices: Sequence[str], zone: str | None,
                           received_before: int) -> tuple[int, int, int, float | None]:
        """The common part of :meth:`rows_stamp` and :meth:`spend_stamp`: ``read`` (a
        :mod:`gateway.web.range_stamps` reader given its range) run on the store's queries for ``devices``
        and ``zone``, bounded by the CSV mark ``received_before``'s report id and the longest period a value
        may have, held under ``query`` (the CSV's name and range) and those bounds (:meth:`_cached_stamp`)."""
        max_id = (await self._marks.bound("csv", received_before))[0]
        period = self._max_period_s()
        bound_read = functools.partial(read, self._queries(), devices=list(devices), max_period_s=period,
                                       max_id=max_id, zone=zone)
        key = (*query, tuple(devices), zone, period, max_id)
        return self._published_stamp(await self._cached_stamp(key, bound_read))

    async def _cached_stamp(self, key: tuple[Any, ...],
                            read: Callable[[], range_stamps.RowsStamp]) -> range_stamps.RowsStamp:
        """The stamp ``read`` gives, held per ``key`` (the query and the mark's id bound) and the store's data
        version (:class:`gateway.web.range_stamps.StampCache`): a repeated request reads that one counter on
        the quick thread, a new one (or one after a retention change) the range's reports on a bulk thread."""
        version = await self._reads.quick(self._queries().data_version, timeout_s=HEALTH_TIMEOUT_S)
        stamp = self._stamps.get(key, version)
        if stamp is None:
            stamp = await self._reads.bulk(read)
            self._stamps.put(key, stamp)  # under the version it was read with (its own snapshot's)
        return stamp

    @staticmethod
    def _published_stamp(stamp: range_stamps.RowsStamp) -> tuple[int, int, int, float | None]:
        # dated by its newest report's mark, or a later retention removal's (range_stamps.published_at)
        return stamp.data_version, stamp.newest_id, stamp.count, range_stamps.published_at(stamp)

    async def repeats_bound(self, *, received_before: int) -> int:
        """The highest ``window_duplicates`` rowid of the repeat releases published at the CSV mark
        ``received_before`` (0: none): read once per mark and never lowered, saved with the other
        publication bounds (:class:`gateway.web.published_marks.PublishedMarks`, kind ``repeats``), so a
        clock set back does not take a published repeat release back, and one committed after the mark
        shows at the next."""
        return (await self._marks.bound(REPEATS, received_before))[0]

    async def privacy_spend(self, *, day: int, devices: Sequence[str], fields: Sequence[str], zone: str | None,
                            received_before: int) -> Sequence[DaySpend]:
        """The milli-ε ``devices`` spent on ``fields`` on the UTC day starting at ``day``, per device and
        field (``ReportQueries.privacy_spend``): of the reports and repeat releases published at the CSV
        mark ``received_before`` (their bounds as :meth:`device_hours` and :meth:`repeats_bound`), one
        short read on a bulk thread."""
        if not devices or not fields:
            return []
        max_id = (await self._marks.bound("csv", received_before))[0]
        max_repeat = await self.repeats_bound(received_before=received_before)
        read = functools.partial(self._queries().privacy_spend, start=day, end=day + 86400, devices=list(devices),
                                 fields=list(fields), max_period_s=self._max_period_s(), max_id=max_id,
                                 max_repeat=max_repeat, zone=zone)
        return await self._reads.bulk(read)

    async def oldest_published(self, *, since: int = 0) -> int | None:
        """The earliest period start, at or after ``since``, of the value reports (``win``, ``hour``,
        ``day``: not a board's ``boot`` report, its period near the epoch when its clock was never set,
        nor alarms) the entities publish: received before their last mark, of the devices neither revoked nor
        retired (:func:`gateway.web.ngsi.publishable`).
        None when there is none: where the published data can begin (the catalogue's ``temporal``;
        ``since``, the day values older than the longest retention are removed by, keeps the index
        walk short). When every such report is older than ``since`` (retention held or skipped keeps
        their values), ``since`` itself. One index walk per entities' bound, ``since`` and set of revoked or
        retired devices, on the quick thread."""
        bound = (await self._marks.current("entities"))[0]
        excluded = (tuple(sorted(r.id for r in self._registry.list() if r.revoked or r.retired))
                   if self._registry is not None else ())
        key = (bound, int(since), excluded)
        held = self._oldest
        if held is None or held[0] != key:
            oldest = await self._oldest_from(bound, int(since), excluded) if bound > 0 else None
            if oldest is None and bound > 0 and since > 0:
                # Nothing from ``since`` on, but published values may all be older (retention held or
                # skipped keeps them): the data then begins at or before ``since``, not nowhere.
                older = await self._oldest_from(bound, 0, excluded)
                oldest = None if older is None else int(since)
            self._oldest = held = (key, oldest)
        return held[1]

    async def _oldest_from(self, bound: int, since: int, excluded: tuple[str, ...]) -> int | None:
        read = functools.partial(self._queries().oldest_period_start, max_id=bound, since=since, excluded=excluded)
        result: int | None = await self._reads.quick(read, timeout_s=HEALTH_TIMEOUT_S)
        return result

    async def latest_stored(self) -> tuple[int, float] | None:
        """Id and receive time of the most recently stored report (None for an empty store); one index
        lookup."""
        return await self._reads.quick(self._queries().last_report_stamp, timeout_s=HEALTH_TIMEOUT_S)

    def store_problems(self) -> list[Problem]:
        """The store read side's health problems for ``/healthz``: ``store_wal_unchecked`` while the reads' last
        wait for a checkpoint of the over-limit ``-wal`` ran out and it is still not checkpointed whole
        (:meth:`gateway.web.wal_gate.WalGate.held`); none once it is. Cheap (at most one read of the
        ``-shm``'s header), on the event loop."""
        gate = self._reads.wal_gate
        log = gate.held() if gate is not None else None
        if gate is None or log is None:
            return []
        return [Problem("store_wal_unchecked", "the report store's write-ahead log holds %.1f MiB (over %.0f MiB) "
                        "not checkpointed: reads waited %.0f s for a checkpoint and ran anyway (%d times so far); "
                        "it keeps growing while store reads overlap every commit"
                        % (log.log_bytes / 1048576, gate.limit_bytes / 1048576, gate.wait_s, gate.gave_up))]

    async def highest_seq(self, device: str) -> int:
        """The highest seq stored under ``device``, 0 when none: an index lookup per table, on the quick
        thread (503 ``store_timeout`` when the store does not answer in time)."""
        return await self._reads.quick(functools.partial(self._queries().highest_seq, device),
                                       timeout_s=HEALTH_TIMEOUT_S)


class RegistryAdmin:
    """Admin operations on ``gateway.registry.Registry`` and :class:`RetentionSettings`.

    Args:
        registry: the device registry: the instance the gateway's verifier reads (a change through it
            empties the verifier's cache at once, which :meth:`remove` relies on).
        policy: the privacy policy (retention maxima).
        retention: retention settings shared with the gateway's retention task; a private
            in-memory one when None.
        store_path: the report store of the gateway the registry serves, which :meth:`remove` checks for
            anything of the device; None: removal answers 503 ``no_store``.
        store_batch_ms: the gateway's ``[storage] batch_ms``: how long its writer may hold an accepted report
            before the commit, waited (with a margin) before :meth:`remove` checks the store again, when
            ``ingest_settled`` is None.
        ingest_settled: the gateway's ``IngestService.settled``: :meth:`remove` waits on it (on the running
            loop, which the constructor takes; at most :data:`REMOVAL_SETTLE_LIMIT_S`) until every report of
            the device accepted before it was retired is committed, however long the writer's backlog.
    """

    def __init__(self, *, registry: Any, policy: Mapping[str, Any],
                 retention: RetentionSettings | None = None, store_path: Path | None = None,
                 store_batch_ms: int = 50, ingest_settled: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._registry = registry
        self._retention = retention if retention is not None else RetentionSettings(policy)
        self._store_path = store_path
        self._store_batch_ms = store_batch_ms
        self._settled = ingest_settled
        self._loop = asyncio.get_running_loop() if ingest_settled is not None else None
        # Writes run on worker threads (off the event loop); one at a time, so two requests for one
        # device cannot interleave a check with the other's write (a removal lets go of it while it waits:
        # its last step checks the row again under the registry's own write lock).
        self._writes = threading.Lock()
        # Removals running (also while waiting, without _writes), and whether close() was called: a stop
        # waits for them before the registry is closed under them.
        self._removals = threading.Condition()
        self._running_removals = 0
        self._closed = False

    @contextmanager
    def _write(self) -> Iterator[None]:
        """Hold the admin write lock; 503 ``registry`` once :meth:`close` was called (the gateway stops)."""
        with self._writes:
            if self._closed:
                raise Unavailable("the gateway is stopping: its registry takes no admin write now", code="registry")
            yield

    def close(self, timeout_s: float) -> bool:
        """Refuse admin writes from now on and wait (blocking, at most ``timeout_s``) for the ones running to
        end, a device removal waiting for the ingest included: the gateway's stop calls it before it closes the
        registry, so a removal finishes (removed, or put back) rather than failing on a closed connection.
        Returns False when one was still running at the bound (a removal then stays as the registry closing
        under it leaves it: retired for its removal at worst, which a new removal or a reinstate finishes)."""
        deadline = time.monotonic() + timeout_s
        with self._removals:
            self._closed = True
            ended = self._removals.wait_for(lambda: self._running_removals == 0, timeout=timeout_s)
        if not self._writes.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        self._writes.release()
        return ended

    def _record(self, device_id: str) -> Any:
        try:
            return self._registry.get(device_id)
        except RegistryError as exc:
            if exc.reason == "unknown_device":
                raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id") from None
            raise Unavailable(f"registry error ({exc.reason})", code="registry") from None

    def require_registered(self, device_id: str) -> None:
        """Return when the registry holds ``device_id``; 404 ``unknown_device`` otherwise."""
        self._record(device_id)

    def locations(self) -> Mapping[str, tuple[str, str]]:
        """Registered ``(lat, lon)`` per device id, as stored (decimal strings with the digits given)."""
        try:
            return {r.id: (r.lat, r.lon) for r in self._registry.list()}
        except RegistryError as exc:
            raise Unavailable(f"registry error ({exc.reason})", code="registry") from None

    def revoke(self, device_id: str) -> None:
        """Revoke; 409 when already revoked."""
        with self._write():
            self._revoke(device_id)

    def _revoke(self, device_id: str) -> None:
        if self._record(device_id).revoked:
            raise Conflict(f"device '{device_id}' is already revoked", code="already_revoked", param="device_id")
        self._registry.revoke(device_id)

    def retire(self, device_id: str) -> None:
        """Retire (also one retired only for a removal that waits: retired for good then); 404 unknown, 409
        ``already_retired`` or ``revoked``."""
        self._retire_or_reinstate(device_id, retire=True)

    def reinstate(self, device_id: str) -> str | None:
        """Take a retired device back; 404 unknown, 409 ``not_retired`` or ``revoked``. Returns a warning when
        its key is not usable (none of its frames can be verified: what to do), else None."""
        self._retire_or_reinstate(device_id, retire=False)
        problem = self._registry.key_problem(device_id)
        return None if problem is None else keyless_advice(device_id, problem)

    def _retire_or_reinstate(self, device_id: str, *, retire: bool) -> None:
        try:
            with self._write():
                if retire:
                    self._registry.retire(device_id)
                else:
                    self._registry.reinstate(device_id)
        except RegistryError as exc:
            reason = exc.reason or "registry"
            if reason == "unknown_device":
                raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id") from None
            if reason in ("already_retired", "not_retired", "revoked"):
                raise Conflict(str(exc), code=reason, param="device_id") from None
            raise Unavailable(f"registry error ({reason})", code="registry") from None

    def rotate_key(self, device_id: str) -> Mapping[str, Any]:
        """New key written to the registry's key file; returns its path and key version (409 when revoked)."""
        with self._write():
            return self._rotate_key(device_id)

    def _rotate_key(self, device_id: str) -> Mapping[str, Any]:
        if self._record(device_id).revoked:
            raise Conflict(f"device '{device_id}' is revoked; its key is not rotated (provision the board under "
                           "a new id)", code="revoked", param="device_id")
        path = self._registry.rotate_key(device_id)
        return {"key_file": str(path), "key_version": int(self._registry.get(device_id).key_version)}

    def enroll(self, device_id: str, *, kind: str, zone: str, lat: str, lon: str, key: bytes,
               replace: bool, expect_key_sha256: bytes | None = None) -> Mapping[str, Any]:
        """Register (or confirm) a device; 400 for bad values, 409 when registered differently; with
        ``expect_key_sha256`` a compare-and-swap (409 ``conflict`` when another key is held, 404
        ``unknown_device`` when the id is not registered: never added)."""
        try:
            with self._write():
                result = self._registry.enroll(device_id, kind=kind, zone=zone, lat=lat, lon=lon, key=key,
                                               replace=replace, expect_key_sha256=expect_key_sha256)
        except RegistryError as exc:
            reason = exc.reason or "registry"
            if reason in ("bad_value", "bad_key"):
                raise BadParameter(str(exc), param=exc.field or "body") from None
            if reason == "unknown_device":
                raise NotFound(str(exc), code=reason, param="device_id") from None
            if reason in ("conflict", "moved", "revoked", "retired", "exists"):
                raise Conflict(str(exc), code=reason, param="device_id") from None
            raise Unavailable(f"registry error ({reason})", code="registry") from None
        return {"result": result, "key_version": int(self._registry.get(device_id).key_version)}

    def move(self, device_id: str, *, lat: str, lon: str, zone: str | None) -> Mapping[str, Any]:
        """New location (and zone) of a registered device; 400 bad values, 404 unknown, 409 revoked."""
        try:
            with self._write():
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

    def removal_settle_s(self) -> float:
        """How long :meth:`remove` waits, without ``ingest_settled``, after retiring the device for its removal
        before it checks the store again, while a gateway writes the store: the writer's batch wait
        (``batch_ms``, 50 ms at least as the CLI counts it) and :data:`gateway.registry.removal.SETTLE_MARGIN_S`. No wait for the registry cache: the gateway's
        verifier reads this registry instance, whose change empties its cache at once."""
        return max(self._store_batch_ms, 50) / 1000 + SETTLE_MARGIN_S

    def remove(self, device_id: str, *,
               ended: Callable[[Mapping[str, str] | None, BaseException | None], None] | None = None
               ) -> Mapping[str, str]:
        """Delete a device never heard from (its registry row and key file, through
        :meth:`gateway.registry.devices.Registry.remove`, as ``devices remove``) and return its ``kind`` and
        ``zone``; blocking: call it on a worker thread. The device is retired for its removal, then the
        gateway's ingest waited for until it committed every report of the device it accepted (at most
        :data:`REMOVAL_SETTLE_LIMIT_S`; without ``ingest_settled``, :meth:`removal_settle_s` while a gateway
        writes the store), then the store checked again and the row and key file deleted. Other admin writes
        wait only for its checks and its deletion, not for its wait; a retire meanwhile makes the device retired
        for good and stops the removal (409 ``retired``).

        Raises:
            NotFound: ``unknown_device``.
            Conflict: ``heard_from`` (the store holds rows of it, also when stored during the removal: its
                registration is put back), ``revoked``, ``reinstated`` or ``retired`` (by another request or
                process during the wait: left as that one set it), ``changed`` (its row changed during the wait:
                moved or key rotated, put back; reinstated and retired for another removal, whose mark stays);
                nothing removed.
            Unavailable: ``no_store`` (no report store attached to check, or the file there is none),
                ``backend_unavailable`` (the store could not be read; nothing changed), ``storage_partial`` (the
                device stays retired: its flag could not be put back, or its key file is deleted but its row
                is not: the message says what to do), ``registry`` (the registry's own storage failed, or the
                key file could not be deleted: the message names it; nothing changed; or the gateway is
                stopping), ``not_settled`` (the ingest's commits did not come within the bound, or the gateway's
                loop stopped meanwhile: put back).

        ``ended``, when given, is called on this thread with the result or the error (as raised) once the removal
        ended, before :meth:`close` stops waiting for it: the admin API's audit of a removal whose request was
        cancelled meanwhile (the gateway's stop) is written there.
        """
        with self._removals:
            self._running_removals += 1
        try:
            try:
                result = self._remove(device_id)
            except BaseException as exc:
                if ended is not None:
                    ended(None, exc)
                raise
            if ended is not None:
                ended(result, None)
            return result
        finally:
            with self._removals:
                self._running_removals -= 1
                self._removals.notify_all()

    def _remove(self, device_id: str) -> Mapping[str, str]:
        """:meth:`remove` without its count of running removals (see there)."""
        store = self._store_path
        if store is None:
            raise Unavailable(f"device '{device_id}' is not removed: no report store is attached to check that "
                              "it holds nothing of it", code="no_store")

        def settle_s() -> float:  # asked once the device is retired (a writer started since is waited for)
            if self._settled is not None:
                return REMOVAL_SETTLE_LIMIT_S  # the bound of the wait for the ingest's commits
            return self.removal_settle_s() if store_writer(store) is not None else 0.0

        def wait(seconds: float) -> None:
            # The other admin writes go on meanwhile (the device's row is retired; the removal's last step
            # checks it again under the registry's write lock).
            self._writes.release()
            try:
                if self._settled is None:
                    time.sleep(seconds)
                else:
                    self._wait_settled(device_id, seconds)
            finally:
                self._writes.acquire()

        try:
            with self._write():
                rec = self._registry.remove(device_id, traces=functools.partial(device_traces, store),
                                            settle_s=settle_s, wait=wait, advice=api_advice)
        except RegistryError as exc:
            reason = exc.reason or "registry"
            if reason == "unknown_device":
                raise NotFound(f"no device '{device_id}'", code="unknown_device", param="device_id") from None
            if reason in ("heard_from", "revoked", "reinstated", "retired", "changed"):
                raise Conflict(str(exc), code=reason, param="device_id") from None
            if reason == "storage_partial":  # says what was done and what is left to do by hand
                raise Unavailable(str(exc), code=reason) from None
            if reason == "key_file":  # names the file that could not be deleted (never a key); nothing removed
                raise Unavailable(str(exc), code="registry") from None
            if reason == "not_settled":
                raise Unavailable(str(exc), code=reason) from None
            raise Unavailable(f"registry error ({reason})", code="registry") from None
        except StorageError as exc:
            if exc.reason in ("no_store", "not_a_store"):
                raise Unavailable(f"device '{device_id}' is not removed: {exc}", code="no_store") from None
            raise Unavailable(f"device '{device_id}' is not removed: the report store could not be read to check "
                              f"what it holds of it ({exc.reason})", code="backend_unavailable") from None
        return {"kind": str(rec.kind), "zone": str(rec.zone)}

    def _wait_settled(self, device_id: str, limit: float) -> None:
        """On a worker thread: wait (on the gateway's loop) until every report of ``device_id`` the ingest
        accepted is committed or failed.

        Raises:
            RegistryError: ``not_settled``: not within ``limit`` seconds, or the loop stopped (closed, or the
                wait cancelled by its shutdown) before (the removal puts the device back).
        """
        assert self._settled is not None and self._loop is not None
        settled = self._settled(device_id)
        waiting = asyncio.wait_for(settled, limit)
        try:
            done = asyncio.run_coroutine_threadsafe(waiting, self._loop)
        except RuntimeError:  # the loop is closed: nothing could be waited for
            waiting.close()  # both never awaited: closed quietly, not left to a RuntimeWarning
            if asyncio.iscoroutine(settled):
                settled.close()
            raise self._not_settled(device_id, "the gateway's event loop stopped before it could be waited "
                                               "for") from None
        try:
            # The loop bounds it; the margin here is for a loop that stopped meanwhile (the gateway's stop).
            done.result(timeout=limit + 5)
        except TimeoutError:  # asyncio's and concurrent.futures' (one class since Python 3.11)
            done.cancel()
            raise self._not_settled(device_id, "the reports of it the gateway accepted before it was retired for "
                                               "its removal were not all committed within %g s (a long backlog or a "
                                               "slow store)" % limit) from None
        except (concurrent.futures.CancelledError, asyncio.CancelledError):  # the loop's shutdown cancelled it
            raise self._not_settled(device_id, "the gateway's event loop stopped (it is shutting down) while the "
                                               "removal waited for its commits") from None

    @staticmethod
    def _not_settled(device_id: str, why: str) -> RegistryError:
        """The ``not_settled`` refusal: ``why`` the wait for the ingest's commits ended without them."""
        return RegistryError("device %s is not removed: %s; it is put back as it was: try again later"
                             % (device_id, why), reason="not_settled", device_id=device_id)

    def retention(self) -> Mapping[str, Mapping[str, int]]:
        """Effective retention ``kind -> field -> days``."""
        return self._retention.as_json()

    def set_retention(self, kind: str, field: str, days: int) -> str | None:
        """Shorten one field's retention (validated against the policy); the warning when it is shorter than
        ``[retention] interval_s`` (else None)."""
        return self._retention.set(kind, field, days)
