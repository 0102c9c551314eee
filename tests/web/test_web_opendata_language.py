"""[opendata] language on /opendata and /opendata/catalog.jsonld (i18n QA, LOW): the page stays English
(its own texts) and marks the city's texts with their language; the DCAT-AP catalogue declares its
languages (dct:language, the EU's language authority IRIs); the answers say them in Content-Language.

Over the real aiohttp app and the real SQLite store of the fed fleet (tests/web/conftest.py)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.resources import load_policy
from gateway.web.app import create_app
from gateway.web.catalogue import LANGUAGE_BASE, OpenDataMeta, language_iri

from .support import ADMIN_TOKEN, NOW, Fleet
from .test_web_opendata_page import BROWSER
from .test_web_opendata_publishing import app_client

GERMAN = OpenDataMeta(title="Sensordaten der Stadt Köln", description="Was die Sensoren der Stadt messen.",
                      publisher="Stadt Köln, Amt für Informationsverarbeitung", keywords=("Straßenlaterne", "Müll"),
                      licence="CC-BY-4.0", language="de-DE")
_VOID = frozenset({"meta", "link", "br", "img", "input", "hr"})


class _Langs(HTMLParser):
    """Each text of the page with the language it is in: the nearest ``lang`` of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.html_lang: str | None = None
        self.stack: list[tuple[str, str | None]] = []
        self.texts: list[tuple[str, str]] = []  # (language, text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        lang = dict(attrs).get("lang")
        if tag == "html":
            self.html_lang = lang
        if tag not in _VOID:
            self.stack.append((tag, lang))

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if data.strip():
            lang = next((lang for _tag, lang in reversed(self.stack) if lang is not None), None)
            self.texts.append((lang or "", data.strip()))

    def language_of(self, text: str, *, part: bool = False) -> str:
        """The language of the page's text ``text`` (with ``part``: of the first text containing it)."""
        found = [lang for lang, t in self.texts if (text in t if part else text == t)]
        assert found, (text, self.texts)
        return found[0]


async def _page(client: TestClient) -> tuple[_Langs, str]:
    resp = await client.get("/opendata", headers={"Accept": BROWSER})
    assert resp.status == 200 and resp.content_type == "text/html"
    parsed = _Langs()
    parsed.feed(await resp.text())
    return parsed, resp.headers["Content-Language"]


async def _catalog(client: TestClient) -> tuple[dict[str, Any], str]:
    resp = await client.get("/opendata/catalog.jsonld")
    assert resp.status == 200
    return await resp.json(content_type=None), resp.headers["Content-Language"]


def _languages(node: dict[str, Any]) -> list[str] | None:
    value = node.get("dct:language")
    return None if value is None else [v["@id"] for v in value]


async def test_the_citys_german_texts_are_marked_german_on_an_english_page(fleet: Fleet) -> None:
    async with app_client(fleet, open_data=GERMAN) as client:
        page, content_language = await _page(client)
        index = await (await client.get("/opendata")).json()
        json_language = (await client.get("/opendata")).headers["Content-Language"]
    # The page's own texts stay English (the document's language) ...
    assert page.html_lang == "en"
    for fixed in ("Downloads", "What each field means", "Published by", "Keywords:", "Licence:"):
        assert page.language_of(fixed, part=True) == "en", fixed
    # ... and each text the city wrote is in the city's language.
    assert page.language_of("Sensordaten der Stadt Köln") == "de-DE"
    assert page.language_of("Was die Sensoren der Stadt messen.") == "de-DE"
    assert page.language_of("Stadt Köln, Amt für Informationsverarbeitung") == "de-DE"
    assert page.language_of("Straßenlaterne, Müll") == "de-DE"
    # Both languages are in the answer, the city's first; the JSON index names the city's.
    assert content_language == json_language == "de-DE, en"
    assert index["language"] == "de-DE" and index["keywords"] == ["Straßenlaterne", "Müll"]


async def test_the_dcat_catalogue_declares_the_citys_language_and_english(fleet: Fleet) -> None:
    async with app_client(fleet, open_data=GERMAN) as client:
        catalog, content_language = await _catalog(client)
    expected = ["http://publications.europa.eu/resource/authority/language/DEU",
                "http://publications.europa.eu/resource/authority/language/ENG"]
    assert _languages(catalog) == expected  # the language of its metadata
    assert _languages(catalog["dcat:dataset"][0]) == expected
    assert content_language == "de-DE, en"


async def test_without_the_citys_texts_everything_is_english(fleet: Fleet) -> None:
    """The default language, or a language but no text the city wrote: all texts are the gateway's."""
    for meta in (OpenDataMeta(), OpenDataMeta(language="pl", licence="CC-BY-4.0")):
        async with app_client(fleet, open_data=meta) as client:
            page, content_language = await _page(client)
            catalog, catalog_language = await _catalog(client)
        assert page.html_lang == "en" and {lang for lang, _text in page.texts} == {"en"}, meta
        assert content_language == catalog_language == "en"
        assert _languages(catalog) == _languages(catalog["dcat:dataset"][0]) == [LANGUAGE_BASE + "ENG"]


