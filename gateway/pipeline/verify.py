"""Verification of one REPORT frame: parse, registry, HMAC, body, policy gate, kind.

Order matters: nothing from the body is decoded before the tag verifies, and the tag is checked
with the registered key only. Replay/duplicate handling needs storage state and lives in
:mod:`gateway.pipeline.ingest`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, NamedTuple

from gateway.errors import ConfigError, ProtocolError, RejectedReport
from gateway.policy_check import check_policy
from gateway.policy_check import valid_range as _valid_range
from gateway.policy_check import whole as _whole
from gateway.protocol.frame import FRAME_REPORT, Frame, TagKey, decode_body, parse_frame, tag_key, verify_keyed_tag
from gateway.registry import DeviceRecord, Registry
from gateway.storage.provenance import frame_digest
from gateway.storage.store import ReportRecord

log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = frozenset({"t", "k", "w", "l", "m", "e", "a", "fw", "h"})
MAX_HELD_RUNS = 16  # runs in ``h`` (the firmware states at most 8)
REQUIRED_KEYS = ("t", "k", "w", "l", "m")
_REQUIRED = frozenset(REQUIRED_KEYS)
_MIN_M, _MAX_M = -(2**53), 2**53
REPORT_TYPES = frozenset({"win", "hour", "day", "alarm", "boot"})
FIXED_PERIODS = {"hour": 3600, "day": 86400, "alarm": 60, "boot": 60}  # protocol §2; "win" is the kind's window_s
# How long a cached registry record + key is trusted before it is looked up again. Changes made
# through the same Registry instance (revoke, rotate) invalidate the cache at once; this bounds how
# long a change made by another process (the CLI) or a hand-edited key file takes to be seen.
REGISTRY_CACHE_S = 1.0
# How many unknown device ids the verifier remembers (each for REGISTRY_CACHE_S). Misses have their
# own small cache: frames under made-up ids must not fill the cache of known devices.
MISS_CACHE_MAX = 1024
FW_PATTERN = re.compile(r"[0-9A-Za-z.+-]{1,32}")  # what firmware puts in fw: civic.VERSION, e.g. "0.1.0"
# Release period of a personal field without release_every_s, by its report type (the firmware's
# default: a "win" release every window, a "day" release every day).
_DEFAULT_RELEASE_S = {"hour": 3600, "day": 86400}


class _Release(NamedTuple):
    """How the policy lets one personal (noisy_count) field leave a device, as the gate's bounds: a
    board flashed with a stricter policy.json than the gateway's (smaller ε, larger k, coarser
    quantum) passes; a looser one is refused. The release period must be the policy's own: releases
    over other periods would overlap the policy's (6 h, 12 h, 24 h over the same events), and the store
    keeps one release per exact period only."""

    rtype: str   # the only report type that may carry it
    period: int  # the period (``l``) it is released over
    eps: int     # the most milli-ε in ``e`` of one release
    k: int       # a released (noisy) value is at least k; below it the value is left out


class OutOfRange(NamedTuple):
    """A non-personal value outside its field's policy ``valid_range``, dropped from its report."""

    field: str
    value: int
    low: int
    high: int


