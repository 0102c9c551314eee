"""[opendata] licence and publisher: what a Link header and the JSON can carry plainly, nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
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
    "CC-BY-4.0", "CC0-1.0", "ODbL-1.0", "LicenseRef-city-open-1.0", "LicenseRef-" + "x" * 53,
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


@pytest.mark.parametrize(("licence", "suggestion"), [
    ("CC-BY-4", "CC-BY-4.0"), ("CC-BY-40", "CC-BY-4.0"), ("ODbL", "ODbL-1.0"), ("CC0", "CC0-1.0"),
    ("DL-DE-BY-2", "DL-DE-BY-2.0"), ("Creative-Commons", None), ("x" * 64, None),
])
def test_an_id_the_spdx_list_does_not_have_is_refused(tmp_path: Path, licence: str, suggestion: str | None) -> None:
    """QA: a mistyped licence (CC-BY-4) was published as a dead spdx.org link, the data under no licence."""
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, licence=licence)
    assert (err.value.reason, err.value.key) == ("bad_value", "opendata.licence")
    message = str(err.value)
    assert "is not a licence id of the SPDX License List" in message and "https://spdx.org/licenses/" in message
    assert "LicenseRef-" in message and "URL" in message  # the other ways to name a licence
    if suggestion is not None:
        assert "did you mean %r?" % suggestion in message
    else:
        assert "did you mean" not in message


@pytest.mark.parametrize(("written", "published"), [
    ("cc-by-4.0", "CC-BY-4.0"), ("ODBL-1.0", "ODbL-1.0"), ("licenseref-city-1", "LicenseRef-city-1"),
])
def test_an_id_is_published_in_the_spdx_lists_own_case(tmp_path: Path, written: str, published: str) -> None:
    """spdx.org's pages are case-sensitive: https://spdx.org/licenses/cc-by-4.0.html is no page."""
    assert _load(tmp_path, licence=written).open_data_licence == published


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


# --- warnings: a licence that is valid but likely wrong ------------------------------------------

def test_no_licence_and_a_software_licence_are_warned_about() -> None:
    from gateway.config.licence import OPEN_DATA_LICENCES, licence_warning

    missing = licence_warning("not set")
    assert missing is not None and "legally unusable" in missing and 'licence = "CC-BY-4.0"' in missing
    software = licence_warning("MIT")
    assert software is not None and "not one open-data portals use for data" in software and "'MIT'" in software
    for fine in (*OPEN_DATA_LICENCES, "https://data.city.example/licence"):
        assert licence_warning(fine) is None, fine
    assert licence_warning("LicenseRef-city-1.0", "https://data.city.example/licence") is None


# --- review M3: no dead spdx.org links ---------------------------------------------------------

@pytest.mark.parametrize(("licence", "base"), [("CC-BY-4.0+", "CC-BY-4.0"), ("cc-by-4.0+", "CC-BY-4.0"),
                                               ("ODbL-1.0+", "ODbL-1.0"), ("CC-BY-4+", "CC-BY-4.0")])
def test_an_or_later_id_is_refused_naming_its_base(tmp_path: Path, licence: str, base: str) -> None:
    """Review M3: CC-BY-4.0+ was accepted, linked as .../CC-BY-4.0+.html (no such page) and warned as
    "not one open-data portals use"."""
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, licence=licence)
    assert (err.value.reason, err.value.key) == ("bad_value", "opendata.licence")
    assert "ends in '+'" in str(err.value) and "did you mean %r?" % base in str(err.value)


