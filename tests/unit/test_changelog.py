"""CHANGELOG.md keeps in step with the code: its newest release is the version being built, and it names
the store schema and wire protocol versions this code writes. An upgrade drill found every release
called 0.1.0 (pip kept the old one installed) and no word of a one-way store migration."""

from __future__ import annotations

import re
from pathlib import Path

import gateway
from gateway.protocol.frame import VERSION as PROTOCOL_VERSION
from gateway.storage.schema import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]
HEADING = re.compile(r"^## (\d+\.\d+\.\d+) — (\d{4}-\d{2}-\d{2})$", re.M)


def releases() -> list[tuple[str, str, str]]:
    """(version, date, text) of each release in CHANGELOG.md, newest first."""
    text = (REPO / "CHANGELOG.md").read_text()
    heads = list(HEADING.finditer(text))
    return [(h[1], h[2], text[h.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)])
            for i, h in enumerate(heads)]


def test_the_newest_release_is_the_version_being_built() -> None:
    found = releases()
    assert found, "CHANGELOG.md has no '## X.Y.Z — YYYY-MM-DD' heading"
    assert found[0][0] == gateway.__version__, (
        "gateway.__version__ is %s but CHANGELOG.md's newest release is %s: add its entry" % (gateway.__version__,
                                                                                              found[0][0]))
    versions = [tuple(map(int, v.split("."))) for v, _d, _t in found]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    dates = [d for _v, d, _t in found]
    assert dates == sorted(dates, reverse=True)


def test_the_newest_release_names_the_schema_and_protocol_this_code_writes() -> None:
    _version, _date, text = releases()[0]
    assert re.search(r"Store schema %d\b" % SCHEMA_VERSION, text), (
        "the store's SCHEMA_VERSION is %d: a new schema needs a new release entry saying so (and how the "
        "migration goes, docs/upgrading.md)" % SCHEMA_VERSION)
    assert re.search(r"wire protocol %d\b" % PROTOCOL_VERSION, text), (
        "the wire protocol VERSION is %d: a new protocol needs a new release entry saying so" % PROTOCOL_VERSION)
    assert 'firmware `fw` "%s"' % gateway.__version__ in text


def test_a_schema_or_protocol_change_comes_with_a_new_version() -> None:
    """Two releases never claim different schema or protocol versions under one version number, and a
    release with a newer schema than the one before says how to upgrade."""
    found = releases()
    for (newer, _d, new_text), (older, _d2, old_text) in zip(found, found[1:]):
        new_schema = int(re.search(r"Store schema (\d+)", new_text)[1])  # type: ignore[index]
        old_schema = int(re.search(r"Store schema (\d+)", old_text)[1])  # type: ignore[index]
        assert new_schema >= old_schema, (newer, older)
        if new_schema > old_schema:
            assert "Upgrading from %s" % older in new_text, (
                "%s migrates the store (schema %d -> %d): its entry needs an 'Upgrading from %s' part"
                % (newer, old_schema, new_schema, older))
