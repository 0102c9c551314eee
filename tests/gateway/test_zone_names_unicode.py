"""Zone names of any script (i18n QA: "Südstadt", "Śródmieście", "中央区" were refused everywhere): one
rule (gateway.registry.zones) for the registry, provisioning identities, ``?zone=`` and scenarios, applied
to the NFC form, so "Su\\u0308dstadt" and "Südstadt" are one zone. The 64 limit counts characters (code
points): no store has a byte bound, so 64 three- or four-byte characters pass."""

from __future__ import annotations

import json
import tomllib
import unicodedata
from pathlib import Path

import pytest

from gateway.errors import RegistryError
from gateway.registry import Registry, validate_device
from gateway.registry.zones import (
    MAX_ZONE_CHARS, compatibility_characters, lookalike_zones, normalize_zone, zone_fold, zone_problem,
)
from gateway.web.errors import BadParameter
from gateway.web.params import parse_zone
from hil.field.errors import IdentityFormatError
from hil.field.identity import new_identity, parse_identity, validate_fields
from hil.scenarios import ScenarioError
from hil.scenarios.loader import parse_scenario

REPO = Path(__file__).resolve().parents[2]
NFC = "Südstadt"
NFD = unicodedata.normalize("NFD", NFC)
RULE = "must be 1..64 characters: letters and digits of any script, space . _ -"


def _check(zone: str) -> None:
    validate_device("sl-1", kind="streetlight", zone=zone, lat="52.1", lon="4.3")


@pytest.mark.parametrize("zone", [NFC, "Śródmieście", "中央区", "Αθήνα-Κέντρο", "Старый город", "الحي القديم",
                                  "मुंबई", "กรุงเทพ", "東京 2-丁目", "zone.٣", "𠀀𠀁"])
def test_names_of_any_script_are_accepted(zone: str) -> None:
    assert zone_problem(zone) is None
    _check(zone)
    validate_fields(device_id="sl-1", kind="streetlight", zone=zone)


@pytest.mark.parametrize("zone", ["centre", "north east", "zone.2", "a..b", "-A1-A1", "z_1", "x" * 64])
def test_the_old_ascii_names_are_still_accepted(zone: str) -> None:
    assert zone_problem(zone) is None
    _check(zone)


@pytest.mark.parametrize(("char", "category", "says"), [
    ("\u0007", "Cc", "is a control character"), ("\n", "Cc", "is a control character"),
    ("\u200b", "Cf", "ZERO WIDTH SPACE is an invisible format character"),
    ("\u202e", "Cf", "RIGHT-TO-LEFT OVERRIDE is an invisible format character"),
    ("\ud800", "Cs", "is a lone surrogate"), ("\ue000", "Co", "is a private-use character"),
    ("\u2028", "Zl", "LINE SEPARATOR is a line separator"),
    ("\u2029", "Zp", "PARAGRAPH SEPARATOR is a paragraph separator"),
])
def test_invisible_and_unstorable_characters_are_refused_by_name(char: str, category: str, says: str) -> None:
    assert unicodedata.category(char) == category
    zone = f"Süd{char}stadt"
    with pytest.raises(RegistryError) as info:
        _check(zone)
    assert info.value.reason == "bad_value" and info.value.field == "zone"
    message = str(info.value)
    assert message.startswith(f"zone {zone!r} {RULE}; U+{ord(char):04X}") and message.endswith(says)
    with pytest.raises(IdentityFormatError, match="U\\+%04X" % ord(char)):
        validate_fields(device_id="sl-1", kind="streetlight", zone=zone)


@pytest.mark.parametrize("zone", ["a/b", "<b>", "a&b", "Süd,stadt", "a\tb", "\u00a0Süd", "a\u3000b", "\u0308a"])
def test_punctuation_other_spaces_and_a_leading_mark_are_refused(zone: str) -> None:
    with pytest.raises(RegistryError, match=RULE):
        _check(zone)


def test_the_old_edge_rules_still_apply_to_unicode_names() -> None:
    for zone, says in ((" Südstadt", "starts or ends with a space"), ("中央区 ", "starts or ends with a space"),
                       ("..", "only dots")):
        with pytest.raises(RegistryError, match=says):
            _check(zone)


