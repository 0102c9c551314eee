"""The privacy policy (``/policy.json``) as the device uses it: one kind's allowlist and budgets.

policy.json is the single source of truth shared with the gateway's policy gate and the
transparency page; the device only ever reads it.
"""

import json

# policy keys of a field the device has no use for, dropped on load to save heap: text for the
# transparency page, and what only the gateway checks (valid_range: docs/protocol.md §2). The flash
# tools leave them out of the board's copy and read this tuple with ast: keep it a literal.
_DOC_ONLY = ("label", "unit", "source", "purpose", "retention_days", "valid_range")
# top-level policy keys that are text for people only (the transparency page): dropped on load like
# _DOC_ONLY, and left out of the board's copy the same way (read with ast: keep it a literal), so a
# change of their wording never changes what a board must hold. The firmware reads version, kinds, defaults.
_DOC_ONLY_TOP = ("statement", "not_collected", "recipients")
# the releases this firmware knows (docs/privacy.md §1): a people-related field (personal: true) leaves
# only as a noisy count and a noisy count is only for one, so a typo or a copied "aggregate" on a people
# count is refused here, not published raw
_RELEASES = ("aggregate", "noisy_count")


class PolicyError(ValueError):
    """The policy is missing, malformed, or forbids what was asked.

    Attributes:
        field: the field or key concerned (may be None).
    """

    def __init__(self, detail, field=None):
        super().__init__("policy: " + detail)
        self.field = field


class KindPolicy:
    """Policy of one device kind.

    Attributes:
        kind: ``streetlight`` or ``bin``.
        fields: dict field -> spec (release, report, eps..., k, quantum, refractory_s,
            release_every_s, personal); the documentation-only keys are dropped.
        allowlist: frozenset of field names that may appear in a report's ``m``.
        personal: frozenset of the people-related (``personal: true``, ``noisy_count``) fields (need
            epsilon accounting); a field whose ``release`` is unknown or does not match its
            ``personal`` flag is refused with PolicyError.
        alarms: frozenset of alarm codes.
        alarm_fields: dict alarm code -> tuple of the fields its report may carry (policy
            ``fields`` of the alarm; none by default).
        config_keys: frozenset of CONFIG keys the kind accepts.
        window_s: aggregation window in seconds.
    """

    def __init__(self, kind, spec, defaults):
        self.kind = kind
        fields = spec.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise PolicyError("kind %s has no fields" % kind)
        for f in fields:
            if not isinstance(fields[f], dict):
                raise PolicyError("field %s is not an object" % f, f)
            for key in _DOC_ONLY:
                if key in fields[f]:
                    del fields[f][key]
            r = fields[f].get("release")
            # "is": personal must be the boolean true exactly for noisy_count (1, null or a missing key fail)
            if r not in _RELEASES or fields[f].get("personal") is not (r == "noisy_count"):
                raise PolicyError("kind %s field %s: release %r, personal %r (allowed: %s; noisy_count exactly "
                                  "when personal is true)" % (kind, f, r, fields[f].get("personal"),
                                                              ", ".join(_RELEASES)), f)
        self.fields = fields
        self.allowlist = frozenset(fields)
        self.personal = frozenset(f for f in fields if fields[f].get("release") == "noisy_count")
        for f in self.personal:
            fspec = fields[f]
            for key in ("eps_per_release_milli", "eps_per_day_milli", "k"):
                v = fspec.get(key)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise PolicyError("field %s needs an integer %s >= 1" % (f, key), f)
            if fspec["eps_per_release_milli"] > fspec["eps_per_day_milli"]:
                raise PolicyError("field %s: epsilon per release exceeds the daily budget" % f, f)
        alarms = spec.get("alarms", {})
        self.alarms = frozenset(alarms)
        self.alarm_fields = {}
        for code in alarms:
            names = alarms[code].get("fields", ()) if isinstance(alarms[code], dict) else ()
            for f in names:
                if f not in fields or f in self.personal:
                    raise PolicyError("alarm %s: field %s is not a non-personal field of %s" % (code, f, kind), f)
            self.alarm_fields[code] = tuple(names)
        self.config_keys = frozenset(spec.get("config", ()))
        self.window_s = spec.get("window_s", defaults.get("window_s", 900))

    def day_budgets(self):
        """Return dict field -> daily budget (milli-epsilon) for the noisy_count fields."""
        return {f: self.fields[f]["eps_per_day_milli"] for f in self.personal}

    def field(self, name):
        """Return the spec of ``name``; raise PolicyError if it is not on the allowlist."""
        spec = self.fields.get(name)
        if spec is None:
            raise PolicyError("field %s is not on the %s allowlist" % (name, self.kind), name)
        return spec


def parse(text, kind):
    """Return the :class:`KindPolicy` of ``kind`` from policy JSON ``text``."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise PolicyError("policy.json is not valid JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("kinds"), dict):
        raise PolicyError("policy.json has no kinds")
    for key in _DOC_ONLY_TOP:
        if key in doc:
            del doc[key]
    if doc.get("version") != 1:
        raise PolicyError("unsupported policy version %r" % (doc.get("version"),))
    spec = doc["kinds"].get(kind)
    if spec is None:
        raise PolicyError("no policy for kind %r" % (kind,), kind)
    return KindPolicy(kind, spec, doc.get("defaults", {}))


def load(kind, path="/policy.json"):
    """Load the :class:`KindPolicy` of ``kind`` from the flash file ``path``."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise PolicyError("cannot read " + path)
    return parse(text, kind)
