"""The report store's retention passes: field values past their retention removed from ``m`` and ``e`` a
bounded transaction at a time, then the report rows left (gateway/storage/field_retention.py and
row_retention.py say what each stage does and what is kept). :class:`RetentionStore` is a base of
:class:`gateway.storage.store.ReportStore`; every write goes through its guarded transactions.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Callable

from gateway.retention_clock import META_KEY as RETENTION_META_KEY
from gateway.retention_clock import CLOCK_BACK_TOLERANCE_S, LargeRemovalHold
from gateway.storage import field_retention, retention_removals, row_retention
from gateway.storage.queries import DATA_VERSION_COUNTER
from gateway.storage.store_guard import GuardedStore
from gateway.storage.store_rows import add_to_counter

# The store's one logger, whichever of its modules logs (the name operators and tests know).
log = logging.getLogger("gateway.storage.store")

# A retention pass removing more than this share of one field's stored values logs a WARNING.
LARGE_REMOVAL = 0.1


class RetentionStore(GuardedStore):
    """The retention passes of the report store (a base of :class:`gateway.storage.store.ReportStore`)."""

    # Seqs whose rows retention removed, per device (row_retention.retired_seqs); report retention per kind of
    # the last pass planned; what the passes of this open store left clean (set by ReportStore.__init__).
    _retired: dict[str, int]
    _report_days: dict[str, int]
    _cleared: field_retention.Cleared
    # What dates a removal of stored values (gateway.storage.retention_removals): the host's wall clock until the
    # gateway sets its own (virtual under [sim_clock]), the clock of the publication marks and received_at a
    # removal is compared with. The answers' Date, which caps their Last-Modified, is the host's wall clock.
    removal_clock: Callable[[], float] = time.time

    def last_received_at(self) -> float | None:
        """``received_at`` of the last stored report (the highest id: the last one inserted), or None when
        none is stored; what retention checks the gateway clock against (gateway/retention_clock.py)."""
        with self._reading("reading the last reception time"):
            row = self._conn.execute("SELECT received_at FROM reports ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def retention_meta(self) -> str | None:
        """The ``meta`` row the retention clock checks saved (gateway.retention_clock.META_KEY), or None."""
        with self._reading("reading the retention state"):
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (RETENTION_META_KEY,)).fetchone()
        return None if row is None else str(row[0])

    def apply_retention(self, retention_days: dict[tuple[str, str], int], now: float,
                        hold: LargeRemovalHold | None = None) -> int:
        """A whole retention pass in one call: :meth:`begin_retention`, then :meth:`retention_batch` until it is
        done; return the readings (``m`` values) removed (0 when a field's large removal held the pass).

        The gateway runs each batch as its own job on the store's thread (gateway/service.py), so ingest waits
        for one batch at most; this is for callers that own the store (tools, tests).

        Args:
            retention_days, now, hold: as for :meth:`begin_retention`.
        """
        rows = self.begin_retention(retention_days, now, hold)
        while self.retention_batch(rows):
            pass
        return rows.readings

    def resume_retention(self, checked: float | None = None) -> row_retention.RowPass | None:
        """The pass a stop (or a failure) cut off after it was decided, to finish with :meth:`retention_batch`
        before a new one, or None (gateway/storage/field_retention.py: a pass cut off is finished as decided).

        It goes by its saved removal time and retention, over the reports stored when it began, and its
        values are removed whatever the hold would say now (it said so when they were counted, or the pass
        had none); its report rows are held if they were. A saved row that cannot be read is logged and
        removed (the next pass decides afresh, the hold applying as to any first pass of a run).

        Args:
            checked: the removal time the clock checks gave this start (gateway/retention_clock.py); None for
                callers that own the store (the saved time as is). The pass removes by the earlier of the two:
                never by a clock later than the checked one. A saved time later than it by more than
                :data:`~gateway.retention_clock.CLOCK_BACK_TOLERANCE_S` was decided by a clock that was ahead
                (values inside their retention would go): the saved pass is dropped with a WARNING, and the
                next pass decides afresh, the hold applying.
        """
        with self._reading("reading the retention pass in progress"):
            row = self._conn.execute("SELECT value FROM meta WHERE key=?",
                                     (field_retention.PASS_META_KEY,)).fetchone()
        if row is None:
            return None
        try:
            now, days, top, rows_held = field_retention.parse_pending(str(row[0]))
            saved_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
            if checked is not None and now > checked + CLOCK_BACK_TOLERANCE_S:
                log.warning("retention: the pass cut off before (meta %s) is dropped: its removal time (%s) is later "
                            "than this start's checked one by %.1f days (it was decided by a clock that was ahead, "
                            "and would remove values inside their retention); a new pass decides afresh",
                            field_retention.PASS_META_KEY, saved_at, (now - checked) / 86400)
                self._drop_saved_pass()
                return None
            if checked is not None:
                now = min(now, checked)
            rows = self._plan_retention(days, now, top)
            by = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
        except (ValueError, OverflowError) as exc:  # (parse_pending bounds what planning needs; belt and braces)
            log.warning("retention: the pass in progress saved before (meta %s) cannot be read (%s); a new pass "
                        "decides afresh", field_retention.PASS_META_KEY, exc)
            self._drop_saved_pass()
            return None
        assert rows.values is not None
        rows.values.saved, rows.values.rows_held = True, rows_held
        log.info("retention: finishing the pass cut off before (removal time %s%s, reports up to id %d)", by,
                 "" if by == saved_at else "; saved: %s" % saved_at, top)
        return rows

    def _drop_saved_pass(self) -> None:
        with self._writing("clearing the retention pass in progress") as conn:
            conn.execute("DELETE FROM meta WHERE key=?", (field_retention.PASS_META_KEY,))

    def remove_values(self, retention_days: dict[tuple[str, str], int], now: float,
                      hold: LargeRemovalHold | None = None) -> row_retention.RowPass | None:
        """The field part of a pass in one call (:meth:`begin_retention`, then :meth:`retention_batch` until the
        values are removed); return the row part (for :meth:`remove_rows_batch`), or None when a field's large
        removal held the whole pass (nothing was removed). For callers that own the store."""
        rows = self.begin_retention(retention_days, now, hold)
        assert rows.values is not None
        while rows.values.stage not in ("rows", "held", "done") and self.retention_batch(rows):
            pass
        return None if rows.values.stage == "held" else rows

    def begin_retention(self, retention_days: dict[tuple[str, str], int], now: float,
                        hold: LargeRemovalHold | None = None) -> row_retention.RowPass:
        """Start a retention pass: return it, to run a job at a time with :meth:`retention_batch` (nothing is
        read or removed yet beyond the newest report id, which bounds the pass).

        The pass removes every field value older than its retention from ``m`` and ``e`` (and from the ``e`` of
        ``window_duplicates``), then the report rows left (``remove_rows_batch``). A report row (device, type,
        period, reception time, link, alarm codes, frame digest) of kind K goes once its ``m`` and ``e`` are
        empty, its period and reception are older than the longest retention of K's fields and its seq is at or
        below its device's ACK floor (gateway/storage/row_retention.py, which says what is kept so that replay
        protection, report ids and the provenance chain hold). Values are counted before any is removed
        (gateway/storage/field_retention.py): a field losing more than :data:`LARGE_REMOVAL` of what is stored
        is logged at WARNING once its values are removed (a retention just shortened, or a clock to check), and
        so is a kind's rows when they are counted (a hold is given). The pass's ``readings`` are the ``m``
        values removed.

        Args:
            retention_days: ``(kind, field) -> days`` (policy.json values, possibly shortened by config).
            now: the time to remove by (the gateway's clock, checked by gateway/retention_clock.py).
            hold: when given, a field (not in ``hold.exempt``) that would lose more than ``hold.share`` of its
                stored values, and at least ``hold.min_values``, holds the whole pass: nothing is removed, the
                pass ends with its ``values.stage`` ``held`` and ``hold.held`` names what would have been (the
                caller logs and reports it). A kind's report rows count the same way (exempt when a field of the
                kind is), but hold only the row part: the field values are removed all the same (a privacy step,
                never held for rows), and the row part is ``held`` (its lines are in ``hold.held`` too).
        """
        with self._reading("retention"):
            top = int(self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()[0])
        rows = self._plan_retention(retention_days, now, top)
        rows.hold = hold
        if hold is None:  # runs whatever it removes: a stop part-way must not leave the rest to a hold
            self._save_pass(rows)
        return rows

    def _plan_retention(self, retention_days: dict[tuple[str, str], int], now: float,
                        top: int) -> row_retention.RowPass:
        fields: list[field_retention.FieldPlan] = []
        for (kind, fld), days in sorted(retention_days.items()):
            if '"' in fld:  # no reported field is named so (the policy allowlist), and a path cannot quote it
                log.warning("retention: field name %r cannot occur in a report; skipped", fld)
                continue
            # quoted: a field name is one key, never a path
            fields.append((kind, fld, int(now) - days * 86400, days, '$."%s"' % fld))
        report_days = row_retention.row_retention_days(retention_days)
        self._report_days = report_days  # committed_digest: a retired seq's frame newer than this is no re-send
        cutoffs = {kind: int(now) - days * 86400 for kind, days in sorted(report_days.items())}
        rows = row_retention.RowPass(cutoffs=cutoffs, keep_id=top)
        rows.values = field_retention.FieldPass(fields=fields, top=top, now=now)
        rows.retention_days = dict(retention_days)
        return rows

    def _save_pass(self, rows: row_retention.RowPass) -> None:
        """Save the pass ``rows`` as in progress (what it decided: its report rows held or not)."""
        assert rows.values is not None
        value = field_retention.pending_row(rows.retention_days, rows.values.now, rows.values.top, rows.held)
        with self._writing("saving the retention pass in progress") as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (field_retention.PASS_META_KEY, value))
        rows.values.saved = True

    def _end_pass(self, rows: row_retention.RowPass) -> None:
        """The pass is through (or held): it is no longer in progress."""
        values = rows.values
        if values is not None and values.saved:
            with self._writing("clearing the retention pass in progress") as conn:
                conn.execute("DELETE FROM meta WHERE key=?", (field_retention.PASS_META_KEY,))
            values.saved = False

    def _replan(self, rows: row_retention.RowPass, current: dict[tuple[str, str], int]) -> None:
        """Follow a retention made longer (or removed) since the pass began: its field's values are no longer
        removed, its kind's report rows go by the longer retention. A shorter one waits for the next pass."""
        values = rows.values
        assert values is not None
        longer = [(kind, fld) for kind, fld, _c, days, _p in values.fields
                  if current.get((kind, fld)) is None or current[(kind, fld)] > days]
        if not longer:
            return
        for kind, fld in longer:
            log.info("retention: %s.%s is kept %s now (it was %d day(s) when the pass began); this pass removes no "
                     "more of it", kind, fld, "%d day(s)" % current[(kind, fld)] if (kind, fld) in current
                     else "without a retention", rows.retention_days[(kind, fld)])
            values.kept.append("%s.%s" % (kind, fld))
            if (kind, fld) in current:
                rows.retention_days[(kind, fld)] = current[(kind, fld)]
            else:
                del rows.retention_days[(kind, fld)]
        values.fields = [f for f in values.fields if (f[0], f[1]) not in longer]
        row_days = row_retention.row_retention_days(rows.retention_days)
        for kind in {k for k, _f in longer}:
            if kind in rows.cutoffs:  # never later than before (the index of the kind being removed stays)
                rows.cutoffs[kind] = min(rows.cutoffs[kind], int(values.now) - row_days[kind] * 86400
                                         if kind in row_days else row_retention.START[0])
        if values.saved:
            self._save_pass(rows)

    def retention_batch(self, rows: row_retention.RowPass, current: dict[tuple[str, str], int] | None = None) -> bool:
        """Run the next job of the pass ``rows`` (:meth:`begin_retention`): one bounded transaction (see
        gateway/storage/field_retention.py for the stages); return whether more is left (call again).

        Args:
            rows: the pass.
            current: the effective retention now (the admin API may change it during a pass): a field whose
                retention is longer now (or that has none) loses no more values in this pass.
        """
        if rows.values is not None and current is not None:
            self._replan(rows, current)
        more = self._retention_step(rows)
        if not more:
            self._end_pass(rows)
        return more

    def _retention_step(self, rows: row_retention.RowPass) -> bool:
        values = rows.values
        if values is None or values.stage == "rows":
            if rows.done:
                if values is not None:
                    values.stage = "done"
                return False
            return self.remove_rows_batch(rows)
        if values.stage in ("held", "done"):
            return False
        if values.stage == "floors":
            with self._writing("retention (ACK floors)") as conn:
                next_device = field_retention.extend_floors(conn, values.floor_device)
            if next_device is None:
                with self._reading("retention (data version)"):
                    version = self._commit_version()
                if self._cleared.data_version not in (None, version):
                    # another connection committed since the last pass (a backup merged into the running
                    # store: old ids and old w, which no search finds): what was cleared is no longer known
                    log.info("retention: the store was written by another connection since the last pass;"
                             " this pass counts every stored value")
                    self._cleared = field_retention.Cleared()
                self._cleared.data_version = version
                # Count the whole store where the hold applies (its share needs every stored value) or no
                # pass of this open store went through; else find what expires since the last one.
                find = rows.hold is None and self._cleared.covers(values.fields)
                values.stage = "find" if find else "count"
                if find:
                    with self._reading("retention (finding)"):
                        self._cleared.periods(field_retention.longest_period(
                            self._conn, self._cleared.upto, values.top), values.top)
                    values.searches = field_retention.plan_searches(values.fields, self._cleared, values.top)
            else:
                values.floor_device = next_device
        elif values.stage == "count":
            with self._reading("retention (counting)"):
                hi = field_retention.next_range(self._conn, "reports", values.after, values.top,
                                                field_retention.COUNT_BATCH)
                if hi is not None and self._count_range(rows, values.after, hi):
                    values.todo.append((values.after, hi))
            if hi is None:
                self._cleared.periods(values.longest, values.top)
                self._decide_hold(rows)
            else:
                values.after = hi
        elif values.stage == "find":
            if values.searches:
                with self._reading("retention (finding)"):
                    found, through = field_retention.find_values(self._conn, values.searches[0],
                                                                 field_retention.COUNT_BATCH, values.counts)
                values.found_gap = field_retention.add_found(values.found, values.found_gap, found)
                if through:
                    del values.searches[0]
            else:
                values.todo = field_retention.found_ranges(values.found, values.found_gap, values.top)
                values.found = set()
                live = {(f[0], f[1]) for f in values.fields}  # not a field kept longer since: it loses nothing
                values.share = {k: field_retention.share_threshold(old, LARGE_REMOVAL)
                                for k, (_stored, old) in values.counts.items() if old and k in live}
                values.stage, values.after = "share", values.top
                # the first range: about what the largest threshold needs; each next one twice as large
                values.share_rows = min(field_retention.COUNT_BATCH, 2 * max(values.share.values(), default=0) + 100)
        elif values.stage == "share":
            # the values stored of each field losing some, newest reports first, until there are enough of them
            # that what it loses is no large share (or every report was counted: the share is exact)
            lo = None
            live = {(f[0], f[1]) for f in values.fields}
            for key in [k for k in values.share if k not in live]:  # kept longer since: its share is not needed
                del values.share[key]
            if values.share:
                with self._reading("retention (counting)"):
                    lo = field_retention.previous_range(self._conn, "reports", values.after, values.share_rows)
                    values.share_rows = min(field_retention.COUNT_BATCH, 2 * values.share_rows)
                    if lo is not None:
                        got: dict[tuple[str, str], list[int]] = {}
                        field_retention.count_values(self._conn, [f for f in values.fields if (f[0], f[1])
                                                                  in values.share], lo, values.after, got)
                        for key, (stored, _old) in got.items():
                            values.counts[key][0] += stored
                            if values.counts[key][0] >= values.share[key]:
                                del values.share[key]
            if lo is None or not values.share:
                self._decide_hold(rows)
            else:
                values.after = lo
        elif values.stage == "values":
            while values.todo and values.after >= values.todo[0][1]:
                del values.todo[0]
            with self._writing("retention") as conn:
                hi = None
                while values.todo and hi is None:  # the next rows of a range the count found values to remove in
                    values.after = max(values.after, values.todo[0][0])
                    hi = field_retention.next_range(conn, "reports", values.after, values.todo[0][1],
                                                    field_retention.FIELD_BATCH)
                    if hi is None:
                        del values.todo[0]
                if hi is not None:
                    days: set[int] = set()
                    at = int(self.removal_clock())
                    readings, changed = field_retention.remove_values(
                        conn, values.fields, values.after, hi, days,
                        retention_removals.published_filter(conn, at, "csv"))
                    if changed:
                        # Stored values changed without a new report: readers that name their answers by the
                        # newest report (the open-data CSV's ETag) also name them by this version, and date
                        # them no earlier than this removal (its days). Same transaction as the removal, so
                        # no reader sees one without the others.
                        add_to_counter(conn, DATA_VERSION_COUNTER, 1)
                        retention_removals.record(conn, days, at, self._removal_days_from(rows))
            if hi is None:
                self._cleared.passed(values.fields, values.top)  # every value past its cut-off is gone
                values.stage, values.after = "duplicates", 0
                with self._reading("retention"):
                    values.duplicates_top = int(self._conn.execute(
                        "SELECT COALESCE(MAX(rowid), 0) FROM window_duplicates").fetchone()[0])
            else:
                values.after = hi
                rows.readings += readings
        elif values.stage == "duplicates":
            with self._writing("retention (window duplicates' values)") as conn:
                hi = field_retention.next_range(conn, "window_duplicates", values.after, values.duplicates_top,
                                                field_retention.FIELD_BATCH)
                if hi is not None:
                    dup_days: set[int] = set()
                    at = int(self.removal_clock())
                    if field_retention.remove_duplicate_values(
                            conn, values.fields, values.after, hi, dup_days,
                            retention_removals.published_filter(conn, at, "repeats")):
                        add_to_counter(conn, DATA_VERSION_COUNTER, 1)  # as for the reports' values
                        retention_removals.record(conn, dup_days, at, self._removal_days_from(rows))
            if hi is None:
                values.stage = "rows"
                self._log_values_removed(rows)
            else:
                values.after = hi
        return True

    @staticmethod
    def _removal_days_from(rows: row_retention.RowPass) -> int | None:
        """The first day the record of removals keeps apart in this pass: the longest retention's cut-off less
        a week and a day (gateway.storage.retention_removals.keep_from_day); older days hold no value retention
        still removes and fold into its floor."""
        values = rows.values
        now = values.now if values is not None else time.time()
        return retention_removals.keep_from_day(rows.retention_days.values(), now)

    def _count_range(self, rows: row_retention.RowPass, lo: int, hi: int) -> bool:
        """Count what the pass removes from reports ``lo < id <= hi``: every field's values, and the report rows
        of each kind only when a hold may apply (each kind's row count reads its rows again); return whether
        the range holds values to remove."""
        values = rows.values
        assert values is not None
        found = field_retention.count_values(self._conn, values.fields, lo, hi, values.counts)
        longest = field_retention.longest_period(self._conn, lo, hi)
        if longest is not None:
            values.longest = longest if values.longest is None else max(values.longest, longest)
        hold = rows.hold
        if hold is None:
            return found
        exempt_kinds = {k for k, _f in hold.exempt}
        for kind, cutoff in rows.cutoffs.items():
            if kind in exempt_kinds:
                continue
            old, held = row_retention.count_old_rows(
                self._conn, kind, cutoff, sorted(f for k, f in rows.retention_days if k == kind), (lo, hi))
            got = values.row_counts.setdefault(kind, [0, 0])
            got[0] += old
            got[1] += held
        return found

    def _decide_hold(self, rows: row_retention.RowPass) -> None:
        """The count is complete: hold the whole pass (a field), or only its row part (a kind's rows), or go on
        to remove the values."""
        values, hold = rows.values, rows.hold
        assert values is not None
        large: list[str] = []
        large_rows: list[str] = []
        held_fields: list[str] = []
        held_rows: list[str] = []
        for kind, fld, cutoff, days, _path in values.fields:
            held, old = values.counts.get((kind, fld), [0, 0])
            what = "%d of %d %s.%s value(s) (retention %d day(s): before %s)" % (
                old, held, kind, fld, days, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(cutoff)))
            if (hold is not None and (kind, fld) not in hold.exempt and old >= hold.min_values
                    and old > hold.share * held):
                held_fields.append(what)
            if old and old > LARGE_REMOVAL * held:
                large.append(what)
        row_days = row_retention.row_retention_days(rows.retention_days)
        for kind, (old, held) in sorted(values.row_counts.items()):
            assert hold is not None  # rows are counted only then
            what = "%d of %d %s report row(s) (report retention %d day(s): before %s)" % (
                old, held, kind, row_days[kind], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(rows.cutoffs[kind])))
            if old >= hold.min_values and old > hold.share * held:
                held_rows.append(what)
            if old and old > LARGE_REMOVAL * held:
                large_rows.append(what)
        if values.rows_held is not None:  # a pass finished after a cut: as decided when it was counted
            held_rows = list(values.rows_held)
        if hold is not None:
            hold.held.extend(held_fields + held_rows)
        if held_fields:
            values.stage = "held"  # a field held the whole pass before anything changed
            return
        rows.held = held_rows
        rows.large = ([] if held_rows else large_rows)
        rows.large_fields = large
        values.stage, values.after = "values", 0
        if not values.saved:  # decided: a stop from now on leaves the rest to finish as decided, not held again
            self._save_pass(rows)

    def _log_values_removed(self, rows: row_retention.RowPass) -> None:
        """The field part is done: say what it removed (a large share at WARNING)."""
        large, large_rows = rows.large_fields, rows.large
        about = [("that field" if len(large) == 1 else "those fields") if large else "",
                 ("the rows of that kind" if len(large_rows) == 1 else "the rows of those kinds") if large_rows else ""]
        if any(about):
            log.warning("retention removed %s: more than %d %% of what was stored of %s; check the retention "
                        "settings and the gateway clock (date -u) if that was not expected",
                        "; ".join(large + large_rows), LARGE_REMOVAL * 100, " and ".join(x for x in about if x))
        if rows.readings:
            log.info("retention removed %d reading(s)", rows.readings)

    def remove_rows_batch(self, rows: row_retention.RowPass) -> bool:
        """Remove the next batch of the row part ``rows`` of a retention pass (:meth:`remove_values`), one
        transaction of at most :data:`gateway.storage.row_retention.ROW_BATCH` rows (their alarms with them),
        or, once every kind is through, the ``window_duplicates`` rows whose release is gone; return whether
        more is left (call again). A held row part removes nothing.

        Raises:
            ValueError: the field part of ``rows`` (:meth:`retention_batch`) is not done yet.
        """
        if rows.values is not None and rows.values.stage not in ("rows", "done"):
            if rows.values.stage == "held":
                return False
            raise ValueError("the row part of a retention pass runs once its field part is done (stage %s)"
                             % rows.values.stage)
        if rows.done:
            return False
        kinds = sorted(rows.cutoffs)
        if rows.kind < len(kinds):
            with self._writing("retention (report rows)") as conn:
                # Phases (and kinds) that read little share one job, up to ROW_BATCH rows or ids read: a later
                # pass reads a few rows per phase, and a job per phase cost more than the reading.
                budget, removed = row_retention.ROW_BATCH, 0
                marks: dict[str, field_retention.RowMark | None] = {}  # the kinds through, kept once committed
                while rows.kind < len(kinds) and budget > 0:
                    used, full = self._remove_rows_step(conn, rows, kinds[rows.kind], budget, marks)
                    removed += used[0]
                    budget -= max(1, used[1])
                    if full:
                        break
                if removed:
                    # a reader naming its answers by the newest report sees the change (as the field pass)
                    add_to_counter(conn, DATA_VERSION_COUNTER, 1)
                retired = row_retention.retired_seqs(conn)
            self._retired = retired  # once committed
            for kind, mark in marks.items():  # (a failed job fails the pass: the next one reads the kind whole)
                if mark is None:
                    self._cleared.rows.pop(kind, None)
                else:
                    self._cleared.rows[kind] = mark
            rows.rows += removed
            return True
        # rows a development build recorded without a kind go by the longest report retention
        with self._writing("retention (window duplicates)") as conn:
            for kind, cutoff in dict(rows.cutoffs, **{"": min(rows.cutoffs.values())}).items():
                row_retention.remove_window_duplicates(conn, kind, cutoff)
            retired = row_retention.retired_seqs(conn)
        self._retired = retired
        rows.duplicates_done = True
        self._end_pass(rows)  # (remove_values' callers run the row part with this method alone)
        if rows.rows:
            log.info("retention removed %d report row(s) (their alarms and reception records with them)", rows.rows)
        return False

    def _remove_rows_step(self, conn: sqlite3.Connection, rows: row_retention.RowPass, kind: str, limit: int,
                          marks: dict[str, field_retention.RowMark | None]) -> tuple[tuple[int, int], bool]:
        """One batch (at most ``limit`` rows or ids read) of the phase of ``kind`` that ``rows`` is in, inside the
        caller's transaction; return ``((rows removed, rows or ids read), whether the phase has more)``. Once the
        kind is through, what it left goes in ``marks`` (None: too many rows left to list)."""
        cutoff = rows.cutoffs[kind]
        if not rows.phase:  # the kind begins: what the last pass through it left, if this pass can go by it
            mark = self._cleared.rows.get(kind)
            usable = rows.values is not None and mark is not None and mark.keep_id <= rows.keep_id
            rows.mark, rows.stuck = (mark if usable else None), []
            row_retention.next_phase(rows, rows.mark)
        gone, after, left, read = row_retention.remove_row_batch(
            conn, kind, cutoff, rows.keep_id, rows.after, rows.phase, () if rows.mark is None else rows.mark.stuck,
            limit)
        if rows.stuck is not None:
            rows.stuck.extend(left)
            if len(rows.stuck) > row_retention.STUCK_MAX:
                rows.stuck = None
        if after is not None:
            rows.after = after
        elif not row_retention.next_phase(rows, rows.mark):  # this kind is through
            # (a row read in two phases is listed once)
            marks[kind] = (None if rows.stuck is None
                           else field_retention.RowMark(cutoff, rows.keep_id, tuple(sorted(set(rows.stuck)))))
            rows.kind, rows.after, rows.mark, rows.stuck = rows.kind + 1, row_retention.START, None, []
        return (sum(gone.values()), read), after is not None
