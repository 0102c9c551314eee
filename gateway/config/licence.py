"""The open data's licence (``[opendata] licence``): checked against the SPDX License List.

A licence id is published as a link to its SPDX page (``https://spdx.org/licenses/<id>.html``): a
typo (``CC-BY-4``) would publish a dead link and data under no usable licence, so an id the SPDX
License List does not have is refused when the config is loaded. The list is the copy the
``packaging`` library ships (``packaging.licenses``, SPDX License List 3.27 in packaging 26), which
also gives an id its exact case (``cc-by-4.0`` is ``CC-BY-4.0``). ``LicenseRef-…`` ids (a licence of
the city's own, in SPDX's syntax) and licence URLs are taken as written; SPDX has no page for a
``LicenseRef-`` id, so its link is ``[opendata] licence_url`` (none without it). An id with a trailing
``+`` (SPDX's "or any later version", ``CC-BY-4.0+``) is refused with the base id suggested: SPDX has
no page for it either, and a portal's licence field names one licence.

What is legal but likely a mistake is a warning, said by ``run --check`` and at start
(:func:`licence_warning`): no licence at all (data without one is legally unusable), and a known id
that is no licence open-data portals use for data (``MIT``, ``GPL-3.0-only``: software licences).
"""

from __future__ import annotations

import difflib

NOT_SET = "not set"
LICENCE_REF_PREFIX = "LicenseRef-"
# The licences open-data portals publish data under (SPDX ids). Another valid SPDX id is accepted
# with a warning, never refused: the list says what is usual, not what is allowed.
OPEN_DATA_LICENCES = ("CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "ODbL-1.0", "ODC-By-1.0", "PDDL-1.0", "DL-DE-BY-2.0",
                      "DL-DE-ZERO-2.0", "OGL-UK-3.0", "OGL-Canada-2.0", "etalab-2.0", "NLOD-2.0")
HINT = "docs/open-data.md, \"Licence and publisher\""

try:
    from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
except ImportError:  # packaging before 24.2 has no SPDX list: ids are then checked against the short list only
    canonicalize_license_expression = None  # type: ignore[assignment]
    InvalidLicenseExpression = ValueError  # type: ignore[assignment,misc]


class UnknownLicence(ValueError):
    """An SPDX-style id that is not on the SPDX License List.

    Attributes:
        value: the id as written.
        suggestion: a close open-data licence id (``CC-BY-4.0`` for ``CC-BY-4``; the base id for
            ``CC-BY-4.0+``), or None.
        or_later: the id ends in ``+`` (SPDX's "or any later version").
    """

    def __init__(self, value: str, suggestion: str | None, *, or_later: bool = False) -> None:
        super().__init__(value)
        self.value, self.suggestion, self.or_later = value, suggestion, or_later


def _suggest(value: str) -> str | None:
    by_lower = {lic.lower(): lic for lic in OPEN_DATA_LICENCES}
    near = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[near[0]] if near else None


def spdx_list_available() -> bool:
    """True when the SPDX License List is at hand to check ids against (``packaging`` >= 24.2)."""
    return canonicalize_license_expression is not None


def canonical_licence_id(value: str) -> str:
    """The SPDX id ``value`` names, in the list's exact case (``cc-by-4.0`` -> ``CC-BY-4.0``);
    ``LicenseRef-…`` ids as written.

    Without the SPDX list (``packaging`` before 24.2) nothing is refused: an id of
    :data:`OPEN_DATA_LICENCES` gets its case, any other is returned as written, and
    :func:`licence_warning` says it was not checked.

    Raises:
        UnknownLicence: the SPDX License List has no such id, or the id ends in ``+`` ("or any later
            version": ``suggestion`` is the base id).
    """
    if value.lower().startswith(LICENCE_REF_PREFIX.lower()):
        return LICENCE_REF_PREFIX + value[len(LICENCE_REF_PREFIX):]
    if value.endswith("+"):
        base = value.rstrip("+")
        try:
            suggestion: str | None = canonical_licence_id(base) if base else None
        except UnknownLicence as exc:
            suggestion = exc.suggestion
        raise UnknownLicence(value, suggestion, or_later=True)
    if canonicalize_license_expression is None:
        known = {lic.lower(): lic for lic in OPEN_DATA_LICENCES}
        return known.get(value.lower(), value)
    try:
        canonical = str(canonicalize_license_expression(value))
    except InvalidLicenseExpression:
        raise UnknownLicence(value, _suggest(value)) from None
    if " " in canonical:  # an expression ("MIT OR X"), which the config's id syntax does not let through anyway
        raise UnknownLicence(value, _suggest(value))
    return canonical


def is_url(licence: str) -> bool:
    """True for a licence given as its URL."""
    return licence.startswith(("https://", "http://"))


def licence_warning(licence: str, licence_url: str | None = None) -> str | None:
    """What is likely wrong with a loaded ``[opendata] licence`` (valid, else loading refused it) and
    its ``licence_url``, or None.

    Said by ``run --check`` and logged as a WARNING at every start.
    """
    if licence == NOT_SET:
        return ("[opendata] licence is not set: the open data is published under no licence, and data without one "
                "is legally unusable for anyone else (no one may reuse it); set the licence the city publishes "
                "under, e.g. licence = \"CC-BY-4.0\" (%s)" % HINT)
    if licence.startswith(LICENCE_REF_PREFIX):
        if licence_url is None:
            return ("[opendata] licence %r is the city's own, and SPDX has no page for it: it is published without a "
                    "link to its text (no Link header, no licenseUrl); set [opendata] licence_url to the https URL "
                    "of the licence text (%s)" % (licence, HINT))
        return None
    if is_url(licence):
        return None
    if licence in OPEN_DATA_LICENCES:
        return None
    if not spdx_list_available():
        return ("[opendata] licence %r could not be checked against the SPDX License List (the installed "
                "'packaging' has none; civicedge needs packaging >= 24.2): check it at https://spdx.org/licenses/"
                % licence)
    return ("[opendata] licence %r is an SPDX licence, but not one open-data portals use for data (%s): check that "
            "it is meant (a software licence such as MIT or GPL does not fit data) (%s)"
            % (licence, ", ".join(OPEN_DATA_LICENCES), HINT))