async def test_only_the_texts_the_city_wrote_are_marked(fleet: Fleet) -> None:
    """A Japanese publisher with the gateway's default title, description and keywords."""
    async with app_client(fleet, open_data=OpenDataMeta(publisher="横浜市", language="ja")) as client:
        page, content_language = await _page(client)
        index = await (await client.get("/opendata")).json()
        catalog, _ = await _catalog(client)
    assert page.language_of("横浜市") == "ja"
    assert page.language_of(index["title"]) == "en" and page.language_of(index["keywords"][0], part=True) == "en"
    assert content_language == "ja, en"
    assert _languages(catalog) == [LANGUAGE_BASE + "JPN", LANGUAGE_BASE + "ENG"]


async def test_a_language_the_eu_table_lacks_gets_no_dct_language_but_is_marked(fleet: Fleet) -> None:
    """DCAT-AP takes only the EU authority's IRIs; an ENG-only list would declare the city's texts English."""
    meta = OpenDataMeta(title="Stadtsensoren Züri", language="gsw-CH")
    async with app_client(fleet, open_data=meta) as client:
        page, content_language = await _page(client)
        catalog, _ = await _catalog(client)
    assert page.language_of("Stadtsensoren Züri") == "gsw-CH" and content_language == "gsw-CH, en"
    assert "dct:language" not in catalog and "dct:language" not in catalog["dcat:dataset"][0]


def test_the_authority_iri_is_of_the_language_subtag() -> None:
    assert language_iri("de") == language_iri("de-AT") == LANGUAGE_BASE + "DEU"
    assert language_iri("zh-Hant-TW") == LANGUAGE_BASE + "ZHO" and language_iri("pt-BR") == LANGUAGE_BASE + "POR"
    assert language_iri("gsw") is None


async def test_an_unknown_language_is_not_taken_for_english(fleet: Fleet) -> None:
    """Review of 5c540cf: a language refused at run (unknown, "") made the city's texts English everywhere."""
    async with app_client(fleet, open_data=OpenDataMeta(title="Sensors de la ciutat", language="")) as client:
        page, content_language = await _page(client)
        index = await (await client.get("/opendata")).json()
        catalog, catalog_language = await _catalog(client)
    assert page.language_of("Sensors de la ciutat") == ""  # lang="": HTML's unknown language
    assert content_language == catalog_language == "en"  # the gateway's own texts only
    assert "dct:language" not in catalog and "dct:language" not in catalog["dcat:dataset"][0]
    assert index["language"] is None


async def test_empty_keywords_are_no_text_of_the_city(fleet: Fleet) -> None:
    async with app_client(fleet, open_data=OpenDataMeta(keywords=(), language="de")) as client:
        _page_langs, content_language = await _page(client)
        catalog, _ = await _catalog(client)
    assert content_language == "en" and _languages(catalog) == [LANGUAGE_BASE + "ENG"]



# The catalogue's URLs are absolute (the request's host and port): a revalidation is only a 304 when the
# gateway answers on the port it answered on before, as a restarted gateway does. In the helper's range.
PORT = 18231


def _on_port(fleet: Fleet, meta: OpenDataMeta) -> TestClient:
    app = create_app(store=fleet.queries, registry=fleet.registry, policy=load_policy(),
                     metrics_registry=fleet.metrics.registry, admin_token=ADMIN_TOKEN, retention=fleet.retention,
                     clock=lambda: float(NOW), open_data=meta)
    return TestClient(TestServer(app, host="127.0.0.1", port=PORT))


async def _get(fleet: Fleet, meta: OpenDataMeta, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
    """(status, ETag, Content-Language) of ``path`` from the gateway run with ``meta`` (a restart)."""
    async with _on_port(fleet, meta) as client:
        resp = await client.get(path, headers=headers)
        await resp.read()
        return resp.status, resp.headers["ETag"], resp.headers["Content-Language"]


async def test_a_changed_language_is_not_a_304_where_the_body_does_not_show_it(fleet: Fleet) -> None:
    """de-DE and de-AT are one dct:language IRI (DEU), so the DCAT catalogue's body is the same: its ETag
    hashed only the body, and a cache that had the de-DE catalogue got a 304 after the change to de-AT
    and kept "Content-Language: de-DE, en"."""
    austrian = OpenDataMeta(**{**GERMAN.__dict__, "language": "de-AT"})
    for path, accept in (("/opendata/catalog.jsonld", {}), ("/opendata", {"Accept": BROWSER}), ("/opendata", {})):
        status, etag, language = await _get(fleet, GERMAN, path, accept)
        assert (status, language) == (200, "de-DE, en"), path
        # the same configuration revalidates ...
        assert (await _get(fleet, GERMAN, path, {**accept, "If-None-Match": etag}))[0] == 304, path
        # ... the changed language does not
        status, new_etag, language = await _get(fleet, austrian, path, {**accept, "If-None-Match": etag})
        assert (status, language) == (200, "de-AT, en") and new_etag != etag, path
