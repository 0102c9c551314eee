"""The shape and ranges of the privacy policy, checked once, where it is loaded.

:func:`check_policy` refuses a policy any part of the gateway would crash on or misread, and at least
everything the firmware refuses at boot (``civic.policy``): a version other than 1, a noisy count
without its own ε per release, daily budget and k (>= 1, per release <= per day), an alarm naming a
field that is not a non-personal field of its kind. It adds what only the gateway needs: every value
it reads of the right type (``defaults: null`` or a ``window_s`` of ``"x"`` would stop ``run`` with a
traceback after ``run --check`` passed), windows and release periods a report can have (1 s..7 days,
the most :mod:`gateway.pipeline.verify` accepts of a report's ``l``), and retentions of 1..36500 days
(a negative one would put the cut-off in the future: every stored value of the field removed).

:func:`gateway.resources.load_policy` applies it to the file everything reads (so ``run`` and ``run
--check`` agree), and :class:`gateway.pipeline.verify.PolicyGate` to any policy it is given. Errors
are :class:`~gateway.errors.ConfigError` with ``reason`` ``bad_value``, ``key`` the dotted path of
the value at fault (``kinds.bin.window_s``; ``recipients[1].who`` in a list) and ``path`` the file.

What it takes but says something about comes back as :class:`PolicyWarning` (``run --check`` prints it):
an ε per release whose noise samples need more ``os.urandom`` calls than the firmware's padding hides more
often than :data:`PAD_EXCEED_WARN` (:func:`gateway.noise_padding.exceed_probability`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gateway.errors import ConfigError
from gateway.noise_padding import PAD_DRAWS, exceed_probability
from gateway.policy_rules import NOISY_COUNT, check_release_rules, policy_error

POLICY_VERSION = 1
"""The policy layout this gateway and the firmware read (``civic.policy.parse`` refuses any other)."""
MAX_PERIOD_S = 7 * 86400
"""The longest window or release period: a report's ``l`` is at most a week (gateway.pipeline.verify)."""
MAX_RETENTION_DAYS = 36500
"""The longest retention: a century, what a saved retention pass may hold (``field_retention.MAX_DAYS``)
and the admin API accepts."""
REPORT_TYPES = ("win", "hour", "day")
"""The periodic report types a field may travel in (docs/protocol.md §2)."""
NOISY_BOUNDS = ("eps_per_release_milli", "eps_per_day_milli", "k")
"""What a noisy count needs in its own spec: the firmware and the transparency page read them there."""
PAD_EXCEED_WARN = 2.0 ** -20
"""Warn when a noise sample needs more than the firmware's ``PAD_DRAWS`` calls (its release then unpadded, its
time telling about the noise: docs/privacy.md §2) with a probability above this, about one release in a million:
a field released every 15 minutes (35,040 releases a year) then has an unpadded release less than once in 30
years. From the sampler's algorithm (:func:`gateway.noise_padding.exceed_probability`), no ε per release up to
1.169 is above it; above that, it depends on the fraction 1000/m (1.17 is: 2^-19.97; 1.5 is not: 2^-27.4; 1.99
is: 2^-15.7; 2 is not: 2^-45.8)."""


@dataclass(frozen=True)
class PolicyWarning:
    """A policy value the gateway and the firmware take, but that weakens what the policy promises: said (by
    ``run --check``), never refused.

    Attributes:
        key: the dotted path of the value (``kinds.bin.fields.mot.eps_per_release_milli``).
        message: what it weakens and what would not, for the operator.
    """

    key: str
    message: str


def whole(value: Any, where: str, *, low: int = 1, high: int | None = None, note: str = "",
          source: Path | None = None) -> int:
    """``value`` if it is a whole number in ``low..high`` (a bool is not one), else ConfigError naming ``where``.

    Args:
        value: the policy's value.
        where: its dotted key.
        low: the least allowed.
        high: the most allowed (None: no bound).
        note: why ``high`` is the most, said when it is exceeded.
        source: the policy file, for the message.
    """
    if type(value) is not int or value < low:
        raise policy_error(where, "%s must be a whole number >= %d, not %r" % (where, low, value), source)
    if high is not None and value > high:
        raise policy_error(where, "%s = %d is above %d%s" % (where, value, high, note), source)
    return value


