"""[opendata] licence and publisher: what a Link header and the JSON can carry plainly, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError


def _load(tmp_path: Path, licence: str | None = None, publisher: str | None = None):  # type: ignore[no-untyped-def]
    lines = ["[opendata]"]
    if licence is not None:
        lines.append("licence = %s" % json.dumps(licence))  # a JSON string is a TOML basic string
    if publisher is not None:
        lines.append("publisher = %s" % json.dumps(publisher))
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


@pytest.mark.parametrize("licence", [
    "CC-BY-4.0", "CC0-1.0", "ODbL-1.0", "GPL-2.0+", "LicenseRef-city-open-1.0", "x" * 64,
    "https://data.city.example/licence", "http://example.org/l?v=1&x=%20#top",
    "https://example.org/" + "a" * (2048 - len("https://example.org/")),
])
def test_licence_accepted(tmp_path: Path, licence: str) -> None:
    assert _load(tmp_path, licence=licence).open_data_licence == licence


@pytest.mark.parametrize("licence", [
    "CC-BY-4.0\nX-Injected: 1",  # header injection
    "CC BY 4.0",  # space
    "CC-BY-4.0>",
    'CC-"BY"',
    "Lizenz-ä",  # non-ASCII id
    "https://example.org/ä",  # non-ASCII URL
    "https://example.org/a b",
    "https://example.org/<x>",
    "ftp://example.org/licence",
    "javascript:alert(1)",
    "https://",
    "-CC-BY",  # must start with a letter or digit
    "x" * 65,
    "https://example.org/" + "a" * 2049,
    "CC-BY-4.0\x00",
    "x" * 100_000,
])
def test_licence_refused(tmp_path: Path, licence: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, licence=licence)
    assert err.value.reason == "bad_value"
    assert err.value.key == "opendata.licence"
    assert "SPDX licence id" in str(err.value) and "http:// or https:// URL" in str(err.value)
    assert len(str(err.value)) < 600  # a huge value is cut in the message


@pytest.mark.parametrize("publisher", ["City of Example", "Ville de Genève — Open Data", "p" * 200])
def test_publisher_accepted(tmp_path: Path, publisher: str) -> None:
    assert _load(tmp_path, publisher=publisher).open_data_publisher == publisher


@pytest.mark.parametrize("publisher", ["City\x00", "City\x1b[31m", "City\nX: 1", "a\u2028b", "a\u2029b", "tab\there",
                                       "del\x7f", "c1\x85c", "p" * 201])
def test_publisher_refused(tmp_path: Path, publisher: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, publisher=publisher)
    assert err.value.reason == "bad_value"
    assert err.value.key == "opendata.publisher"
    assert "printable text of at most 200 characters" in str(err.value)


def test_defaults_and_empty_are_not_set(tmp_path: Path) -> None:
    cfg = _load(tmp_path, licence="  ", publisher="")
    assert (cfg.open_data_licence, cfg.open_data_publisher) == ("not set", "not set")