def _load_urls(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.toml"
    path.write_text("[opendata]\n" + body + "\n")
    return load_config(path)


def test_a_licence_ref_links_only_to_its_licence_url(tmp_path: Path) -> None:
    """Review M3: LicenseRef-city-1.0 (which the loader's own error recommends) was published as
    https://spdx.org/licenses/LicenseRef-city-1.0.html, a page that does not exist."""
    from gateway.config.licence import licence_warning
    from gateway.web.catalogue import OpenDataMeta

    bare = _load_urls(tmp_path, 'licence = "LicenseRef-city-1.0"').open_data
    assert bare.licence_text_url is None and OpenDataMeta.of(bare).licence_url() is None
    warning = licence_warning(bare.licence, bare.licence_text_url)
    assert warning is not None and "licence_url" in warning and "no Link header" in warning
    linked = _load_urls(tmp_path, 'licence = "LicenseRef-city-1.0"\nlicence_url = "https://city.example/l.html"')
    assert OpenDataMeta.of(linked.open_data).licence_url() == "https://city.example/l.html"
    override = _load_urls(tmp_path, 'licence = "CC-BY-4.0"\nlicence_url = "https://city.example/cc-by.html"')
    assert OpenDataMeta.of(override.open_data).licence_url() == "https://city.example/cc-by.html"
    plain = _load_urls(tmp_path, 'licence = "CC-BY-4.0"').open_data
    assert OpenDataMeta.of(plain).licence_url() == "https://spdx.org/licenses/CC-BY-4.0.html"


@pytest.mark.parametrize(("body", "says"), [
    ('licence = "LicenseRef-city-1.0"\nlicence_url = "http://city.example/l"', "https:// URL"),
    ('licence = "LicenseRef-city-1.0"\nlicence_url = "https://city.example/a b"', "https:// URL"),
    ('licence_url = "https://city.example/l"', "opendata.licence is not"),
])
def test_a_bad_licence_url_is_a_clear_config_error(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load_urls(tmp_path, body)
    assert (err.value.reason, err.value.key) == ("bad_value", "opendata.licence_url")
    assert says in str(err.value)


def _civicedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.cli.main", *args], capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path, opendata: str, *, http: bool = True) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "data"\n[http]\nenabled = %s\nport = 0\n%s\n'
                    % ("true" if http else "false", opendata))
    return path


def test_run_check_warns_without_a_licence_and_refuses_a_typo(tmp_path: Path) -> None:
    """QA: `run --check` said nothing of a missing licence, and took CC-BY-4 (no such licence)."""
    done = _civicedge("gateway", "run", "--config", str(_config(tmp_path, "")), "--check")
    assert done.returncode == 0 and "config OK" in done.stdout, done.stderr
    assert "opendata licence: not set" in done.stdout
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert "[opendata] licence is not set" in warning and "legally unusable" in warning
    done = _civicedge("gateway", "run", "--config", str(_config(tmp_path, '[opendata]\nlicence = "CC-BY-4"')),
                      "--check")
    assert done.returncode == 1 and "config OK" not in done.stdout
    assert "error (bad_value) [opendata.licence]" in done.stderr and "did you mean 'CC-BY-4.0'?" in done.stderr
    done = _civicedge("gateway", "run", "--config", str(_config(tmp_path, '[opendata]\nlicence = "cc-by-4.0"')),
                      "--check")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "opendata licence: CC-BY-4.0 (https://spdx.org/licenses/CC-BY-4.0.html)" in done.stdout
    # A gateway that serves no HTTP publishes no open data: nothing to say about a licence.
    done = _civicedge("gateway", "run", "--config", str(_config(tmp_path, "", http=False)), "--check")
    assert done.returncode == 0 and "licence" not in done.stdout + done.stderr


def test_the_gateway_warns_at_start_when_no_licence_is_set(tmp_path: Path) -> None:
    """QA: the start log said nothing while the open data went out under no licence."""
    from procs import GatewayProcess

    gw = GatewayProcess(_config(tmp_path, ""), tmp_path / "gw.log")
    try:
        gw.start()
        gw.wait_log("[opendata] licence is not set")
    finally:
        gw.kill()
    (line,) = [line for line in gw.logs().splitlines() if "[opendata] licence is not set" in line]
    assert "WARNING" in line and "legally unusable" in line


# --- review M4: a refused [opendata] key does not stop `gateway run` -----------------------------

def test_run_loads_a_refused_opendata_key_leniently_and_the_others_strictly(tmp_path: Path) -> None:
    """Review M4: after the upgrade that checks ids against the SPDX list, a config with licence =
    "CC-BY-4" that ran yesterday failed to load, so `gateway run` collected nothing."""
    path = _config(tmp_path, '[opendata]\nlicence = "CC-BY-4"\nlicence_url = "https://city.example/l"\n'
                             'publisher = "City"\ncontact = "not an address"\ntitel = "typo"')
    with pytest.raises(ConfigError) as err:
        load_config(path)  # run --check, and every other command
    assert err.value.key == "opendata.titel"
    od = load_config(path, lenient_opendata=True).open_data
    assert (od.licence, od.licence_text_url, od.publisher, od.contact) == ("not set", None, "City", None)
    keys = [p.split("]")[0] for p in od.problems]
    assert keys == ["error (unknown_key) [opendata.titel", "error (bad_value) [opendata.licence",
                    "error (bad_value) [opendata.contact"], od.problems
    assert "did you mean 'CC-BY-4.0'?" in od.problems[1]
    assert load_config(_config(tmp_path, '[opendata]\nlicence = "CC-BY-4.0"'), lenient_opendata=True).open_data.problems == ()


def _free_port() -> int:
    import socket

    for port in range(49300, 49400):  # this helper's range
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 49300-49399")


def test_run_collects_with_a_refused_licence_and_logs_an_error(tmp_path: Path) -> None:
    """Review M4: `gateway run` logs the refusal as an ERROR, publishes the licence as not set (no
    Link) and keeps running; `run --check` still refuses the same config."""
    import urllib.request

    from procs import GatewayProcess

    port = _free_port()
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "data"\n[http]\nenabled = true\nport = %d\n[opendata]\nlicence = "CC-BY-4"\n'
                    % port)
    done = _civicedge("gateway", "run", "--config", str(path), "--check")
    assert done.returncode == 1 and "error (bad_value) [opendata.licence]" in done.stderr
    gw = GatewayProcess(path, tmp_path / "gw.log")
    try:
        gw.start()
        gw.wait_log("[opendata.licence]")
        with urllib.request.urlopen("http://127.0.0.1:%d/opendata" % port, timeout=10) as resp:
            assert resp.status == 200 and resp.headers.get("Link") is None
            index = json.loads(resp.read())
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as resp:
            metrics = resp.read().decode()
        assert gw.proc is not None and gw.proc.poll() is None  # still running
    finally:
        gw.kill()
    assert (index["license"], index["licenseUrl"]) == ("not set", None)
    (line,) = [line for line in gw.logs().splitlines() if "[opendata.licence]" in line]
    assert "ERROR" in line and "did you mean 'CC-BY-4.0'?" in line and "run --check" in line
    # Review M3: the operator did set a licence; "licence is not set ... set the licence" was wrong.
    assert "licence is not set" not in gw.logs()
    assert "civicedge_config_problems 1.0" in metrics, metrics