def test_64_characters_of_three_and_four_bytes_pass_and_65_do_not() -> None:
    assert MAX_ZONE_CHARS == 64
    for char in ("中", "𠀀"):  # 3 and 4 bytes of UTF-8: the bound is characters, no store counts bytes
        _check(char * 64)
        with pytest.raises(RegistryError, match=RULE + r" \(it has 65\)"):
            _check(char * 65)
    # 64 "ü" are 128 code points in NFD: the bound counts the NFC form the registry stores
    _check(unicodedata.normalize("NFD", "ü" * 64))
    with pytest.raises(RegistryError, match="it has 0"):
        _check("")


def test_nfd_and_nfc_are_one_zone_in_the_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    try:
        assert reg.add("sl-1", kind="streetlight", zone=NFD, lat="52.1", lon="4.3").zone == NFC
        reg.add("sl-2", kind="streetlight", zone=NFC, lat="52.1", lon="4.3")
        assert {r.zone for r in reg.list()} == {NFC}
        # enrolling again with the other form is the same registration, not a move
        assert reg.enroll("sl-1", kind="streetlight", zone=NFC, lat="52.1", lon="4.3",
                          key=reg.key("sl-1")) == "unchanged"
        reg.add("sl-3", kind="streetlight", zone=NFC, lat="52.1", lon="4.3")
        assert reg.enroll("sl-3", kind="streetlight", zone=NFD, lat="52.1", lon="4.3",
                          key=reg.key("sl-3")) == "unchanged"
        rec, changed = reg.move("sl-2", lat="52.1", lon="4.3", zone=NFD)
        assert (rec.zone, changed) == (NFC, False)
        rec, changed = reg.move("sl-2", lat="52.1", lon="4.3", zone=unicodedata.normalize("NFD", "Śródmieście"))
        assert (rec.zone, changed) == ("Śródmieście", True)
    finally:
        reg.close()


def test_identities_hold_the_nfc_zone() -> None:
    ident = new_identity(device_id="sl-1", kind="streetlight", zone=NFD, lat="1.0", lon="2.0")
    assert ident.zone == NFC
    doc = json.loads(ident.to_json_bytes())
    assert doc["zone"] == NFC
    doc["zone"] = NFD  # an /identity.json written by hand in NFD compares equal to the registry's zone
    assert parse_identity(json.dumps(doc).encode()).zone == NFC


def test_the_zone_query_parameter_takes_either_form() -> None:
    known = ["centre", NFC]
    assert parse_zone({"zone": NFD}, known) == NFC
    assert parse_zone({"zone": NFC}, known) == NFC
    with pytest.raises(BadParameter, match="U\\+200B"):
        parse_zone({"zone": "Süd\u200bstadt"}, known)
    with pytest.raises(BadParameter, match="unknown zone 'Nordstadt'"):
        parse_zone({"zone": "Nordstadt"}, known)


def test_a_scenario_zone_is_stored_nfc_and_checked_by_the_same_rule() -> None:
    doc = tomllib.loads('name = "z"\nstart = "2026-11-21T20:00:00Z"\nduration = "20m"\n[[boards]]\n'
                        'board = "streetlight-esp32"\nids = ["sl-z-1"]\nlink = "uart"\n[expect]\nreports_min = 1\n')
    doc["boards"][0]["zone"] = NFD
    assert parse_scenario(doc, base=REPO).boards[0].zone == NFC
    doc["boards"][0]["zone"] = "Süd\u200bstadt"
    with pytest.raises(ScenarioError, match="zone: .*U\\+200B"):
        parse_scenario(doc, base=REPO)


def test_normalize_zone_keeps_a_lone_surrogate_for_the_rule_to_refuse() -> None:
    assert normalize_zone("a\ud800") == "a\ud800"
    assert zone_problem("a\ud800") is not None


