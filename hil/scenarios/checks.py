"""Evaluate a scenario's expectations against what the gateway stored (its SQLite file).

Each expectation gives one :class:`CheckResult` (one JUnit testcase) with a message that says what
was expected and what was found, so a failing check explains itself.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.storage.sqlite_uri import read_only_uri
from hil.scenarios.model import Scenario


def _n(count: int, noun: str) -> str:
    """``1 report``, ``2 reports``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass
class CheckResult:
    """The outcome of one expectation."""

    name: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def skip(self, why: str) -> CheckResult:
        """This expectation marked as not evaluated (the run did not get to its end)."""
        return CheckResult(self.name, False, why, {}, skipped=True)


@dataclass
class StoredData:
    """What the gateway stored, read once after the run.

    ``reading_seqs`` and ``alarm_seqs`` (when filled, by :func:`read_store`) give the seq of the
    report each reading / alarm came from, in the same order, so :meth:`up_to` can cut them too.
    ``not_stored`` are the releases the gateway acknowledged and did not store because that period's
    release was stored under another seq (its ``window_duplicates`` table: a board whose clock was set
    back re-released the periods since); their ``e`` is ε the board spent all the same.
    """

    reports: list[tuple[str, int, str, int, dict[str, int]]]  # device, seq, type, w, e
    readings: list[tuple[str, str, int, int, int]]             # device, field, w, l, value
    alarms: list[tuple[str, str, int]]                         # device, code, w
    reading_seqs: list[int] = field(default_factory=list)
    alarm_seqs: list[int] = field(default_factory=list)
    not_stored: list[tuple[str, int, str, int, dict[str, int]]] = field(default_factory=list)  # as reports

    def up_to(self, last_seq: dict[str, int]) -> StoredData:
        """Only what came from reports with ``seq <= last_seq[device]`` (devices not named: nothing).

        A run holds its boards at the scenario's end and notes the last seq each one generated;
        reports written while the outboxes drain afterwards are past the end and not evaluated.
        """
        def keep(d: str, s: int) -> bool:
            return s <= last_seq.get(d, -1)

        readings = self.readings if len(self.reading_seqs) != len(self.readings) else [
            r for r, s in zip(self.readings, self.reading_seqs) if keep(r[0], s)]
        reading_seqs = [s for r, s in zip(self.readings, self.reading_seqs) if keep(r[0], s)]
        alarms = self.alarms if len(self.alarm_seqs) != len(self.alarms) else [
            a for a, s in zip(self.alarms, self.alarm_seqs) if keep(a[0], s)]
        alarm_seqs = [s for a, s in zip(self.alarms, self.alarm_seqs) if keep(a[0], s)]
        return StoredData([r for r in self.reports if keep(r[0], r[1])], readings, alarms, reading_seqs, alarm_seqs,
                          [r for r in self.not_stored if keep(r[0], r[1])])