# --- the catalogue's keys: title, description, contact, keywords, base_url ----------------------

def _load_toml(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.toml"
    path.write_text("[opendata]\n" + body + "\n")
    return load_config(path)


def test_the_catalogue_keys_are_read_and_all_optional(tmp_path: Path) -> None:
    """QA: the catalogue's title was hard-coded; description, contact, keywords and a public base URL
    could not be configured."""
    cfg = _load_toml(tmp_path, 'title = " Example street sensors "\ndescription = """Streetlights.\n\nAnd bins."""\n'
                               'contact = "opendata@city.example"\nkeywords = ["lighting", " waste "]\n'
                               'base_url = "https://data.city.example/sensors/"')
    od = cfg.open_data
    assert (od.title, od.description, od.contact) == ("Example street sensors", "Streetlights.\n\nAnd bins.",
                                                      "opendata@city.example")
    assert od.keywords == ("lighting", "waste") and od.base_url == "https://data.city.example/sensors"
    assert _load_toml(tmp_path, 'contact = "https://city.example/contact"').open_data.contact == \
        "https://city.example/contact"
    plain = _load_toml(tmp_path, "").open_data
    assert (plain.title, plain.description, plain.contact, plain.keywords, plain.base_url) == (None,) * 5
    assert _load_toml(tmp_path, "keywords = []").open_data.keywords == ()


@pytest.mark.parametrize(("body", "key", "reason", "words"), [
    ("title = 3", "opendata.title", "wrong_type", "must be a string"),
    ('title = "a\\nb"', "opendata.title", "bad_value", "no line breaks"),
    ('title = "%s"' % ("t" * 201), "opendata.title", "bad_value", "at most 200"),
    ('description = "a\\u0000b"', "opendata.description", "bad_value", "printable text"),
    ('contact = "not an address"', "opendata.contact", "bad_value", "e-mail address"),
    ('contact = "mailto:x@y.example"', "opendata.contact", "bad_value", "e-mail address"),
    ('keywords = "lighting"', "opendata.keywords", "wrong_type", "must be an array"),
    ("keywords = [1]", "opendata.keywords", "wrong_type", "array of strings; item 0 is 1"),
    ('keywords = ["a", " "]', "opendata.keywords", "bad_value", "item 1"),
    ('keywords = ["Waste", "waste"]', "opendata.keywords", "bad_value", "twice"),
    ('base_url = "data.city.example"', "opendata.base_url", "bad_value", "absolute http:// or https://"),
    ('base_url = "https://data.city.example/?x=1"', "opendata.base_url", "bad_value", "without /opendata, query"),
    ('base_url = "https://data.city.example/opendata"', "opendata.base_url", "bad_value", "without /opendata"),
    ('base_url = "https://data city.example"', "opendata.base_url", "bad_value", "absolute"),
    ('titel = "x"', "opendata.titel", "unknown_key", "did you mean 'title'?"),
])
def test_a_bad_catalogue_key_is_a_clear_config_error(tmp_path: Path, body: str, key: str, reason: str,
                                                     words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load_toml(tmp_path, body)
    assert (err.value.reason, err.value.key) == (reason, key), str(err.value)
    assert words in str(err.value)