@pytest.mark.parametrize("zone", ["\u3164", "centre\ufe0f", "centre\u034f", "\uffa0x", "ab\u180bc", "x\U000e0100"])
def test_invisible_letters_and_marks_are_refused(zone: str) -> None:
    """Review of f2bff90: Hangul fillers are letters and variation selectors marks: a blank zone, or a second
    'centre' beside the real one, split aggregates and open data between zones that look the same."""
    problem = zone_problem(normalize_zone(zone))
    assert problem is not None and problem.startswith(RULE) and "is invisible" in problem


def test_stacked_combining_marks_are_bounded() -> None:
    assert zone_problem("e" + "\u0301\u0302\u0303" * 2) is None  # a few marks: scripts need them
    problem = zone_problem("a" + "\u0301" * 9)
    assert problem is not None and "more than 8 combining marks in a row" in problem


def test_the_unknown_zone_hint_folds_case_as_unicode_does() -> None:
    with pytest.raises(BadParameter) as err:
        parse_zone({"zone": "STRASSE"}, ["Straße", "centre"])
    assert "'Straße'?" in str(err.value.message if hasattr(err.value, "message") else err.value)


CYRILLIC_ES = "\u0441"  # looks like Latin "c"


@pytest.mark.parametrize("given,known,hint", [
    # fullwidth C (what an East Asian input method types): NFKC makes it "C", casefold "c"
    ("\uff23entre", ["centre", "north"],
     "(zone names are compared exactly: 'centre'? '\uff23entre' has U+FF23 FULLWIDTH LATIN CAPITAL LETTER C)"),
    # the reverse: the registry holds the fullwidth zone, the hint names it and its odd character
    ("centre", ["\uff23entre"],
     "(zone names are compared exactly: '\uff23entre'? '\uff23entre' has U+FF23 FULLWIDTH LATIN CAPITAL LETTER C)"),
    # a ligature is no case: casefold maps it too, but the hint must not say "case-sensitive"
    ("\ufb01eld", ["field"],
     "(zone names are compared exactly: 'field'? '\ufb01eld' has U+FB01 LATIN SMALL LIGATURE FI)"),
    # all fullwidth, and another case: three characters are named
    ("\uff43\uff45\uff4e\uff54\uff52\uff45", ["Centre"],
     "has U+FF43 FULLWIDTH LATIN SMALL LETTER C, U+FF45 FULLWIDTH LATIN SMALL LETTER E, U+FF4E FULLWIDTH LATIN "
     "SMALL LETTER N and 2 more)"),
    ("Centre", ["centre", "\uff23entre"], "(zone names are case-sensitive: 'centre'?)"),
])
def test_the_unknown_zone_hint_names_a_zone_of_the_same_nfkc_casefold_form(given: str, known: list[str],
                                                                           hint: str) -> None:
    """Look-alike zones stay separate zones (both are accepted); the message for the one that is not known
    names the one that is, and the character that tells them apart (they look the same)."""
    assert zone_problem(given) is None and all(zone_problem(z) is None for z in known)
    with pytest.raises(BadParameter) as err:
        parse_zone({"zone": given}, known)
    message = str(err.value)
    assert f"unknown zone {given!r} (" in message and hint in message, message
    assert message.endswith("; known: %s" % ", ".join(sorted(known))), message


def test_a_cyrillic_look_alike_gets_no_hint_nfkc_keeps_scripts_apart() -> None:
    """"сentre" with a Cyrillic es is another zone too, but NFKC and casefold do not map scripts onto each
    other and the gateway keeps no confusables table: the message lists the known zones without a guess."""
    given = CYRILLIC_ES + "entre"
    assert zone_problem(given) is None and lookalike_zones(given, ["centre"]) == []
    with pytest.raises(BadParameter) as err:
        parse_zone({"zone": given}, ["centre", "north"])
    assert str(err.value).endswith(f"unknown zone {given!r}; known: centre, north"), str(err.value)


def test_zone_fold_is_nfkc_casefold() -> None:
    assert zone_fold("\uff23ENTRE") == zone_fold("centre") == "centre"
    assert zone_fold("STRASSE") == zone_fold("Straße") == "strasse"
    assert zone_fold(CYRILLIC_ES + "entre") != "centre"
    assert compatibility_characters("centre") == [] and compatibility_characters("Straße") == []
