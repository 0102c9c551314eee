"""[opendata] language (i18n QA, LOW): the BCP 47 tag of the language the city writes its [opendata]
texts in, so the page marks them (lang) and the catalogue declares it (dct:language)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.config.model import OpenDataConfig
from gateway.errors import ConfigError
from gateway.web.catalogue import OpenDataMeta


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(body + "\n", encoding="utf-8")
    return path


def _language(tmp_path: Path, value: str) -> str:
    return load_config(_config(tmp_path, "[opendata]\nlanguage = %s" % json.dumps(value))).open_data.language


def test_the_default_is_english_the_language_of_the_gateways_own_texts(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "[opendata]")).open_data.language == "en"
    assert _language(tmp_path, "  ") == "en"
    assert OpenDataConfig().language == "en"


@pytest.mark.parametrize(("value", "tag"), [
    ("de", "de"), ("de-DE", "de-DE"), ("pl", "pl"), ("ja", "ja"), ("gsw", "gsw"), ("es-419", "es-419"),
    # kept in BCP 47's conventional case: language lower, script title, region upper
    ("DE-de", "de-DE"), ("zh-hant-tw", "zh-Hant-TW"), ("sr-Latn", "sr-Latn"), (" fr-CH ", "fr-CH"),
    # review: RFC 5646's variants, extlangs, extensions and private use (Valencian was refused)
    ("ca-ES-valencia", "ca-ES-valencia"), ("de-CH-1996", "de-CH-1996"), ("zh-yue", "zh-yue"),
    ("en-GB-oxendict", "en-GB-oxendict"), ("de-DE-u-co-phonebk", "de-DE-u-co-phonebk"), ("de-x-Stadt", "de-x-stadt"),
])
def test_a_well_formed_tag_is_accepted_in_its_conventional_case(tmp_path: Path, value: str, tag: str) -> None:
    assert _language(tmp_path, value) == tag


@pytest.mark.parametrize("value", [
    "german", "Deutsch", "d", "de_DE", "de-", "de-DE-x", "de DE", "de-Deutschland", "de-1996-DE", "de-DE-u", "dé", "日本語",
    "en\nX-Injected: 1", "de-DE,en",
])
def test_a_malformed_tag_is_refused_with_one_line_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        _language(tmp_path, value)
    assert (err.value.reason, err.value.key) == ("bad_value", "opendata.language")
    message = str(err.value)
    assert "\n" not in message and "opendata.language" in message and "BCP 47" in message and '"de-DE"' in message


def test_a_language_that_is_not_a_string_is_a_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, "[opendata]\nlanguage = 49"))
    assert (err.value.reason, err.value.key) == ("wrong_type", "opendata.language")


def test_gateway_run_leaves_a_refused_language_unknown_and_reports_it(tmp_path: Path) -> None:
    """Review of 5c540cf: it fell back to "en", declaring the city's German texts English."""
    path = _config(tmp_path, '[opendata]\npublisher = "Stadt Köln"\nlanguage = "Deutsch"')
    od = load_config(path, lenient_opendata=True).open_data
    assert (od.language, od.publisher) == ("", "Stadt Köln")
    assert len(od.problems) == 1 and od.problems[0].startswith("error (bad_value) [opendata.language]")


def test_the_web_layer_publishes_the_loaded_language(tmp_path: Path) -> None:
    od = load_config(_config(tmp_path, '[opendata]\ntitle = "Sensordaten"\nlanguage = "de-AT"')).open_data
    assert OpenDataMeta.of(od).language == "de-AT"