def _requantise(value: int, quantum: int) -> int:
    """The nearest multiple of ``quantum`` (halves up), as the firmware's ``quantise`` rounds."""
    return (value + quantum // 2) // quantum * quantum


# Stand-ins for what a body leaves out, read (never changed) by PolicyGate._judge: no new empty dict or
# list per report.
_ABSENT_MAP: dict[str, Any] = {}
_ABSENT_LIST: list[Any] = []
_NO_NAMES: frozenset[str] = frozenset()


class PolicyGate:
    """The privacy policy (firmware/policy.json) as the gateway re-checks it on every report.

    Besides the allowlist of fields and alarm codes: a personal (``noisy_count``) field only in its
    release report type, over its release period, with 0 < ``e`` <= the
    policy's per-release ε, and a released value at least k (and on its quantum, if it has one);
    a non-personal field with its own release period (``release_every_s``, e.g. the bin's fill: its
    steps date the deposits) only in win reports over that period (in a win report over a shorter
    period, e.g. a 15-minute window of a board on older firmware, :meth:`check_and_drop` drops it and
    the rest of the report is kept); an alarm report carrying only the
    fields its alarm codes name (policy ``alarms.<code>.fields``, e.g. the fire alarm's temp);
    ``e`` naming personal fields only; ``fw`` a version string. A board's policy.json may be stricter
    than the gateway's (its releases then pass; protocol §2, docs/privacy.md), never looser: an
    authentic report refused here is acknowledged past and lost. A non-personal value off its quantum
    is not refused: :meth:`coarsen` rounds it to the gateway's quantum. A non-personal value outside its
    field's ``valid_range`` (a faulty sensor: fill 250 %, temp 9000 °C) is not refused either:
    :meth:`drop_out_of_range` drops it and the rest of the report is kept. Refusal messages never quote a
    personal field's value (they are logged). The rules are built once per kind.

    Raises:
        ConfigError: the policy's shape or values are refused (:func:`gateway.policy_check.check_policy`,
            what ``load_policy`` checks too): among them a field's ``release`` unknown or not matching its
            ``personal`` flag, a personal field without ε per release or k (in the field or in
            ``defaults``) or with one that is not a whole number >= 1, a non-personal field with a release
            period outside win reports, an alarm naming something other than a non-personal field of its
            kind, a ``valid_range`` that is not ``[min, max]`` of whole numbers on the field's quantum with
            min <= max, or one on a personal field.
    """

    def __init__(self, policy: dict[str, Any]) -> None:
        # shape, types and ranges (gateway.policy_check), the release rule among them: what the gate treats as
        # personal below is then what the policy marks so, and every bound below a whole number in range; a
        # personal field's ε and k may come from defaults here (_release).
        # Kept though load_policy and Gateway check the policies they pass (more strictly: own ε and k): a
        # PolicyGate or Verifier built from a policy made in code (tests, bench, embedding code) has no other check.
        # Without it a release typo ("noisy_cnt") lets a personal field through as non-personal, unchecked for ε
        # and k, and a window_s of "900" refuses (so loses) every authentic win report of its kind. On a Gateway's
        # path it repeats ~0.1 ms once per start, never per report.
        check_policy(policy, own_bounds=False)
        kinds: dict[str, Any] = policy["kinds"]
        defaults: dict[str, Any] = policy.get("defaults", {})
        self.fields = {k: frozenset(spec["fields"]) for k, spec in kinds.items()}
        self.alarms = {k: frozenset(spec.get("alarms", {})) for k, spec in kinds.items()}
        default_window = defaults.get("window_s")
        self.window_s: dict[str, int | None] = {k: spec.get("window_s", default_window) for k, spec in kinds.items()}
        self.releases: dict[str, dict[str, _Release]] = {}
        self.personal: dict[str, frozenset[str]] = {}
        # (field, quantum) of the fields with a quantum above 1 (a quantum of 1 holds for any integer):
        # personal ones are refused off it, non-personal ones rounded to it (coarsen)
        self.quanta: dict[str, tuple[tuple[str, int], ...]] = {}
        self.coarse_quanta: dict[str, tuple[tuple[str, int], ...]] = {}
        self._fw_seen: set[str] = set()  # fw strings that matched FW_PATTERN
        # (kind, win|hour|day) -> the fields the policy reports in that type (its "report"); an alarm
        # may carry the kind's non-personal values of the moment (the fire alarm's temp), a boot none
        self.fields_of: dict[tuple[str, str], frozenset[str]] = {}
        # kind -> non-personal field -> its release period (release_every_s): released only in "win"
        # reports over that period (the bin's fill: every 15 minutes its steps would date each deposit)
        self.periodic: dict[str, dict[str, int]] = {}
        # kind -> alarm code -> the fields its report may carry (policy alarms.<code>.fields; none by
        # default): an alarm leaves at once, so anything else in it would bypass its release period
        self.alarm_fields: dict[str, dict[str, frozenset[str]]] = {}
        # kind -> (field, min, max) of its fields with a valid_range (non-personal only)
        self.ranges: dict[str, tuple[tuple[str, int, int], ...]] = {}
        for k, spec in kinds.items():
            releases: dict[str, _Release] = {}
            periodic: dict[str, int] = {}
            quanta: list[tuple[str, int]] = []
            coarse: list[tuple[str, int]] = []
            ranges: list[tuple[str, int, int]] = []
            for name, field in spec["fields"].items():
                where = "kinds.%s.fields.%s" % (k, name)
                quantum = _whole(field.get("quantum", 1), where + ".quantum")
                personal = field.get("release") == "noisy_count"
                if quantum > 1:
                    (quanta if personal else coarse).append((name, quantum))
                if "valid_range" in field:
                    low, high = _valid_range(field, personal=personal or field.get("personal") is True,
                                             quantum=quantum, where=where)
                    ranges.append((name, low, high))
                if personal:
                    releases[name] = self._release(field, defaults, self.window_s[k], where)
                elif "release_every_s" in field:
                    if field.get("report") != "win":
                        raise ConfigError("privacy policy: %s has release_every_s, so its report must be win, not %r"
                                          % (where, field.get("report")), reason="bad_value", key=where + ".report")
                    periodic[name] = _whole(field["release_every_s"], where + ".release_every_s")
            self.releases[k] = releases
            self.periodic[k] = periodic
            self.alarm_fields[k] = self._alarm_fields(k, spec)
            self.personal[k] = frozenset(releases)
            for rtype in ("win", "hour", "day"):  # the fields a periodic report of each type may carry
                self.fields_of[(k, rtype)] = frozenset(
                    name for name, field in spec["fields"].items() if field.get("report") == rtype)
            self.quanta[k] = tuple(quanta)
            self.coarse_quanta[k] = tuple(coarse)
            self.ranges[k] = tuple(ranges)

    @staticmethod
    def _alarm_fields(kind: str, spec: dict[str, Any]) -> dict[str, frozenset[str]]:
        """Alarm code -> the fields its report may carry: the policy's ``fields`` of the alarm, each a
        non-personal field of the kind (a personal count leaves only noised, over its period)."""
        out: dict[str, frozenset[str]] = {}
        for code, alarm in spec.get("alarms", {}).items():
            names = alarm.get("fields", []) if isinstance(alarm, dict) else []
            where = "kinds.%s.alarms.%s.fields" % (kind, code)
            if not isinstance(names, list):
                raise ConfigError("privacy policy: %s must be a list of field names" % where, reason="bad_value",
                                  key=where)
            for name in names:
                field = spec["fields"].get(name) if isinstance(name, str) else None
                if not isinstance(field, dict) or field.get("release") == "noisy_count":
                    raise ConfigError("privacy policy: %s: %r is not a non-personal field of %s" % (where, name, kind),
                                      reason="bad_value", key=where)
            out[str(code)] = frozenset(names)
        return out

    @staticmethod
    def _release(field: dict[str, Any], defaults: dict[str, Any], window_s: int | None, where: str) -> _Release:
        """The bounds of one personal field (a personal count may have its own release period, policy
        release_every_s, e.g. 6 h for PIR passes, and then travels in a "win" report over that period,
        alone with the kind's other counts of that period)."""
        rtype = field.get("report")
        if rtype != "win" and rtype not in _DEFAULT_RELEASE_S:
            raise ConfigError("privacy policy: %s.report must be win, hour or day for a noisy_count, not %r"
                              % (where, rtype), reason="bad_value", key=where + ".report")
        bounds: dict[str, Any] = {}
        for key in ("eps_per_release_milli", "k"):
            value = field.get(key, defaults.get(key))
            if value is None:
                raise ConfigError("privacy policy: %s: no %s (and none in defaults): the gateway cannot check its "
                                  "releases" % (where, key), reason="bad_value", key="%s.%s" % (where, key))
            bounds[key] = _whole(value, "%s.%s" % (where, key))
        if "release_every_s" in field:
            period = _whole(field["release_every_s"], where + ".release_every_s")
        elif rtype == "win":
            period = _whole(window_s, where + " (window_s)")
        else:
            period = _DEFAULT_RELEASE_S[rtype]
        return _Release(str(rtype), period, bounds["eps_per_release_milli"], bounds["k"])

    def win_period_problem(self, body: dict[str, Any], kind: str) -> str | None:
        """None if a "win" report's period fits the kind's policy, else what is wrong with it.

        A win report covers the kind's window; a longer one is a release of fields over their release
        period (``release_every_s``: personal counts, the bin's fill; exactly: releases over other periods
        would overlap), and carries only those fields.
        ``w`` is aligned to ``l`` (checked by the caller for every report type).
        """
        length = body["l"]
        if length == self.window_s.get(kind):
            return None
        fields = frozenset(name for name, rel in self.releases.get(kind, {}).items()
                           if rel.rtype == "win" and length == rel.period).union(
            name for name, period in self.periodic.get(kind, {}).items() if length == period)
        if not fields:
            return "a win report covers %s s (or a field's release period), not %d: the board's " \
                   "policy.json has another window_s or release_every_s than the gateway's" % (
                       self.window_s.get(kind), length)
        outside = sorted(str(f) for f in set(body.get("m", {})) | set(body.get("e", {})) if f not in fields)
        if outside:
            return "a %d s release may carry only %s, not %s" % (length, ", ".join(sorted(fields)), ", ".join(outside))
        return None

    def check(self, body: dict[str, Any], kind: str) -> str | None:
        """Return None if ``body`` is allowed for ``kind``, else a description of the first violation.

        A non-personal field in a win report over a shorter period than its own release period is no
        violation: :meth:`check_and_drop` drops it."""
        verdict = self._judge(body, kind)
        return verdict if isinstance(verdict, str) else None

    def check_and_drop(self, body: dict[str, Any], kind: str) -> tuple[str | None, tuple[str, ...]]:
        """:meth:`check` ``body``; from a body it allows, drop in place the non-personal fields with their
        own release period (``release_every_s``) that it carries over a shorter period. Return the
        first violation (None when allowed) and the names of the fields dropped (usually none).

        A bin on firmware from before fill had its 6-hour period sends fill in every 15-minute window:
        its steps would date the deposits, so it must not be stored or published, but the window's
        other fields (temp for fire detection, tilt and bat) reveal nothing about people and are kept.
        A personal field over another period is refused instead (never dropped). The fields are found
        by the same pass over the body's release periods that checks them, once per frame.
        """
        verdict = self._judge(body, kind)
        if isinstance(verdict, str):
            return verdict, ()
        if verdict:
            m = body["m"]
            for name in verdict:
                del m[name]
        return None, verdict

    def _judge(self, body: dict[str, Any], kind: str) -> str | tuple[str, ...]:
        """The first violation of ``body`` (a str), or, when it is allowed, the fields
        :meth:`check_and_drop` drops from it (a tuple, usually empty)."""
        # Subset tests first (the common, valid case); the sorted lists only to describe a violation.
        if not body.keys() <= TOP_LEVEL_KEYS:
            extra = sorted(str(k) for k in body if k not in TOP_LEVEL_KEYS)
            return "top-level key(s) not in protocol §2: %s" % ", ".join(extra)
        allowed = self.fields.get(kind, _NO_NAMES)
        m, e = body.get("m", _ABSENT_MAP), body.get("e", _ABSENT_MAP)
        if not (type(m) is dict and type(e) is dict and m.keys() <= allowed and e.keys() <= allowed):
            for section, values in (("m", m), ("e", e)):  # only to describe the violation
                if not isinstance(values, dict):
                    return "%s must be a map" % section
                bad = sorted(str(f) for f in values if f not in allowed)
                if bad:
                    return "%s field(s) not on the %s allowlist: %s" % (section, kind, ", ".join(bad))
        codes = body.get("a", _ABSENT_LIST)
        if not isinstance(codes, list):
            return "a must be an array"
        if codes:
            if not all(type(c) is str for c in codes):  # an array or map is unhashable: test before the lookup
                return "alarm codes must be strings"
            bad = sorted(str(c) for c in codes if c not in self.alarms.get(kind, frozenset()))
            if bad:
                return "alarm code(s) not in the %s policy: %s" % (kind, ", ".join(bad))
        # m and e keys are allowlisted strings from here on. Values of the wrong type are left to
        # the body checks (reason "body"); only integers are judged against the policy here.
        personal = self.personal.get(kind, _NO_NAMES)
        if e or not personal.isdisjoint(m):
            problem = self._release_problem(body, kind, m, e, personal)
            if problem is not None:
                return problem
        early: tuple[str, ...] = ()
        rtype = body.get("t")
        if rtype == "win":
            periodic = self.periodic.get(kind, _ABSENT_MAP)
            length = body.get("l")
            for name in sorted(periodic.keys() & m.keys()) if periodic else ():
                if type(length) is int and length < periodic[name]:
                    early += (name,)  # not about people: dropped from the report, the rest kept
                    continue
                if length != periodic[name]:
                    return ("%s is released only in win reports over %d s (policy release_every_s; released more "
                            "often its steps would date the events behind them), not over %r s" % (
                                name, periodic[name], length))
        elif rtype == "alarm" and m and codes:  # an alarm without codes: the body checks
            carried = frozenset().union(*(self.alarm_fields.get(kind, {}).get(c, frozenset()) for c in codes))
            if not m.keys() <= carried:
                other = sorted(f for f in m if f not in carried)
                return "an alarm report carries only the fields its alarm codes name (policy alarms.<code>.fields: " \
                       "%s), not %s" % (", ".join(sorted(carried)) or "none", ", ".join(other))
        in_type = self.fields_of.get((kind, rtype)) if type(rtype) is str else None  # other t: the body checks
        if in_type is not None and not m.keys() <= in_type:
            other = sorted(f for f in m if f not in in_type)
            return "%s reported in a %s report (policy: %s)" % (", ".join(other), rtype, ", ".join(
                "%s in %s reports" % (f, t) for f in other for (k, t), names in sorted(self.fields_of.items())
                if k == kind and f in names))
        fw = body.get("fw")
        if type(fw) is str and fw not in self._fw_seen:  # another type is left to the body checks
            if not FW_PATTERN.fullmatch(fw):
                # not quoted: a free-form string could carry anything (it is logged)
                return "fw is not a version string (1-32 of 0-9 A-Z a-z . + -; it has %d characters)" % len(fw)
            if len(self._fw_seen) < 1024:  # a fleet runs a handful of versions: skip the regex for those
                self._fw_seen.add(fw)
        return early

    def coarsen(self, body: dict[str, Any], kind: str) -> tuple[str, ...]:
        """Round the non-personal values of a checked body that are off the policy's quantum to it, in
        place; return the names of the fields rounded (usually none).

        A board flashed with a finer quantum than the gateway's (e.g. lux 10 against 20) reveals
        nothing personal; refusing its window would lose the rest of it (lamp state, level). The
        gateway stores and publishes it at its own policy's precision instead.
        """
        m = body.get("m")
        changed: tuple[str, ...] = ()
        if isinstance(m, dict):
            for name, quantum in self.coarse_quanta.get(kind, ()):
                v = m.get(name)
                if type(v) is int and v % quantum:
                    m[name] = _requantise(v, quantum)
                    changed += (name,)
        return changed

    def drop_out_of_range(self, body: dict[str, Any], kind: str) -> tuple[OutOfRange, ...]:
        """Drop in place the non-personal values of a checked body outside their field's policy
        ``valid_range``; return what was dropped (usually nothing).

        Such a value comes from a faulty sensor or firmware (fill 250 %, tilt 7), not from the world:
        stored, it would be published as open data and skew aggregates. Refusing the report would lose
        the rest of it (it is authentic, so acknowledged and deleted on the device), so only the value
        is left out, an integer of any size (one of ``2**53`` or more is as implausible as one just above
        the range). Values that are not integers are left to the body checks (the report is refused as
        malformed, as without a range), and so are integers of ``2**53`` or more on a field without a range.
        """
        m = body.get("m")
        out: tuple[OutOfRange, ...] = ()
        if type(m) is dict and m:
            for name, low, high in self.ranges.get(kind, ()):
                v = m.get(name)
                if type(v) is int and not low <= v <= high:
                    del m[name]
                    out += (OutOfRange(name, v, low, high),)
        return out

    def _release_problem(self, body: dict[str, Any], kind: str, m: dict[str, Any], e: dict[str, Any],
                         personal: frozenset[str]) -> str | None:
        """What is wrong with the personal fields and ε of a report, or None (never quoting a value)."""
        other = sorted(f for f in e if f not in personal)
        if other:
            return "e names field(s) that are not personal (noisy_count): %s" % ", ".join(other)
        rtype, length = body.get("t"), body.get("l")
        quanta = dict(self.quanta.get(kind, ()))
        for name in sorted(personal.intersection(m).union(e)):
            rel = self.releases[kind][name]
            if rtype != rel.rtype or length != rel.period:
                return "%s is released only in %s reports over %s s, not in a %r report over %r s" % (
                    name, rel.rtype, rel.period, rtype, length)
            eps = e.get(name)
            if eps is None:
                return "%s released without its epsilon in e (policy: %d milli-epsilon)" % (name, rel.eps)
            if type(eps) is int and not 0 < eps <= rel.eps:
                if eps <= 0:
                    return "e[%s] = %d milli-epsilon: a release spends a positive epsilon" % (name, eps)
                return "e[%s] = %d milli-epsilon is above the policy's per-release epsilon %d" % (name, eps, rel.eps)
            v = m.get(name)
            if type(v) is int:
                if v < rel.k:
                    return "%s is below k = %d (a release under this policy leaves such a value out)" % (name, rel.k)
                quantum = quanta.get(name, 1)
                if v % quantum:
                    return "%s is not a multiple of its quantum %d (policy)" % (name, quantum)
        return None


class Verified(NamedTuple):
    """A report that passed every stateless check (immutable; one is built per frame).

    ``held`` is the body's ``h`` (protocol §2: the seqs below this one the device still held when
    it framed this report, as runs ``first, last, ...``), or None from firmware without it.
    ``coarsened`` names the non-personal fields stored rounded to the gateway policy's quantum
    (:meth:`PolicyGate.coarsen`: the board runs a policy with a finer one); ``dropped`` the non-personal
    fields left out because they came over a shorter period than their release period
    (:meth:`PolicyGate.check_and_drop`: the board runs older firmware); ``out_of_range`` the
    non-personal values left out because they are outside their field's ``valid_range``
    (:meth:`PolicyGate.drop_out_of_range`: a faulty sensor).
    """

    frame: Frame
    device: DeviceRecord
    key: bytes
    record: ReportRecord
    held: tuple[int, ...] | None = None
    coarsened: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    out_of_range: tuple[OutOfRange, ...] = ()
    tag_key: TagKey | None = None  # ``key``'s HMAC state (frame.tag_key), for the tag of the ACK answering it


def held_runs(body: dict[str, Any], seq: int) -> tuple[int, ...] | None:
    """The ``h`` of a decoded body as a tuple (None when absent).

    Raises:
        ValueError: not an array of at most :data:`MAX_HELD_RUNS` runs ``first <= last`` of integers,
            ascending with a hole between runs, from 1 and below ``seq``.
    """
    h = body.get("h")
    if h is None:
        return None
    if (not isinstance(h, list) or len(h) % 2 or len(h) > 2 * MAX_HELD_RUNS
            or not all(type(v) is int for v in h)):
        raise ValueError("h must be an array of at most %d runs (first, last) of integers" % MAX_HELD_RUNS)
    low = 0  # each run starts above the last one's end + 1 (a hole between runs)
    for i in range(0, len(h), 2):
        first, last = h[i], h[i + 1]
        if not low < first <= last < seq:
            raise ValueError("h = %r is not ascending runs of seqs below %d" % (h[:8], seq))
        low = last + 1
    return tuple(h)


def _bad(dev_id: str, seq: int, msg: str) -> RejectedReport:
    """The refusal of a malformed body (reason ``body``) of ``dev_id``'s report ``seq``."""
    return RejectedReport("%s seq %d: %s" % (dev_id, seq, msg), reason="body", device_id=dev_id, seq=seq)


class Verifier:
    """Stateless checks of REPORT frames against the registry and the policy.

    Args:
        registry: the device registry (keys and revocation).
        policy: parsed firmware/policy.json.

    Raises:
        ConfigError: the policy lacks what the gate checks releases against (:class:`PolicyGate`).
    """

    def __init__(self, registry: Registry, policy: dict[str, Any], *, cache_s: float = REGISTRY_CACHE_S) -> None:
        self._registry = registry
        self._gate = PolicyGate(policy)
        self._cache_s = cache_s
        # registered device id -> (expires at (monotonic), record, key or None when revoked, the key's HMAC
        # states (frame.tag_key) or None): the states are key material, kept and dropped with the key
        self._cache: dict[str, tuple[float, DeviceRecord, bytes | None, TagKey | None]] = {}
        # unknown device id -> expires at (monotonic); insertion order is expiry order (one TTL)
        self._misses: dict[str, float] = {}
        self._cache_changes = -1

    def _device(self, dev_id: str) -> tuple[DeviceRecord | None, bytes | None, TagKey | None]:
        """Registry record, key and the key's HMAC states of ``dev_id``, cached (a per-frame lookup
        dominated ingest time; the states save a third of each tag's HMAC)."""
        changes = self._registry.changes
        if changes != self._cache_changes:
            self._cache.clear()
            self._misses.clear()
            self._cache_changes = changes
        now = time.monotonic()
        hit = self._cache.get(dev_id)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2], hit[3]
        misses = self._misses
        missed = misses.get(dev_id)
        if missed is not None and missed > now:
            return None, None, None
        device = self._registry.lookup(dev_id)
        if device is None:
            # Bounded: a flood of made-up ids only pushes out the oldest misses (the soonest to expire).
            if missed is not None:
                del misses[dev_id]  # re-inserted at the end, keeping insertion order = expiry order
            elif len(misses) >= MISS_CACHE_MAX:
                del misses[next(iter(misses))]
            misses[dev_id] = now + self._cache_s
            return None, None, None
        if missed is not None:
            del misses[dev_id]
        key = self._registry.key(dev_id) if not device.revoked else None
        if len(self._cache) > 100_000:
            self._cache.clear()  # registered devices only; a safety bound all the same
        states = tag_key(key) if key is not None else None
        self._cache[dev_id] = (now + self._cache_s, device, key, states)
        return device, key, states

    def verify(self, raw: bytes, *, link: str, now: float) -> Verified:
        """Verify one frame received on ``link``.

        Raises:
            ProtocolError: ``oversize``, ``version``, ``malformed``, ``body``.
            RejectedReport: ``type`` (not a REPORT), ``unknown_device``, ``revoked``, ``hmac``, ``retired``,
                ``policy``, ``kind``.
        """
        frame = parse_frame(raw)
        dev_id, seq = frame.device_id, frame.seq
        if frame.type != FRAME_REPORT:
            raise RejectedReport("frame type %d is not REPORT" % frame.type, reason="type", device_id=dev_id, seq=seq)
        device, key, states = self._device(dev_id)
        if device is None:
            raise RejectedReport("unknown device %s" % dev_id, reason="unknown_device", device_id=dev_id, seq=seq)
        if device.revoked or key is None or states is None:
            raise RejectedReport("device %s is revoked" % dev_id, reason="revoked", device_id=dev_id, seq=seq)
        if not verify_keyed_tag(frame, states):
            raise RejectedReport("tag of %s seq %d does not verify" % (dev_id, seq), reason="hmac",
                                 device_id=dev_id, seq=seq)
        if device.retired:
            # After the tag: "retired" says the board itself is still in reach (its key kept for reinstate),
            # never a frame anyone could forge under its id. Refused, never acknowledged: the board keeps its
            # reports for the gateway that serves it now.
            raise RejectedReport("device %s is retired" % dev_id, reason="retired", device_id=dev_id, seq=seq)
        if seq == 0:
            raise RejectedReport("seq 0 is never used by a device", reason="malformed", device_id=dev_id, seq=seq)
        try:
            body = decode_body(frame.body)
        except ProtocolError as exc:
            raise RejectedReport(str(exc), reason="body", device_id=dev_id, seq=seq) from exc
        try:
            held = held_runs(body, seq)
        except ValueError as exc:
            raise RejectedReport("%s seq %d: %s" % (dev_id, seq, exc), reason="body", device_id=dev_id,
                                 seq=seq) from exc
        problem, dropped = self._gate.check_and_drop(body, device.kind)
        if problem is not None:
            raise RejectedReport("%s seq %d: %s" % (dev_id, seq, problem), reason="policy", device_id=dev_id, seq=seq,
                                 held=held)
        out_of_range = self._gate.drop_out_of_range(body, device.kind)  # the value sent, before any rounding
        coarsened = self._gate.coarsen(body, device.kind)
        try:
            record = self._record(body, frame, device, raw, link=link, now=now)
        except RejectedReport as exc:
            exc.held = held  # authentic: what it says about the outbox still counts (ingest)
            raise
        # every field in order, without NamedTuple's Python-level __new__ (keywords cost ~0.3 µs per frame more)
        return tuple.__new__(Verified, (frame, device, key, record, held, coarsened, dropped, out_of_range, states))

    def _record(self, body: dict[str, Any], frame: Frame, device: DeviceRecord, raw: bytes, *, link: str,
                now: float) -> ReportRecord:
        dev_id, seq = frame.device_id, frame.seq
        if not _REQUIRED.issubset(body):
            raise _bad(dev_id, seq, "missing key(s) %s" % ", ".join(k for k in REQUIRED_KEYS if k not in body))
        if body["k"] != device.kind:
            raise RejectedReport("%s is registered as %s but reports kind %r" % (dev_id, device.kind, body["k"]),
                                 reason="kind", device_id=dev_id, seq=seq)
        rtype, w, length = body["t"], body["w"], body["l"]
        if type(rtype) is not str or rtype not in REPORT_TYPES:  # an array would be unhashable here
            raise _bad(dev_id, seq, "unknown report type %r" % (rtype,))
        # type() is int: msgpack gives exact ints, and a bool is not a number here.
        if not (type(w) is int and type(length) is int and 0 <= w <= 2**40 and 0 < length <= 7 * 86400):
            raise _bad(dev_id, seq, "w and l must be integers (0 <= w, 0 < l <= 1 week)")
        if rtype == "win":
            gate = self._gate
            # the kind's own window (the usual case) passes without the call (win_period_problem's first test)
            problem = (gate.win_period_problem(body, device.kind)
                       if length != gate.window_s.get(device.kind) and isinstance(body["m"], dict) else None)
            if problem is not None:  # the kind's window and release periods are the policy's: a policy refusal
                raise RejectedReport("%s seq %d: %s" % (dev_id, seq, problem), reason="policy", device_id=dev_id,
                                     seq=seq)
        elif length != FIXED_PERIODS[rtype]:
            raise _bad(dev_id, seq, "a %s report covers %d s, not %d" % (rtype, FIXED_PERIODS[rtype], length))
        if w % length:
            raise _bad(dev_id, seq, "w = %d is not a multiple of l = %d" % (w, length))
        # The policy gate already held m/e keys and alarm codes to the allowlist (so they are str).
        m, e, a = body["m"], body.get("e", {}), body.get("a", [])
        for v in m.values():
            if type(v) is not int or not _MIN_M < v < _MAX_M:
                raise _bad(dev_id, seq, "measurements must be integers")
        for v in e.values():
            if type(v) is not int or not 0 <= v <= 10**9:
                raise _bad(dev_id, seq, "epsilon accounting must be non-negative integers (milli-epsilon)")
        if (rtype == "alarm") != bool(a):
            raise _bad(dev_id, seq, "alarm codes belong in, and only in, alarm reports")
        if rtype == "boot" and (m or e):
            raise _bad(dev_id, seq, "a boot report carries no measurements")
        fw = body.get("fw")
        if fw is not None and not (isinstance(fw, str) and len(fw) <= 64):
            raise _bad(dev_id, seq, "fw must be a short string")
        return tuple.__new__(ReportRecord, (dev_id, seq, device.kind, device.zone, rtype, w, length, m, e, a, fw, now,
                                            link, frame_digest(raw)))  # every field, in order (see verify)
