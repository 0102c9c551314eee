"""Zone names: the one rule every entry point (registry, admin API, CLI, provisioning, scenarios, ``?zone=``) uses.

A zone is a city's own name for an area ("centre", "Südstadt", "Śródmieście", "中央区"). It is stored
in SQLite and shown in JSON, CSV, HTML and query parameters only: never an MQTT topic level, a metric
label, a file path, nor read by the firmware. So any script's letters and digits are allowed, plus
space ``.`` ``_`` ``-``; combining marks too after a letter or digit (Devanagari, Thai and Arabic
names need vowel signs that have no precomposed form). Zones are NFC-normalised first, so
``"Su\\u0308dstadt"`` and ``"Südstadt"`` are one zone, and the 64 limit counts NFC characters (code
points); no store has a byte bound.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

MAX_ZONE_CHARS = 64
ZONE_RULE = f"1..{MAX_ZONE_CHARS} characters: letters and digits of any script, space . _ -"
_PUNCTUATION = frozenset(" ._-")
_MARKS = frozenset({"Mn", "Mc", "Me"})
# Unicode's default-ignorable characters that are letters or marks (DerivedCoreProperties.txt): a zone made of
# them looks blank, or like another zone ("centre" + U+FE0F is a second "centre"). Cf ones are refused below.
_INVISIBLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
              (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
# Combining marks in a row after one letter: a script needs a few (Unicode's stream-safe text allows 30),
# more is "zalgo" text drawn over the lines above and below it.
MAX_MARKS_IN_A_ROW = 8
# Characters an unknown zone's hint names (:func:`unknown_zone_hint`): a fullwidth name has one per letter.
MAX_NAMED_CHARACTERS = 3
# Invisible or unstorable characters named in the message (they never pass: none is alphanumeric).
_REFUSED = {"Cc": "a control character", "Cf": "an invisible format character", "Cs": "a lone surrogate",
            "Co": "a private-use character", "Zl": "a line separator", "Zp": "a paragraph separator"}


def normalize_zone(zone: str) -> str:
    """``zone`` in Unicode NFC (a lone surrogate, which NFC cannot take, is returned unchanged for
    :func:`zone_problem` to refuse)."""
    try:
        return unicodedata.normalize("NFC", zone)
    except UnicodeError:
        return zone


def zone_problem(zone: str) -> str | None:
    """Why ``zone`` (already NFC) is not a valid zone name, or None when it is.

    The reason is the rule (:data:`ZONE_RULE`) and, for a character outside it, which one
    (``U+200B`` and its Unicode name or category). The edge rules (no space at either end, not only
    dots) are the registry's (:func:`gateway.registry.validate_device`).
    """
    if not 1 <= len(zone) <= MAX_ZONE_CHARS:
        return f"must be {ZONE_RULE} (it has {len(zone)})"
    previous_ok = False
    marks = 0
    for ch in zone:
        category = unicodedata.category(ch)
        code = ord(ch)
        if any(low <= code <= high for low, high in _INVISIBLE):
            name = unicodedata.name(ch, "")
            return (f"must be {ZONE_RULE}; U+{code:04X}{' ' + name if name else ''} is invisible (a zone that"
                    " shows as blank or as another zone's name)")
        marks = marks + 1 if category in _MARKS else 0
        if marks > MAX_MARKS_IN_A_ROW:
            return f"must be {ZONE_RULE}; more than {MAX_MARKS_IN_A_ROW} combining marks in a row"
        if ch.isalnum() or ch in _PUNCTUATION or (category in _MARKS and previous_ok):
            previous_ok = ch.isalnum() or category in _MARKS
            continue
        what = _REFUSED.get(category) or ("a combining mark without a letter before it" if category in _MARKS
                                          else "not a letter, digit, space . _ -")
        name = unicodedata.name(ch, "")
        return f"must be {ZONE_RULE}; U+{ord(ch):04X}{' ' + name if name else ''} is {what}"
    return None


def zone_fold(zone: str) -> str:
    """``zone`` compared loosely: NFKC, case-folded, NFKC again (Unicode's NFKC_Casefold, without its removal
    of default-ignorables, which :func:`zone_problem` refuses anyway). Fullwidth ``Ｃentre`` and ``CENTRE`` fold
    to ``centre``; a letter of another script that only looks alike (Cyrillic ``с``) does not: NFKC has no
    mapping between scripts. Only for hints: zones themselves are compared exactly (NFC)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", zone).casefold())


def lookalike_zones(zone: str, known: Iterable[str]) -> list[str]:
    """The zones of ``known`` other than ``zone`` that :func:`zone_fold` makes equal to it (sorted): what an
    unknown zone's message suggests."""
    folded = zone_fold(zone)
    return sorted({z for z in known if z != zone and zone_fold(z) == folded})


def compatibility_characters(zone: str) -> list[str]:
    """The characters of ``zone`` that NFKC replaces (fullwidth letters, ligatures, ...), each as ``U+FF23
    FULLWIDTH LATIN CAPITAL LETTER C``, in order, each once: what tells two zones of one :func:`zone_fold` apart
    when their case does not."""
    found = [ch for ch in dict.fromkeys(zone) if unicodedata.normalize("NFKC", ch) != ch]
    return ["U+%04X%s" % (ord(ch), " " + unicodedata.name(ch) if unicodedata.name(ch, "") else "") for ch in found]


def unknown_zone_hint(zone: str, known: Iterable[str]) -> str:
    """What to add to "unknown zone ``zone``" when a zone of ``known`` differs from it only in case or in a
    compatibility form (:func:`lookalike_zones`): `` (zone names are case-sensitive: 'centre'?)``, or for a
    fullwidth letter `` (zone names are compared exactly: 'centre'? 'Ｃentre' has U+FF23 FULLWIDTH LATIN
    CAPITAL LETTER C)``, naming the character that differs; "" when none does."""
    alike = lookalike_zones(zone, known)
    if not alike:
        return ""
    given_odd = compatibility_characters(zone)
    # Only case (STRASSE finds Straße): casefold maps the ligature "ﬁ" to "fi" too, which is no case.
    same_letters = [z for z in alike if z.casefold() == zone.casefold()
                    and not given_odd and not compatibility_characters(z)]
    if same_letters:
        return f" (zone names are case-sensitive: {same_letters[0]!r}?)"
    match = alike[0]
    # The characters that tell them apart are in the name given (Ｃentre for centre) or in the zone (the reverse).
    odd, holder = (given_odd, zone) if given_odd else (compatibility_characters(match), match)
    more = f" and {len(odd) - MAX_NAMED_CHARACTERS} more" if len(odd) > MAX_NAMED_CHARACTERS else ""
    named = ", ".join(odd[:MAX_NAMED_CHARACTERS])
    return f" (zone names are compared exactly: {match!r}? {holder!r} has {named}{more})"
