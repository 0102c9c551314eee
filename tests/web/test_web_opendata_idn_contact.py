"""A contact with an internationalised domain (i18n QA #6) is published as valid ASCII URIs: the index's
contactPoint, DCAT's ``vcard:hasEmail``/``vcard:hasURL`` and the page's link carry the ``xn--`` form the
config loader kept."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import load_config
from gateway.web.opendata import OpenDataMeta

from .support import Fleet
from .test_web_opendata_catalogue import app_client, get_json


def _meta(tmp_path: Path, contact: str) -> OpenDataMeta:
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nid = "gw"\ndata_dir = "data"\n[opendata]\npublisher = "Stadt Köln"\n'
                    'contact = %s\n' % json.dumps(contact), encoding="utf-8")
    return OpenDataMeta.of(load_config(path).open_data)


async def test_an_idn_e_mail_is_published_as_an_ascii_mailto(fleet: Fleet, tmp_path: Path) -> None:
    async with app_client(fleet, _meta(tmp_path, "opendata@stadt-köln.de")) as client:
        index = await get_json(client, "/opendata")
        doc = await get_json(client, "/opendata/catalog.jsonld")
        page = await (await client.get("/opendata", headers={"Accept": "text/html"})).text()
    assert index["contactPoint"] == {"name": "Stadt Köln", "email": "opendata@xn--stadt-kln-67a.de"}
    (dataset,) = doc["dcat:dataset"]
    assert dataset["dcat:contactPoint"]["vcard:hasEmail"] == {"@id": "mailto:opendata@xn--stadt-kln-67a.de"}
    assert 'href="mailto:opendata@xn--stadt-kln-67a.de"' in page


async def test_an_idn_url_is_published_as_an_ascii_url(fleet: Fleet, tmp_path: Path) -> None:
    async with app_client(fleet, _meta(tmp_path, "https://www.stadt-köln.de/bürger")) as client:
        doc = await get_json(client, "/opendata/catalog.jsonld")
    (dataset,) = doc["dcat:dataset"]
    assert dataset["dcat:contactPoint"]["vcard:hasURL"] == {"@id": "https://www.xn--stadt-kln-67a.de/b%C3%BCrger"}