def _not_stored(conn: sqlite3.Connection) -> list[tuple[str, int, str, int, dict[str, int]]]:
    """Releases acknowledged and not stored (schema v3's ``window_duplicates``; none in a v2 store).

    Read on its own: a problem here must not throw away the reports already read (``no_loss`` would
    then call every report missing).
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(window_duplicates)")}
    if not {"device", "seq", "type", "w", "e"} <= columns:  # v2, or a v3 development build without e
        return []
    return [(d, int(s), t, int(w), {k: int(v) for k, v in json.loads(e or "{}").items()})
            for d, s, t, w, e in conn.execute("SELECT device, seq, type, w, e FROM window_duplicates ORDER BY w, device")]


def read_store(db: Path) -> StoredData:
    """Read reports, readings, alarms and releases not stored (empty when the store does not exist)."""
    if not db.exists():
        return StoredData([], [], [])
    conn = sqlite3.connect(read_only_uri(db), uri=True, timeout=5)
    try:
        reports = [(d, int(s), t, int(w), {k: int(v) for k, v in json.loads(e or "{}").items()})
                   for d, s, t, w, e in conn.execute("SELECT device, seq, type, w, e FROM reports ORDER BY w, device")]
        rows = conn.execute("SELECT g.device, g.field, g.w, g.l, g.value, r.seq FROM readings g "
                            "JOIN reports r ON r.id = g.report_id ORDER BY g.w").fetchall()
        readings = [(d, f, int(w), int(length), int(v)) for d, f, w, length, v, _s in rows]
        alarm_rows = conn.execute("SELECT device, code, w, seq FROM alarms ORDER BY w").fetchall()
        alarms = [(d, c, int(w)) for d, c, w, _s in alarm_rows]
    except sqlite3.OperationalError:
        conn.close()
        return StoredData([], [], [])
    try:
        not_stored = _not_stored(conn)
    finally:
        conn.close()
    return StoredData(reports, readings, alarms, [int(r[5]) for r in rows], [int(a[3]) for a in alarm_rows],
                      not_stored)


def _fmt_time(start_ms: int, w: int) -> str:
    """Virtual UTC clock time of a window start, with its offset from the scenario start."""
    clock = dt.datetime.fromtimestamp(w, dt.timezone.utc).strftime("%H:%M")
    return f"{clock} ({(w * 1000 - start_ms) / 60_000:+.0f} min)"


def check_reports_min(scenario: Scenario, data: StoredData) -> CheckResult:
    """At least ``reports_min`` reports stored in total. ``boot`` reports (a board asking for the time,
    protocol §2) carry no measurements and do not count."""
    want = scenario.expect.reports_min or 0
    per_device: dict[str, int] = defaultdict(int)
    boots = 0
    for d, _seq, rtype, *_ in data.reports:
        if rtype == "boot":
            boots += 1
        else:
            per_device[d] += 1
    got = sum(per_device.values())
    msg = f"{_n(got, 'report')} stored (expected at least {want}); per board: " + (
        ", ".join(f"{d}={per_device.get(d, 0)}" for d in scenario.device_ids)) + (
        f"; {boots} boot report(s) not counted" if boots else "")
    return CheckResult(f"reports_min >= {want}", got >= want, msg, {"stored": got, "per_device": dict(per_device)})


def check_no_loss(scenario: Scenario, data: StoredData, generated: dict[str, set[int]]) -> CheckResult:
    """Every report the firmware generated is stored exactly once, or acknowledged on purpose and not
    stored (a re-release of a stored period, :attr:`StoredData.not_stored`), and nothing else is stored."""
    stored = [(d, s) for d, s, *_ in data.reports] + [(d, s) for d, s, *_ in data.not_stored]
    dupes = len(stored) - len(set(stored))
    want = {(d, s) for d, seqs in generated.items() for s in seqs}
    missing = sorted(want - set(stored))
    extra = sorted(set(stored) - want)
    ok = not missing and not extra and dupes == 0 and bool(want)
    parts = [f"{_n(len(want), 'report')} generated by the firmware, {len({(d, s) for d, s, *_ in data.reports})} stored"]
    if data.not_stored:
        parts[0] += (f", {len(data.not_stored)} acknowledged and not stored (releases of periods already "
                     "released: window_duplicates)")
    if not want:
        parts.append("the firmware generated no report: nothing to check")
    if missing:
        parts.append(f"missing {len(missing)}: " + ", ".join(f"{d}#{s}" for d, s in missing[:20]))
    if extra:
        parts.append(f"stored but never seen in an outbox {len(extra)}: " + ", ".join(f"{d}#{s}" for d, s in extra[:20]))
    if dupes:
        parts.append(f"{dupes} duplicate (device, seq) rows")
    return CheckResult("no_loss", ok, "; ".join(parts),
                       {"generated": len(want), "missing": missing, "extra": extra, "duplicates": dupes,
                        "not_stored": len(data.not_stored)})


def check_alarm(scenario: Scenario, data: StoredData, code: str) -> CheckResult:
    """An alarm with ``code`` was stored (within ``alarms_within`` of the start when given)."""
    within = scenario.expect.alarms_within_ms
    seen = [(d, w) for d, c, w in data.alarms if c == code]
    in_time = [(d, w) for d, w in seen if within is None or w * 1000 <= scenario.start_ms + within]
    limit = "" if within is None else f" within {scenario.expect.alarms_within_text}"
    if in_time:
        d, w = in_time[0]
        msg = f"alarm {code!r} stored{limit}: first from {d} at {_fmt_time(scenario.start_ms, w)}"
    elif seen:
        d, w = seen[0]
        msg = f"alarm {code!r} came too late: first from {d} at {_fmt_time(scenario.start_ms, w)}, expected{limit}"
    else:
        codes = sorted({c for _, c, _ in data.alarms})
        msg = f"no alarm {code!r} stored{limit}; alarms stored: {', '.join(codes) or 'none'}"
    name = f"alarm {code}" + limit
    return CheckResult(name, bool(in_time), msg, {"code": code, "count": len(seen)})


def check_field(scenario: Scenario, data: StoredData, index: int) -> CheckResult:
    """A released field value satisfies ``op value`` in a window starting by ``start + by``."""
    fe = scenario.expect.fields[index]
    limit_s = (scenario.start_ms + fe.by_ms) // 1000
    values = [(d, w, v) for d, f, w, _l, v in data.readings
              if f == fe.field and (fe.device is None or d == fe.device)]
    in_time = [(d, w, v) for d, w, v in values if w <= limit_s]
    hits = [(d, w, v) for d, w, v in in_time if fe.holds(v)]
    if hits:
        d, w, v = hits[0]
        msg = f"{fe.field} = {v} on {d} at {_fmt_time(scenario.start_ms, w)} satisfies {fe.op} {fe.value}"
    elif not values:
        msg = f"no released value of field {fe.field!r} stored" + (f" for {fe.device}" if fe.device else "")
    else:
        seen = sorted({v for _, _, v in in_time})
        late = [(d, w, v) for d, w, v in values if w > limit_s and fe.holds(v)]
        msg = (f"{fe.field} never {fe.op} {fe.value} by {fe.by_text}: {len(in_time)} values in time, "
               f"range {seen[0] if seen else '-'}..{seen[-1] if seen else '-'}")
        if late:
            msg += f"; it held later, first at {_fmt_time(scenario.start_ms, late[0][1])}"
    return CheckResult(fe.title, bool(hits), msg, {"values": len(values)})


def _day(w: int) -> str:
    return dt.datetime.fromtimestamp(w, dt.timezone.utc).strftime("%Y-%m-%d")


def check_eps(scenario: Scenario, data: StoredData, policy: dict[str, Any]) -> CheckResult:
    """Per device, field and UTC day, the sum of released ε never exceeds the policy's daily budget.

    The ε of releases acknowledged and not stored (:attr:`StoredData.not_stored`) counts too: the board
    spent it, and firmware re-spending ε after its clock was set back must still fail the check.

    Fails when no stored report carried a privacy spend for the fields asked: the budget was never
    exercised, so the run cannot show it holds (as ``no_loss`` fails when nothing was generated);
    the message says so and how to place a run across a release (docs/scenarios.md).
    """
    wanted_raw = scenario.expect.eps_per_day_max
    wanted: tuple[str, ...] | bool = True if wanted_raw is True else tuple(wanted_raw or ())
    kinds = {d: g.kind for g in scenario.boards for d in g.ids}
    defaults = policy.get("defaults", {})
    sums: dict[tuple[str, str, str], int] = defaultdict(int)
    for d, _s, _t, w, e in data.reports + data.not_stored:
        for f, milli in e.items():
            if isinstance(wanted, bool) or f in wanted:
                sums[(d, f, _day(w))] += milli
    over = []
    for (d, f, day), total in sorted(sums.items()):
        spec = policy.get("kinds", {}).get(kinds.get(d, ""), {}).get("fields", {}).get(f, {})
        budget = int(spec.get("eps_per_day_milli", defaults.get("eps_per_day_milli", 0)))
        if total > budget:
            over.append(f"{d} {f} {day}: {total} milli-eps > budget {budget}")
    peak = max(sums.values(), default=0)
    fields = "all fields" if isinstance(wanted, bool) else ", ".join(wanted)
    if not sums:
        return CheckResult(f"eps_per_day_max ({fields})", False,
                           f"not shown: no stored report spent privacy budget (e) on {fields}, so the run never "
                           "exercised the budget it should bound; run across a release of a noisy field "
                           "(release_every_s in firmware/policy.json: mot every 6 h from 00:00 UTC, lid daily at "
                           "00:00 UTC) or drop this expectation", {})
    msg = ("; ".join(over) if over else
           f"{len(sums)} device/field/day totals, highest {peak} milli-eps, all within the policy budget")
    if data.not_stored:
        msg += (f" (counting the spend of {len(data.not_stored)} release(s) acknowledged and not stored: "
                "window_duplicates)")
    return CheckResult(f"eps_per_day_max ({fields})", not over, msg, {"totals": {"|".join(k): v for k, v in sums.items()}})


def evaluate(scenario: Scenario, data: StoredData, generated: dict[str, set[int]],
             policy: dict[str, Any]) -> list[CheckResult]:
    """Every expectation of the scenario, in file order."""
    ex = scenario.expect
    out: list[CheckResult] = []
    if ex.reports_min is not None:
        out.append(check_reports_min(scenario, data))
    if ex.no_loss:
        out.append(check_no_loss(scenario, data, generated))
    out += [check_alarm(scenario, data, code) for code in ex.alarms]
    out += [check_field(scenario, data, i) for i in range(len(ex.fields))]
    if ex.eps_per_day_max:
        out.append(check_eps(scenario, data, policy))
    return out
