"""How a field of the privacy policy may leave a device: its ``release`` and its ``personal`` flag.

The one gateway-side check of the rule (docs/privacy.md, "Release and personal"): every field has a
``release`` the firmware and the transparency page know (:data:`RELEASES`) and a boolean ``personal``,
and a field is people-related (``personal: true``) exactly when it is released as a noisy count. A
people count marked ``"release": "noisy-count"`` (a typo) or ``"aggregate"`` (copied from another
field) would otherwise pass every check that looks for ``noisy_count`` and be published raw.

:func:`gateway.resources.load_policy` applies it to the file everything reads, and
:class:`gateway.pipeline.verify.PolicyGate` to any policy it is given; the firmware applies the same
rule to its own kind at boot (``civic.policy``), and the flash tools before writing a board's copy.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping

from gateway.errors import ConfigError

NOISY_COUNT = "noisy_count"
"""The release of a people-related field: a noisy count with a privacy budget (docs/privacy.md §2-4)."""
RELEASES = ("aggregate", NOISY_COUNT)
"""Every release value the firmware (``civic.policy._RELEASES``) and the transparency page know."""


def policy_error(key: str, message: str, source: Path | None = None) -> ConfigError:
    """A ``bad_value`` ConfigError about the policy value at ``key`` (dotted), read from ``source`` (the file,
    named in the message as the config loader names its file; None for a policy built in memory)."""
    where = "%s: " % source if source is not None else ""
    return ConfigError("privacy policy: %s%s" % (where, message), reason="bad_value", key=key, path=source)


def _error(where: str, message: str, source: Path | None = None) -> ConfigError:
    return policy_error(where, "%s: %s" % (where, message), source)


def check_field_release(kind: str, name: str, field: Mapping[str, Any], *, source: Path | None = None) -> None:
    """Refuse a field whose ``release`` is unknown or does not match its ``personal`` flag.

    Args:
        kind: the device kind (``streetlight``).
        name: the field (``mot``).
        field: its policy spec.
        source: the policy file, named in the error (None: a policy built in memory).

    Raises:
        ConfigError: ``release`` is missing or not one of :data:`RELEASES` (with a did-you-mean);
            ``personal`` is missing or not a boolean; ``personal: true`` without ``noisy_count``, or
            ``noisy_count`` without ``personal: true``. ``key`` is the offending key's dotted path.
    """
    where = "kinds.%s.fields.%s" % (kind, name)
    release = field.get("release")
    if release not in RELEASES:
        near = difflib.get_close_matches(release, RELEASES, n=1, cutoff=0.6) if isinstance(release, str) else []
        hint = "did you mean %r? " % near[0] if near else ""
        what = ("has no release" if "release" not in field
                else "has release %r, which is not a known release" % (release,))
        raise _error(where + ".release", "field %s of kind %s %s (%sallowed: %s)"
                     % (name, kind, what, hint, ", ".join(RELEASES)), source)
    personal = field.get("personal")
    if type(personal) is not bool:
        what = "has no personal flag" if "personal" not in field else "has personal %r" % (personal,)
        raise _error(where + ".personal", "field %s of kind %s %s: it must be true (people-related, released "
                     "only as a noisy count) or false" % (name, kind, what), source)
    if personal and release != NOISY_COUNT:
        raise _error(where + ".release", "field %s of kind %s is a people-related field (personal: true), so its "
                     "release must be %s, not %r: anything else would publish the people count as it is"
                     % (name, kind, NOISY_COUNT, release), source)
    if not personal and release == NOISY_COUNT:
        raise _error(where + ".personal", "field %s of kind %s has release %s but personal: false: a noisy count is "
                     "only for a people-related field; mark it personal: true, or release it as an aggregate"
                     % (name, kind, NOISY_COUNT), source)


def check_release_rules(policy: Mapping[str, Any], *, source: Path | None = None) -> None:
    """Apply :func:`check_field_release` to every field of every kind of ``policy`` (read from ``source``).

    Raises:
        ConfigError: a field breaks the rule, or ``kinds`` / a kind's ``fields`` is not an object of
            objects (nothing could be checked).
    """
    kinds = policy.get("kinds")
    if not isinstance(kinds, dict) or not kinds:
        raise _error("kinds", "the policy has no kinds (an object of kind -> its fields)", source)
    for kind, spec in kinds.items():
        if not isinstance(spec, dict):
            raise _error("kinds.%s" % kind, "kind %s is not an object" % kind, source)
        fields = spec.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise _error("kinds.%s.fields" % kind, "kind %s has no fields (an object of field -> its spec)" % kind,
                         source)
        for name, field in fields.items():
            if not isinstance(field, dict):
                raise _error("kinds.%s.fields.%s" % (kind, name),
                             "field %s of kind %s is not an object" % (name, kind), source)
            check_field_release(kind, name, field, source=source)


def people_fields(kind_spec: Mapping[str, Any]) -> list[str]:
    """The people-related fields of one kind's policy, sorted: marked ``personal: true`` or released as a
    noisy count (the same fields once :func:`check_release_rules` passed; either alone counts)."""
    fields = kind_spec.get("fields", {})
    return sorted(name for name, f in fields.items()
                  if isinstance(f, dict) and (f.get("personal") is True or f.get("release") == NOISY_COUNT))