def valid_range(field: Mapping[str, Any], *, personal: bool, quantum: int, where: str,
                source: Path | None = None) -> tuple[int, int]:
    """The ``(min, max)`` of a field's policy ``valid_range`` (both included).

    Raises:
        ConfigError: on a personal field (its noise has no bound: any range would drop genuine
            releases), not two whole numbers, min above max, or a bound off the field's quantum.
    """
    key = where + ".valid_range"
    value = field["valid_range"]
    if personal:
        raise policy_error(key, "%s: a people-related field (personal or noisy_count) takes no valid_range: its "
                           "released value carries discrete Laplace noise, which has no bound, so any range would "
                           "drop genuine releases" % key, source)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value)):
        raise policy_error(key, "%s must be [min, max], two whole numbers in the field's unit, not %r"
                           % (key, value), source)
    low, high = value
    if low > high:
        raise policy_error(key, "%s = [%d, %d]: min is above max" % (key, low, high), source)
    if low % quantum or high % quantum:
        raise policy_error(key, "%s = [%d, %d]: the bounds must be multiples of the field's quantum %d (a value in "
                           "range then stays in range when rounded to it)" % (key, low, high, quantum), source)
    return low, high


class _Check:
    """One pass over a policy; every error names ``source``."""

    def __init__(self, source: Path | None, own_bounds: bool) -> None:
        self.source = source
        self.own_bounds = own_bounds
        self.warnings: list[PolicyWarning] = []

    def error(self, where: str, message: str) -> ConfigError:
        return policy_error(where, message, self.source)

    def whole(self, value: Any, where: str, **bounds: Any) -> int:
        return whole(value, where, source=self.source, **bounds)

    def period(self, value: Any, where: str) -> int:
        return self.whole(value, where, high=MAX_PERIOD_S, note=" (7 days: a report covers at most a week)")

    def obj(self, value: Any, where: str, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, "%s must be an object (%s), not %s" % (where, what, _shown(value)))
        return value

    def text(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise self.error(where, "%s must be a text (a JSON string), not %s" % (where, _shown(value)))

    def texts(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise self.error(where, "%s must be a list of texts, not %s" % (where, _shown(value)))
        for i, item in enumerate(value):
            self.text(item, "%s[%d]" % (where, i))

    def top(self, policy: Any) -> None:
        if not isinstance(policy, dict):
            raise self.error("", "the file must hold a JSON object, not %s" % _shown(policy))
        if "version" not in policy:
            raise self.error("version", "version is missing: it must be %d (the policy layout the gateway and the "
                             "firmware read)" % POLICY_VERSION)
        version = policy["version"]
        if type(version) is not int or version != POLICY_VERSION:
            raise self.error("version", "version must be %d (the policy layout the gateway and the firmware read; a "
                             "board refuses any other), not %r" % (POLICY_VERSION, version))
        if "statement" in policy:
            self.text(policy["statement"], "statement")
        if "not_collected" in policy:
            self.texts(policy["not_collected"], "not_collected")
        recipients = policy.get("recipients", [])
        if not isinstance(recipients, list):
            raise self.error("recipients", "recipients must be a list of {\"who\": ..., \"gets\": ...}, not %s"
                             % _shown(recipients))
        for i, item in enumerate(recipients):
            where = "recipients[%d]" % i
            self.obj(item, where, '{"who": ..., "gets": ...}')
            for key in ("who", "gets"):
                if key not in item:
                    raise self.error("%s.%s" % (where, key), "%s.%s is missing" % (where, key))
                self.text(item[key], "%s.%s" % (where, key))
        defaults = self.obj(policy.get("defaults", {}), "defaults", "the values a kind or field leaves out")
        if "window_s" in defaults:
            self.period(defaults["window_s"], "defaults.window_s")
        for key in NOISY_BOUNDS:
            if key in defaults:
                self.whole(defaults[key], "defaults." + key)
        check_release_rules(policy, source=self.source)  # kinds an object of kinds with fields; release, personal
        for kind, spec in policy["kinds"].items():
            self.kind(kind, spec, defaults)

    def kind(self, kind: str, spec: dict[str, Any], defaults: Mapping[str, Any]) -> None:
        where = "kinds." + kind
        if "title" in spec:
            self.text(spec["title"], where + ".title")
        if "window_s" in spec:
            self.period(spec["window_s"], where + ".window_s")
        elif "window_s" not in defaults:
            raise self.error(where + ".window_s", "%s.window_s is missing and defaults has no window_s: the kind "
                             "has no aggregation window" % where)
        fields: dict[str, Any] = spec["fields"]
        for name, field in fields.items():
            self.field("%s.fields.%s" % (where, name), field, defaults)
        if "config" in spec:
            self.texts(spec["config"], where + ".config")
        alarms = self.obj(spec.get("alarms", {}), where + ".alarms",
                          "alarm code -> {\"label\": ..., \"fields\": [...]}")
        for code, alarm in alarms.items():
            at = "%s.alarms.%s" % (where, code)
            self.obj(alarm, at, '{"label": ..., "fields": [...]}')
            if "label" in alarm:
                self.text(alarm["label"], at + ".label")
            names = alarm.get("fields", [])
            if not isinstance(names, list):
                raise self.error(at + ".fields", "%s.fields must be a list of field names" % at)
            for name in names:  # a personal count leaves only noised, over its period, never with an alarm
                target = fields.get(name) if isinstance(name, str) else None
                if not isinstance(target, dict) or target.get("release") == NOISY_COUNT:
                    raise self.error(at + ".fields", "%s.fields: %r is not a non-personal field of %s"
                                     % (at, name, kind))

    def field(self, where: str, field: dict[str, Any], defaults: Mapping[str, Any]) -> None:
        for key in ("label", "purpose"):  # what the transparency page must show
            if key not in field:
                raise self.error("%s.%s" % (where, key), "%s.%s is missing (the transparency page shows it)"
                                 % (where, key))
            self.text(field[key], "%s.%s" % (where, key))
        for key in ("unit", "source"):
            if key in field:
                self.text(field[key], "%s.%s" % (where, key))
        report = field.get("report")
        if report not in REPORT_TYPES:
            raise self.error(where + ".report", "%s.report must be one of %s, not %r"
                             % (where, ", ".join(REPORT_TYPES), report))
        if "retention_days" not in field:
            raise self.error(where + ".retention_days", "%s.retention_days is missing: how long its values are "
                             "kept" % where)
        self.whole(field["retention_days"], where + ".retention_days", high=MAX_RETENTION_DAYS,
                   note=" (a century, the longest retention the gateway keeps track of)")
        quantum = self.whole(field.get("quantum", 1), where + ".quantum")
        personal = field["release"] == NOISY_COUNT
        if "valid_range" in field:
            valid_range(field, personal=personal, quantum=quantum, where=where, source=self.source)
        if "release_every_s" in field:
            self.period(field["release_every_s"], where + ".release_every_s")
            if not personal and report != "win":
                raise self.error(where + ".report", "%s has release_every_s, so its report must be win, not %r"
                                 % (where, report))
        if "refractory_s" in field:
            self.whole(field["refractory_s"], where + ".refractory_s", low=0)
        for key in NOISY_BOUNDS:
            if key in field:
                self.whole(field[key], "%s.%s" % (where, key))
        if personal:
            self.noisy(where, field, defaults)

    def noisy(self, where: str, field: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        bounds: dict[str, int] = {}
        for key in NOISY_BOUNDS:
            if key in field:
                bounds[key] = field[key]
            elif not self.own_bounds and key in defaults:  # the gate alone takes them from defaults
                bounds[key] = defaults[key]
            elif self.own_bounds or key != "eps_per_day_milli":  # the gate compares with the other two only
                fallback = "" if key in defaults else " (and none in defaults)"
                raise self.error("%s.%s" % (where, key), "%s: no %s%s: the gateway cannot check its releases; a "
                                 "noisy count needs its own %s.%s (the firmware and the transparency page read it "
                                 "there only)" % (where, key, fallback, where, key))
        per_release, per_day = bounds.get("eps_per_release_milli"), bounds.get("eps_per_day_milli")
        if per_release is not None and per_day is not None and per_release > per_day:
            raise self.error(where + ".eps_per_release_milli", "%s.eps_per_release_milli = %d is above the daily "
                             "budget eps_per_day_milli = %d (a board refuses it)" % (where, per_release, per_day))
        if per_release is not None:
            self.padding(where + ".eps_per_release_milli", per_release)

    def padding(self, key: str, eps_milli: int) -> None:
        """A :class:`PolicyWarning` when the samples at ``eps_milli`` outgrow the padding too often
        (:data:`PAD_EXCEED_WARN`)."""
        p = exceed_probability(eps_milli)
        if p <= PAD_EXCEED_WARN:
            return
        self.warnings.append(PolicyWarning(key, (
            "%s = %d: a noise sample at this epsilon needs more than the %d os.urandom calls the firmware pads to "
            "with probability %.2g (2^%.1f, about one release in %s; this check warns above 2^-20): such a release "
            "is not padded and its time tells about its noise (docs/privacy.md section 2). Every epsilon per "
            "release up to 1.169 stays below 2^-20, and so do 0.25, 0.5, 1 and 2 (scales 1000/m that reduce to "
            "small fractions)" % (key, eps_milli, PAD_DRAWS, p, math.log2(p), format(round(1 / p), ",")))))


def _shown(value: Any) -> str:
    """A short description of a wrong value: its JSON type, and the value itself when it is short."""
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a text",
             list: "a list", dict: "an object"}
    text = repr(value)
    return "%s %s" % (names.get(type(value), type(value).__name__), text) if len(text) <= 40 \
        else names.get(type(value), type(value).__name__)


def check_policy(policy: Any, *, source: Path | None = None, own_bounds: bool = True) -> list[PolicyWarning]:
    """Refuse a privacy policy whose shape or values the gateway or the firmware cannot use; return what it
    takes but warns about.

    Args:
        policy: the parsed policy file.
        source: the file it was read from, named in the error (None: a policy built in memory).
        own_bounds: a noisy count must carry its own ``eps_per_release_milli``, ``eps_per_day_milli``
            and ``k``, as the firmware and the transparency page read them (what a policy file needs).
            False for :class:`gateway.pipeline.verify.PolicyGate` alone, which takes the ε per release
            and k from ``defaults`` when a field leaves them out and does not compare with the daily
            budget.

    Raises:
        ConfigError: ``reason`` ``bad_value``, ``key`` the dotted path of the first value at fault,
            ``path`` ``source``: the policy is not an object; ``version`` is not 1; ``statement``,
            ``not_collected`` or ``recipients`` (``who``, ``gets``) are not texts; ``defaults``, a
            kind, its ``alarms`` or an alarm is not an object; a field's release rule is broken
            (:func:`gateway.policy_rules.check_release_rules`); a kind has no window; a field lacks a
            text ``label`` or ``purpose``, a ``report`` of win, hour or day or a ``retention_days``; a
            window or ``release_every_s`` is not a whole number in 1..604800 s, ``retention_days`` not
            in 1..36500, ``quantum``, ``k`` or an ε not a whole number >= 1, ``refractory_s`` not >= 0;
            a ``valid_range`` is not ``[min, max]`` on the quantum of a non-personal field; a noisy
            count lacks its own ε per release, daily budget or k (see ``own_bounds``), or spends more
            per release than per day; a non-personal field with a release period is not in win reports; an alarm names
            anything but a non-personal field of its kind.

    Returns:
        One :class:`PolicyWarning` per noisy count whose ε per release makes a noise sample need more calls than
        the firmware's padding with a probability above :data:`PAD_EXCEED_WARN` (none for the shipped policy).
    """
    check = _Check(source, own_bounds)
    check.top(policy)
    return check.warnings
